//! `fib`: CPU-bound. `?n=` (default 20, max 92) -> `{"n": n, "fib": fib(n)}`,
//! computed with naive exponential recursion on purpose.

use wisp_sdk::{Request, Response, json};

const MAX_N: u64 = 92; // fib(93) overflows u64

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

fn handle(req: Request) -> Response {
    let n = match req.query_param("n") {
        None => 20,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n <= MAX_N => n,
            _ => {
                return Response::error(
                    400,
                    format!("n must be an integer 0..={MAX_N}, got {s:?}"),
                );
            }
        },
    };
    let value = fib(std::hint::black_box(n));
    Response::json(&json!({ "n": n, "fib": value }))
}

wisp_sdk::http_handler!(handle);
