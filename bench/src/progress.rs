//! What every bench binary shares (`wisp-bench` and those in `src/bin/`, each of which
//! includes this file as its `progress` module): progress lines timed from the start, a
//! blocking runner for async load, and milliseconds for reports.
// Each binary uses a subset.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// Seconds since the run started (the first call starts the clock: call it first in `main`).
pub fn elapsed_s() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Progress on stderr, with seconds since start.
pub fn log(msg: &str) {
    eprintln!("[{:7.1}s] {msg}", elapsed_s());
}

/// Runs a future on a fresh current-thread runtime (call from outside any runtime).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("building a tokio runtime").block_on(f)
}

/// Milliseconds of a duration, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
