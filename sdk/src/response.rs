use std::fmt::Display;

use serde::Serialize;

use crate::Headers;

/// An outgoing HTTP response: status, headers and a fully buffered body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with the given status and no headers.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// 200 with `content-type: text/plain`.
    pub fn text(body: impl Into<String>) -> Self {
        Response::new(200)
            .with_header("content-type", "text/plain")
            .with_body(body.into())
    }

    /// 200 with `content-type: application/json` and `value` serialized.
    /// If serialization fails, a 500 JSON error response is returned instead.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => Response::error(500, format!("failed to serialize response: {e}")),
        }
    }

    /// 200 with `content-type: application/octet-stream`.
    pub fn bytes(body: impl Into<Vec<u8>>) -> Self {
        Response::new(200)
            .with_header("content-type", "application/octet-stream")
            .with_body(body)
    }

    /// `status` with JSON body `{"error": "<message>"}`.
    pub fn error(status: u16, message: impl Display) -> Self {
        Response::json(&serde_json::json!({ "error": message.to_string() })).with_status(status)
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Set header `name` to `value`, replacing any existing values of that name.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.set(name, value);
        self
    }

    /// Add a header value, keeping existing values of the same name.
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.append(name, value);
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn into_parts(self) -> (u16, Headers, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

/// Anything a handler may return.
pub trait IntoResponse {
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

/// `text/plain` 200.
impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

/// `text/plain` 200.
impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors() {
        let r = Response::text("hi").with_header("Content-Type", "text/html");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().len(), 1);
        assert_eq!(r.headers().get("content-type"), Some("text/html"));
        assert_eq!(r.body(), b"hi");

        let r = Response::json(&serde_json::json!({"a": 1}));
        assert_eq!(r.body(), br#"{"a":1}"#);
        assert_eq!(r.headers().get("content-type"), Some("application/json"));

        let r = Response::error(400, "nope");
        assert_eq!((r.status(), r.body()), (400, &br#"{"error":"nope"}"#[..]));

        let r: Result<Response, Response> = Err(Response::new(404));
        assert_eq!(r.into_response().status(), 404);
        assert!(Response::new(204).body().is_empty());
    }
}
