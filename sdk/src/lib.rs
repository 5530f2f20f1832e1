//! # wisp-sdk
//!
//! A small guest-side SDK for writing [Wisp](../../README.md) functions in Rust.
//!
//! A Wisp function is a WebAssembly component (target `wasm32-wasip2`) that
//! exports the standard `wasi:http/incoming-handler` interface (WASI 0.2
//! `wasi:http/proxy` world). This crate hides the resource juggling of
//! `wasi:http` behind a plain function:
//!
//! ```ignore
//! use wisp_sdk::{Request, Response};
//!
//! fn handle(req: Request) -> Response {
//!     match req.query_param("name") {
//!         Some(name) => Response::text(format!("Hello, {name}!\n")),
//!         None => Response::text("Hello from Wisp!\n"),
//!     }
//! }
//!
//! wisp_sdk::http_handler!(handle);
//! ```
//!
//! The crate must be built as a `cdylib` for `wasm32-wasip2`; the output
//! `.wasm` file is then a component that any wasi:http host (Wisp, `wasmtime
//! serve`, ...) can run.
//!
//! The handler may return anything implementing [`IntoResponse`]:
//! [`Response`], `String`, `&'static str`, or `Result<A, B>` where both sides
//! implement it (handy for `?`-style early returns of error responses).
//!
//! A panic inside the handler aborts (on wasm the panic strategy is `abort`),
//! i.e. the component traps and the host reports the failure.

mod cloudevent;
mod headers;
mod request;
mod response;
mod serve;

pub use cloudevent::CloudEvent;
pub use headers::Headers;
pub use request::Request;
pub use response::{IntoResponse, Response};

/// Re-exported so that functions can use `wisp_sdk::json!` / `wisp_sdk::Value`
/// without depending on `serde_json` themselves.
pub use serde_json::{Value, json};

/// Implementation details used by [`http_handler!`]. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::serve::serve;
    pub use wasi;
    pub use wasi::exports::http::incoming_handler::Guest;
    pub use wasi::http::types::{IncomingRequest, ResponseOutparam};
}

/// Export a function as this component's `wasi:http/incoming-handler`.
///
/// The argument is a path to a function (or a closure-free `fn` item) of type
/// `fn(Request) -> R` where `R: IntoResponse`. Use it exactly once per crate,
/// at module level:
///
/// ```ignore
/// fn my_fn(req: wisp_sdk::Request) -> wisp_sdk::Response {
///     wisp_sdk::Response::text("hi\n")
/// }
/// wisp_sdk::http_handler!(my_fn);
/// ```
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        const _: () = {
            struct WispHttpHandler;

            impl $crate::__private::Guest for WispHttpHandler {
                fn handle(
                    request: $crate::__private::IncomingRequest,
                    response_out: $crate::__private::ResponseOutparam,
                ) {
                    $crate::__private::serve(request, response_out, $handler)
                }
            }

            $crate::__private::wasi::http::proxy::export!(WispHttpHandler);
        };
    };
}
