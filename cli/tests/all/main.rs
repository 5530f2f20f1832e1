//! End-to-end tests: a real `wisp up` process on an ephemeral port with a temp data dir, real
//! HTTP, real wasmtime, real SQLite, and the example guest functions built for wasm32-wasip2.

mod access;
mod admin;
mod apply_cli;
mod asynchronous;
mod autoscaling;
mod billing;
mod cli;
mod container_fields;
mod containers;
mod export;
mod grants;
mod hardening;
mod harness;
mod isolation;
mod languages;
mod lifecycle;
mod reuse;
mod services;
mod triggers;
mod upgrade;
mod usage;
