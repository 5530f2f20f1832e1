//! `misbehave`: a function that misbehaves on request, for testing the host.
//!
//! `?mode=`
//! - `trap`   — executes `unreachable` (a wasm trap, no panic message)
//! - `panic`  — panics (message on stderr, then trap)
//! - `loop`   — spins forever, never returns
//! - `sleep`  — blocks in the host (a wasi:clocks wait) for `?ms=` (default one hour)
//! - `oom`    — allocates and touches 1 MiB chunks until allocation fails (→ trap)
//! - `log`    — one line to stdout, one to stderr, then 200 "logged\n"
//! - `status` — responds with `?code=` (default 503)
//! - `big`    — 200 with a body of `?bytes=` (default 1 MiB) `x` bytes
//! - `count`  — 200 `count N\n`: requests this instance has served (1 unless reused)
//!
//! Anything else → 400 listing the modes.

use std::hint::black_box;

use wisp_sdk::{Request, Response};

const MODES: &str = "trap, panic, loop, sleep, oom, log, status, big, count";

/// Requests this instance has served in `count` mode: state that only instance reuse keeps.
static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn handle(req: Request) -> Response {
    match req.query_param("mode").as_deref() {
        Some("trap") => trap(),
        Some("panic") => panic!("misbehave: panic requested"),
        Some("loop") => spin(),
        Some("sleep") => match parse_param(&req, "ms", 3_600_000u64) {
            Ok(ms) => {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Response::text("slept\n")
            }
            Err(()) => bad_request("ms must be a non-negative integer"),
        },
        Some("oom") => oom(),
        Some("log") => {
            println!("misbehave: stdout line");
            eprintln!("misbehave: stderr line");
            Response::text("logged\n")
        }
        Some("status") => match parse_param(&req, "code", 503u16) {
            Ok(code) if (100..=999).contains(&code) => Response::text(format!("status {code}\n")).with_status(code),
            _ => bad_request("code must be an integer 100..=999"),
        },
        Some("big") => match parse_param(&req, "bytes", 1usize << 20) {
            Ok(n) => Response::new(200).with_header("content-type", "text/plain").with_body(vec![b'x'; n]),
            Err(()) => bad_request("bytes must be a non-negative integer"),
        },
        Some("count") => {
            let n = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            Response::text(format!("count {n}\n"))
        }
        other => bad_request(&format!("unknown mode {other:?}; use ?mode= one of: {MODES}")),
    }
}

fn parse_param<T: std::str::FromStr>(req: &Request, name: &str, default: T) -> Result<T, ()> {
    match req.query_param(name) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| ()),
    }
}

fn bad_request(msg: &str) -> Response {
    Response::text(format!("{msg}\n")).with_status(400)
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        // black_box keeps the optimizer from proving the loop side-effect free.
        i = black_box(i.wrapping_add(1));
    }
}

fn oom() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Infallible allocation: when the allocator fails, Rust prints
        // "memory allocation of N bytes failed" and aborts (trap).
        let mut chunk = vec![0u8; CHUNK];
        for i in (0..CHUNK).step_by(4096) {
            chunk[i] = 1; // touch every page
        }
        hoard.push(black_box(chunk));
        black_box(&mut hoard);
        if hoard.len().is_multiple_of(64) {
            eprintln!("misbehave: holding {} MiB", hoard.len());
        }
    }
}

wisp_sdk::http_handler!(handle);
