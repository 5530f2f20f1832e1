use std::borrow::Cow;

use serde::de::DeserializeOwned;

use crate::{CloudEvent, Headers};

/// An incoming HTTP request, fully buffered (the body has been read to the end).
#[derive(Clone, Debug, Default)]
pub struct Request {
    method: String,
    path: String,
    query: String,
    authority: Option<String>,
    headers: Headers,
    body: Vec<u8>,
}

impl Request {
    /// Build a request by hand, e.g. to unit-test a handler natively.
    /// `path_with_query` is split at the first `?`.
    pub fn new(method: impl Into<String>, path_with_query: &str) -> Self {
        let (path, query) = split_path_query(path_with_query);
        Request {
            method: method.into(),
            path,
            query,
            ..Default::default()
        }
    }

    /// Append a header (builder style, for tests).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Replace the body (builder style, for tests).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn from_parts(
        method: String,
        path_with_query: Option<&str>,
        authority: Option<String>,
        headers: Headers,
        body: Vec<u8>,
    ) -> Self {
        let (path, query) = split_path_query(path_with_query.unwrap_or("/"));
        Request {
            method,
            path,
            query,
            authority,
            headers,
            body,
        }
    }

    /// The method in upper case as sent, e.g. `"GET"`, `"POST"`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path without the query string, e.g. `"/users/42"` (never empty).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw (still percent-encoded) query string without the `?`, or `""`.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The host/authority of the request, if the host passed one.
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    /// All query parameters, percent-decoded (`+` decodes to a space), in order.
    pub fn query_params(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The first value of query parameter `name`, percent-decoded.
    /// `?flag` yields `Some("")`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// First value of header `name` (case-insensitive) as UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The complete request body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8, replacing invalid sequences with U+FFFD.
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Take ownership of the body.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Deserialize the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The CloudEvent carried by this request in binary content mode
    /// (`ce-*` headers), if `ce-id`, `ce-source`, `ce-specversion` and
    /// `ce-type` are all present.
    pub fn cloud_event(&self) -> Option<CloudEvent> {
        CloudEvent::from_headers(&self.headers)
    }
}

fn split_path_query(pq: &str) -> (String, String) {
    let (path, query) = pq.split_once('?').unwrap_or((pq, ""));
    let path = if path.is_empty() { "/" } else { path };
    (path.to_string(), query.to_string())
}

/// Decode `%XX` escapes and `+` (form encoding) into a UTF-8 string (lossy).
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query() {
        let r = Request::new("GET", "/a/b?x=1&y=hello+w%C3%B6rld&flag&x=2&bad=%zz");
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), "x=1&y=hello+w%C3%B6rld&flag&x=2&bad=%zz");
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.query_param("y").as_deref(), Some("hello wörld"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.query_params().len(), 5);

        let r = Request::new("GET", "");
        assert_eq!((r.path(), r.query()), ("/", ""));
        let r = Request::new("GET", "?a=%4");
        assert_eq!((r.path(), r.query_param("a").as_deref()), ("/", Some("%4")));
    }

    #[test]
    fn headers_and_json() {
        #[derive(serde::Deserialize)]
        struct In {
            a: u32,
        }
        let r = Request::new("POST", "/")
            .with_header("Content-Type", "application/json")
            .with_header("x-multi", "1")
            .with_header("X-Multi", "2")
            .with_body(r#"{"a": 7}"#);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.headers().get_all("x-multi").count(), 2);
        assert_eq!(r.json::<In>().unwrap().a, 7);
        assert!(r.json::<Vec<u8>>().is_err());
        assert_eq!(r.body_text(), r#"{"a": 7}"#);
    }
}
