//! `grants`: shows what the host grants it.
//!
//! - `/env`: its environment, one `KEY=VALUE` a line (sorted);
//! - `/file?path=/etc/passwd`: the file's text, or 403 and the error;
//! - `/tcp?addr=127.0.0.1:8080`: opens a TCP connection, or 403 and the error;
//! - `/fetch?url=http://host:port/path[&body=TEXT]`: an outbound GET (POST with `body`) through
//!   `wasi:http/outgoing-handler`; answers `STATUS\nBODY`, or 502 and the error code.

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;
use wisp_sdk::{Request, Response};

fn grants(req: Request) -> Response {
    match req.path() {
        "/env" => {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}\n")).collect();
            vars.sort();
            Response::text(vars.concat())
        }
        "/file" => match std::fs::read_to_string(req.query_param("path").unwrap_or_default()) {
            Ok(text) => Response::text(text),
            Err(e) => Response::error(403, format!("reading the file: {e}")),
        },
        "/tcp" => match std::net::TcpStream::connect(req.query_param("addr").unwrap_or_default()) {
            Ok(_) => Response::text("connected\n"),
            Err(e) => Response::error(403, format!("connecting: {e}")),
        },
        "/fetch" => {
            let url = req.query_param("url").unwrap_or_default();
            match fetch(&url, req.query_param("body").unwrap_or_default().as_bytes()) {
                Ok((status, body)) => Response::text(format!("{status}\n{}", String::from_utf8_lossy(&body))),
                Err(e) => Response::error(502, format!("fetching {url}: {e}")),
            }
        }
        other => Response::error(404, format!("no route {other} (try /env, /file, /tcp, /fetch)")),
    }
}

/// One outbound request; the response's status and body.
fn fetch(url: &str, payload: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("http", rest)) => (Scheme::Http, rest),
        _ => return Err("the url must start with http:// or https://".into()),
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let headers = if payload.is_empty() {
        Fields::new()
    } else {
        Fields::from_list(&[("content-length".into(), payload.len().to_string().into_bytes())])
            .map_err(|e| format!("{e:?}"))?
    };
    let request = OutgoingRequest::new(headers);
    let method = if payload.is_empty() { Method::Get } else { Method::Post };
    request.set_method(&method).map_err(|()| "method")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;
    let body = request.body().map_err(|()| "request body")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    {
        let stream = body.write().map_err(|()| "request body stream")?;
        for chunk in payload.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("writing the body: {e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending.get().ok_or("no response")?.map_err(|()| "response taken")?.map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "response body")?;
    let mut out = Vec::new();
    {
        let stream = body.stream().map_err(|()| "response body stream")?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the response: {e:?}")),
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok((status, out))
}

wisp_sdk::http_handler!(grants);
