//! The `/v1/` admin API (see docs/admin-api.md): JSON in, JSON out.

use crate::{ApiError, Gateway, Resp, json_response, text_response};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

pub(crate) async fn handle(gateway: &Gateway, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let method = req.method().clone();
    let not_allowed = |allowed| ApiError::MethodNotAllowed { method: method.to_string(), path: path.clone(), allowed };
    let scheduler = &gateway.scheduler;
    match segments.as_slice() {
        ["functions"] => match method {
            Method::GET => Ok(json_response(StatusCode::OK, &serde_json::json!({ "functions": scheduler.list() }))),
            _ => Err(not_allowed("GET")),
        },
        ["functions", name] => match method {
            Method::POST | Method::PUT => deploy(gateway, name, req).await,
            Method::GET => Ok(json_response(StatusCode::OK, &scheduler.describe(name)?)),
            Method::DELETE => {
                scheduler.delete(name).await?;
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": name })))
            }
            _ => Err(not_allowed("GET, POST, PUT, DELETE")),
        },
        ["functions", name, "logs"] => match method {
            Method::GET => Ok(text_response(StatusCode::OK, "text/plain; charset=utf-8", scheduler.logs(name)?)),
            _ => Err(not_allowed("GET")),
        },
        ["usage"] => match method {
            Method::GET => {
                let params = query_pairs(&req);
                let mut function = None;
                let mut limit = 100;
                for (k, v) in params {
                    match k.as_str() {
                        "function" => function = Some(v),
                        "limit" => {
                            limit = v.parse().map_err(|_| ApiError::BadRequest(format!("limit: {v:?} is not a number")))?
                        }
                        other => return Err(ApiError::BadRequest(format!("unknown query parameter `{other}`"))),
                    }
                }
                Ok(json_response(StatusCode::OK, &scheduler.usage(function, limit).await?))
            }
            _ => Err(not_allowed("GET")),
        },
        _ => Err(ApiError::NoRoute(path.clone())),
    }
}

async fn deploy(gateway: &Gateway, name: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let limit = gateway.config.max_component_bytes;
    let params = query_pairs(&req);
    let too_large = ApiError::BodyTooLarge { what: "component upload", limit };
    let declared = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large);
    }
    // The upload is read (within its limit) before any answer, so clients still sending it
    // get the error instead of a broken pipe; the scheduler validates before compiling.
    let bytes = match Limited::new(req.into_body(), limit as usize).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(too_large),
        Err(e) => return Err(ApiError::BadRequest(format!("reading the upload: {e}"))),
    };
    let view = gateway.scheduler.deploy(name, &params, bytes).await?;
    Ok(json_response(StatusCode::CREATED, &view))
}

fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}
