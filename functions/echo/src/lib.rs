//! `echo`: reflects the request back as JSON:
//! `{"method", "path", "query", "headers": {name: value}, "body", "body_len"}`.
//! Repeated headers are joined with ", ".

use std::collections::BTreeMap;

use wisp_sdk::{Request, Response, json};

fn echo(req: Request) -> Response {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers().iter() {
        let value = String::from_utf8_lossy(value);
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    Response::json(&json!({
        "method": req.method(),
        "path": req.path(),
        "query": req.query(),
        "headers": headers,
        "body": req.body_text(),
        "body_len": req.body().len(),
    }))
}

wisp_sdk::http_handler!(echo);
