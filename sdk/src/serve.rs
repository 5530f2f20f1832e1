//! Glue between `wasi:http` resources and the buffered [`Request`]/[`Response`].

use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

use crate::{Headers, IntoResponse, Request, Response};

/// Largest chunk passed to one `blocking-write-and-flush` (the wasi:io limit).
const WRITE_CHUNK: usize = 4096;
/// How much to ask for per `blocking-read` of the request body.
const READ_CHUNK: u64 = 64 * 1024;

/// Run `handler` for one `wasi:http/incoming-handler.handle` call.
pub fn serve<F, R>(request: IncomingRequest, response_out: ResponseOutparam, handler: F)
where
    F: FnOnce(Request) -> R,
    R: IntoResponse,
{
    let response = match read_request(&request) {
        Ok(req) => {
            drop(request);
            handler(req).into_response()
        }
        Err(msg) => Response::error(400, msg),
    };
    write_response(response, response_out);
}

fn read_request(request: &IncomingRequest) -> Result<Request, String> {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(m) => m,
    };
    let path_with_query = request.path_with_query();
    let authority = request.authority();
    // `headers()` returns an immutable child resource; drop it before the
    // request (wasi resources must be dropped child-first).
    let headers = {
        let fields = request.headers();
        Headers::from(fields.entries())
    };
    let body = read_body(request)?;
    Ok(Request::from_parts(
        method,
        path_with_query.as_deref(),
        authority,
        headers,
        body,
    ))
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let Ok(body) = request.consume() else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "request body stream unavailable".to_string())?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!(
                        "failed to read request body: {}",
                        e.to_debug_string()
                    ));
                }
            }
        }
        // `stream` (a child of `body`) is dropped here, before `finish`.
    }
    drop(IncomingBody::finish(body));
    Ok(buf)
}

fn write_response(response: Response, response_out: ResponseOutparam) {
    let (status, headers, body) = response.into_parts();

    let fields = Fields::new();
    for (name, value) in headers.iter() {
        if let Err(e) = fields.append(name, value) {
            eprintln!("wisp-sdk: dropping response header {name:?}: {e:?}");
        }
    }
    let resp = OutgoingResponse::new(fields);
    if resp.set_status_code(status).is_err() {
        eprintln!("wisp-sdk: invalid status code {status}, sending 500");
        let _ = resp.set_status_code(500);
    }
    let out_body = resp.body().expect("outgoing-response.body called once");
    ResponseOutparam::set(response_out, Ok(resp));

    {
        let stream = out_body.write().expect("outgoing-body.write called once");
        for chunk in body.chunks(WRITE_CHUNK) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                // Usually: the client went away. Nothing useful left to do.
                eprintln!("wisp-sdk: writing response body failed: {e:?}");
                break;
            }
        }
        // `stream` (a child of `out_body`) is dropped before `finish`.
    }
    if let Err(e) = OutgoingBody::finish(out_body, None) {
        eprintln!("wisp-sdk: finishing response body failed: {e:?}");
    }
}
