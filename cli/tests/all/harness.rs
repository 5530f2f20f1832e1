//! The cli tests' view of wisp-testkit: the same helpers, with this crate's `wisp` binary.

use std::path::Path;
pub use wisp_testkit::{Node, Resp, functions_dir, request, tempdir, wasm};

pub fn wisp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wisp")
}

/// `Node::start(data_dir, extra)`: `wisp up` from this crate, scaler ticking every 100 ms.
pub trait StartNode {
    fn start(data_dir: &Path, extra: &[&str]) -> Node;
}

impl StartNode for Node {
    fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let args: Vec<&str> = ["--scale-interval", "100ms"].into_iter().chain(extra.iter().copied()).collect();
        Node::start_with(wisp_bin(), data_dir, &args)
    }
}
