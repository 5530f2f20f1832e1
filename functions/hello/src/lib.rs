//! `hello`: 200 text/plain "Hello from Wisp!\n".

use wisp_sdk::{Request, Response};

fn hello(_req: Request) -> Response {
    Response::text("Hello from Wisp!\n")
}

wisp_sdk::http_handler!(hello);
