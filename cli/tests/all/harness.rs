//! The cli tests' view of wisp-testkit: the same helpers, with this crate's `wisp` binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
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

/// A raw TCP connection to the node, for requests no HTTP client would send. Reads give up
/// after 15 s, far longer than any answer the tests wait for.
pub fn connect(node: &Node) -> TcpStream {
    let stream = TcpStream::connect(node.url.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream
}

/// Reads until the node closes the connection (or the read timeout); returns what came.
pub fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Sends raw bytes on a new connection and returns everything the node answers before closing.
pub fn raw_http(node: &Node, request: &[u8]) -> String {
    let mut stream = connect(node);
    stream.write_all(request).unwrap();
    read_until_closed(&mut stream)
}
