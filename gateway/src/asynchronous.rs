//! Async invocations at the front door: `POST /async/fn/{name}/...`, or any `/fn/...` request
//! with `Prefer: respond-async` (RFC 7240). The request is read within the function's body
//! limit, stored durably, and answered `202 Accepted` with its id; `GET /v1/invocations/{id}`
//! reports its state and result, and `X-Callback-Url` receives the function's response.

use crate::{ApiError, Body, Gateway, Resp, json_response};
use http::{Request, StatusCode};
use wisp_scheduler::{BodyError, read_within};

/// Whether the client asked for an asynchronous answer.
pub(crate) fn wants_async(req: &Request<Body>) -> bool {
    req.headers()
        .get_all("prefer")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("respond-async"))))
}

pub(crate) async fn submit(gateway: &Gateway, rest: &str, req: Request<Body>) -> Result<Resp, ApiError> {
    let (mut parts, body) = req.into_parts();
    let (name, uri) = crate::function_uri(gateway, &parts.uri, rest)?;
    if let Err(refused) = crate::auth::check_invoke(gateway, &mut parts.headers, &name) {
        return Err(crate::auth::refuse(refused, body).await);
    }
    let Some(settings) = gateway.scheduler.settings(&name) else {
        return Err(wisp_scheduler::InvokeError::NotFound(name).into());
    };
    let limit = settings.max_request_body_bytes;
    let body = match read_within(&parts.headers, body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge { limit }) => {
            return Err(ApiError::BodyTooLarge { what: "request body", limit, flag: "max_request_body_bytes" });
        }
        Err(e) => return Err(ApiError::BadRequest(format!("reading the request body: {e}"))),
    };
    let callback = match parts.headers.get("x-callback-url") {
        Some(v) => Some(v.to_str().map_err(|_| ApiError::BadRequest("X-Callback-Url is not text".into()))?.to_string()),
        None => None,
    };
    parts.uri = uri;
    let id = gateway.invocations.submit(&name, &parts, body, callback).await?;
    let status_url = format!("/v1/invocations/{id}");
    let mut response = json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "id": id, "function": name, "status_url": status_url }),
    );
    let headers = response.headers_mut();
    headers.insert(http::header::LOCATION, status_url.parse().expect("ids are header-safe"));
    headers.insert("x-call-id", id.parse().expect("ids are header-safe"));
    Ok(response)
}
