//! The `/v1/` admin API (see docs/admin-api.md): JSON in, JSON out. Not subject to the function
//! concurrency limit, so it keeps answering while functions are saturated.

use crate::{ApiError, Body, Gateway, Resp, auth, json_response, kind_status, text_response};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use wisp_access::{Action, Role, Scope, TokenInfo};
use wisp_manifest::Object;
use wisp_scheduler::{
    BodyError, DEFAULT_NAMESPACE, GroupBy, Period, UsageQuery, function_id, parse_time, read_within, split_id,
};

/// Most usage records one query returns.
const MAX_USAGE_RECORDS: u32 = 10_000;
/// After refusing an oversized upload, read (and discard) up to this much of the rest so a
/// client that writes its whole body before reading gets the 413 instead of a broken pipe;
/// past it, or when the client pauses (it is waiting for our answer), we answer.
const DRAIN_LIMIT: u64 = 256 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);
const DRAIN_PAUSE: Duration = Duration::from_secs(1);

pub(crate) async fn handle(gateway: &Gateway, mut req: Request<Body>) -> Result<Resp, ApiError> {
    // Before anything is read or changed: a refused request has no effect.
    let caller = match auth::authorize(gateway, &mut req) {
        Ok(caller) => caller,
        Err(refused) => return Err(auth::refuse(refused, req.into_body()).await),
    };
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let method = req.method().clone();
    let not_allowed = |allowed| ApiError::MethodNotAllowed { method: method.to_string(), path: path.clone(), allowed };
    let scheduler = &gateway.scheduler;
    match segments.as_slice() {
        ["functions"] => match method {
            Method::GET => {
                let mut functions = scheduler.list();
                functions.retain(|f| auth::sees(&caller, split_id(&f.name).0));
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "functions": functions })))
            }
            _ => Err(not_allowed("GET")),
        },
        ["functions", name] => {
            let id = namespaced(&req, name);
            match method {
                Method::POST | Method::PUT => deploy(gateway, &id, req).await,
                Method::GET => Ok(json_response(StatusCode::OK, &scheduler.describe(&id).await?)),
                Method::DELETE => {
                    scheduler.delete(&id).await?;
                    Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": id })))
                }
                _ => Err(not_allowed("GET, POST, PUT, DELETE")),
            }
        }
        ["functions", name, "logs"] => match method {
            Method::GET => {
                let id = namespaced(&req, name);
                Ok(text_response(StatusCode::OK, "text/plain; charset=utf-8", scheduler.logs(&id)?))
            }
            _ => Err(not_allowed("GET")),
        },
        ["apply"] => match method {
            Method::POST => apply(gateway, &caller, req).await,
            _ => Err(not_allowed("POST")),
        },
        ["services"] => match method {
            Method::GET => {
                let mut services = scheduler.services();
                services.retain(|s| auth::sees(&caller, &s.spec.namespace));
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "services": services })))
            }
            _ => Err(not_allowed("GET")),
        },
        ["services", namespace, name] => {
            let id = function_id(namespace, name);
            match method {
                Method::GET => Ok(json_response(StatusCode::OK, &scheduler.get_service(&id)?)),
                Method::DELETE => {
                    scheduler.delete(&id).await?;
                    Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": id })))
                }
                _ => Err(not_allowed("GET, DELETE")),
            }
        }
        ["artifacts"] => match method {
            Method::GET => {
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "artifacts": scheduler.artifacts().await? })))
            }
            _ => Err(not_allowed("GET")),
        },
        ["artifacts", name, tag] => match method {
            Method::PUT | Method::POST => {
                let bytes = read_upload(gateway, req).await?;
                Ok(json_response(StatusCode::CREATED, &scheduler.push(name, tag, bytes).await?))
            }
            _ => Err(not_allowed("PUT, POST")),
        },
        ["images"] => match method {
            Method::GET => {
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "images": scheduler.artifacts().await? })))
            }
            Method::POST => import_image(gateway, req).await,
            _ => Err(not_allowed("GET, POST")),
        },
        ["images", name, tag] => match method {
            Method::DELETE => {
                if !scheduler.remove_image(name, tag).await? {
                    return Err(ApiError::NotFound(format!("no image tagged {name}:{tag}")));
                }
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": format!("{name}:{tag}") })))
            }
            _ => Err(not_allowed("DELETE")),
        },
        ["triggers"] => match method {
            Method::GET => {
                let mut triggers = gateway.triggers.list();
                triggers.retain(|t| auth::sees(&caller, split_id(&t.spec.function).0));
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "triggers": triggers })))
            }
            Method::POST => {
                let spec: wisp_triggers::TriggerSpec = read_json(gateway, req).await?;
                auth::confine(&caller, Action::Write, Some(split_id(&spec.function).0))?;
                Ok(json_response(StatusCode::CREATED, &gateway.triggers.create(spec).await?))
            }
            _ => Err(not_allowed("GET, POST")),
        },
        ["triggers", name] => match method {
            Method::GET => {
                let trigger = gateway.triggers.describe(name)?;
                auth::confine(&caller, Action::Read, Some(split_id(&trigger.spec.function).0))?;
                Ok(json_response(StatusCode::OK, &trigger))
            }
            Method::DELETE => {
                let function = gateway.triggers.describe(name)?.spec.function;
                auth::confine(&caller, Action::Write, Some(split_id(&function).0))?;
                gateway.triggers.delete(name).await?;
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": name })))
            }
            _ => Err(not_allowed("GET, DELETE")),
        },
        ["invocations", id] => match method {
            Method::GET => {
                let invocation = gateway.invocations.get(id).await?;
                auth::confine(&caller, Action::Read, Some(split_id(&invocation.function).0))?;
                Ok(json_response(StatusCode::OK, &invocation))
            }
            _ => Err(not_allowed("GET")),
        },
        ["secrets"] => match method {
            Method::GET => {
                let namespace = query_pairs(&req).into_iter().find(|(k, _)| k == "namespace").map(|(_, v)| v);
                let mut secrets = scheduler.secrets(namespace.as_deref());
                secrets.retain(|s| auth::sees(&caller, &s.namespace));
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "secrets": secrets })))
            }
            _ => Err(not_allowed("GET")),
        },
        ["secrets", name] => {
            let id = namespaced(&req, name);
            let (namespace, name) = split_id(&id);
            match method {
                Method::PUT => put_secret(gateway, namespace, name, req).await,
                Method::DELETE => {
                    scheduler.delete_secret(namespace, name).await?;
                    Ok(json_response(StatusCode::OK, &serde_json::json!({ "deleted": name, "namespace": namespace })))
                }
                _ => Err(not_allowed("PUT, DELETE")),
            }
        }
        ["usage"] => match method {
            Method::GET => Ok(json_response(StatusCode::OK, &scheduler.usage(usage_query(&req)?).await?)),
            _ => Err(not_allowed("GET")),
        },
        ["usage", "prune"] => match method {
            Method::POST => {
                let pruned = scheduler.prune_usage().await;
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "pruned": pruned })))
            }
            _ => Err(not_allowed("POST")),
        },
        ["bill"] => match method {
            Method::GET => {
                let (period, namespace) = bill_query(&req)?;
                Ok(json_response(StatusCode::OK, &scheduler.bill(period, namespace).await?))
            }
            _ => Err(not_allowed("GET")),
        },
        ["plans"] => match method {
            Method::GET => Ok(json_response(StatusCode::OK, scheduler.pricing())),
            _ => Err(not_allowed("GET")),
        },
        ["plans", namespace] => match method {
            Method::GET => {
                let (plan, own) = scheduler.pricing().plan(namespace);
                let name = if own { *namespace } else { "default" };
                let body = serde_json::json!({ "namespace": namespace, "plan_name": name, "plan": plan });
                Ok(json_response(StatusCode::OK, &body))
            }
            _ => Err(not_allowed("GET")),
        },
        ["tokens"] => match method {
            Method::GET => Ok(json_response(StatusCode::OK, &serde_json::json!({ "tokens": gateway.access.list() }))),
            Method::POST => create_token(gateway, req).await,
            _ => Err(not_allowed("GET, POST")),
        },
        ["tokens", id] => match method {
            Method::DELETE => {
                let revoked = gateway.access.revoke(id).await?;
                Ok(json_response(StatusCode::OK, &serde_json::json!({ "revoked": revoked })))
            }
            _ => Err(not_allowed("DELETE")),
        },
        _ => Err(ApiError::NoRoute(path.clone())),
    }
}

/// `POST /v1/tokens` with `{"name", "role", "namespace"}` (`namespace`: a namespace or `*`;
/// optional for admin tokens, which are always `*`): the token's text, shown this once.
async fn create_token(gateway: &Gateway, req: Request<Body>) -> Result<Resp, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewToken {
        name: String,
        role: String,
        namespace: Option<String>,
    }
    let bytes = read_small(gateway, req, MAX_JSON, "JSON body").await?;
    let new: NewToken = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("token: {e}")))?;
    let role: Role = new.role.parse()?;
    let namespace = match (new.namespace.as_deref(), role) {
        (Some(ns), _) => Scope::parse(ns)?,
        (None, Role::Admin) => Scope::All,
        (None, _) => {
            return Err(ApiError::BadRequest("namespace: required: a namespace, or * for all namespaces".into()));
        }
    };
    let (info, token) = gateway.access.create(&new.name, role, namespace).await?;
    let mut body = serde_json::to_value(&info).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["token"] = serde_json::Value::String(token);
    Ok(json_response(StatusCode::CREATED, &body))
}

/// `PUT /v1/secrets/{name}?namespace=NS` with `{"data": {"KEY": "VALUE", ...}}`: creates
/// (201) or replaces (200) the secret; answers with its key names only.
async fn put_secret(gateway: &Gateway, namespace: &str, name: &str, req: Request<Body>) -> Result<Resp, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewSecret {
        data: std::collections::BTreeMap<String, String>,
    }
    let bytes = read_small(gateway, req, MAX_JSON, "secret").await?;
    // serde's messages quote the offending value: name only where it is.
    let new: NewSecret = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "secret: the body must be {{\"data\": {{\"KEY\": \"VALUE\", ...}}}} with string values (error at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let (info, created) = gateway.scheduler.put_secret(namespace, name, new.data).await?;
    Ok(json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, &info))
}

/// Largest JSON object the admin API reads (a trigger spec is a few hundred bytes).
const MAX_JSON: u64 = 64 << 10;
/// Largest manifest `wisp apply` sends (a few services and sources are a few KiB).
const MAX_MANIFEST: u64 = 1 << 20;

/// Reads a small admin body within its limit and the upload timeout.
async fn read_small(gateway: &Gateway, req: Request<Body>, limit: u64, what: &'static str) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(gateway.config.upload_timeout, read_within(&parts.headers, body, limit)).await;
    match read {
        Err(_) => Err(ApiError::UploadTimeout(gateway.config.upload_timeout)),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(BodyError::TooLarge { limit })) => Err(ApiError::BodyTooLarge { what, limit, flag: "fixed" }),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!("reading the body: {e}"))),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(gateway: &Gateway, req: Request<Body>) -> Result<T, ApiError> {
    let bytes = read_small(gateway, req, MAX_JSON, "JSON body").await?;
    serde_json::from_slice(&bytes).map_err(|e| wisp_triggers::TriggerError::Malformed(e.to_string()).into())
}

/// `name` in the namespace the `namespace` query parameter names (default: `default`).
fn namespaced<B>(req: &Request<B>, name: &str) -> String {
    let namespace = query_pairs(req).into_iter().find(|(k, _)| k == "namespace").map(|(_, v)| v);
    function_id(namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE), name)
}

/// `POST /v1/apply[?dry_run=true]`: Knative manifests (YAML documents or JSON). Every object is
/// validated (and dry-run against the node: images resolve, traffic names revisions) before
/// any is applied, so a bad document changes nothing.
async fn apply(gateway: &Gateway, caller: &TokenInfo, req: Request<Body>) -> Result<Resp, ApiError> {
    let mut dry_run = false;
    for (k, v) in query_pairs(&req) {
        match (k.as_str(), v.as_str()) {
            ("dry_run", "" | "true" | "all" | "server") => dry_run = true,
            ("dry_run", "false" | "none") => {}
            (other, _) => return Err(ApiError::BadRequest(format!("unknown query parameter `{other}` (dry_run)"))),
        }
    }
    let bytes = read_small(gateway, req, MAX_MANIFEST, "manifest").await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::BadRequest("the manifest is not UTF-8".into()))?;
    let objects = wisp_manifest::parse(text)?;
    // A namespaced token applies only into its namespace: checked for every object before any
    // is applied.
    for object in &objects {
        let namespace = match object {
            Object::Service(s) => s.namespace.as_str(),
            Object::Trigger(t) => split_id(&t.function).0,
        };
        auth::confine(caller, Action::Write, Some(namespace))?;
    }
    let services: Vec<String> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some(s.id()),
            Object::Trigger(_) => None,
        })
        .collect();
    for object in &objects {
        match object {
            Object::Service(spec) => drop(gateway.scheduler.apply(spec.clone(), true).await?),
            Object::Trigger(spec) => {
                spec.validate().map_err(wisp_triggers::TriggerError::from)?;
                if !services.contains(&spec.function) && !gateway.scheduler.exists(&spec.function) {
                    return Err(wisp_triggers::TriggerError::NoFunction(spec.function.clone()).into());
                }
            }
        }
    }
    let mut results = Vec::new();
    for object in objects {
        results.push(match object {
            Object::Service(spec) => {
                let applied = gateway.scheduler.apply(spec, dry_run).await?;
                serde_json::json!({ "kind": "Service", "namespace": applied.namespace, "name": applied.name,
                                    "action": applied.action, "revision": applied.revision })
            }
            Object::Trigger(spec) => {
                let kind = match spec.source {
                    wisp_triggers::SourceSpec::Kafka(_) => "KafkaSource",
                    wisp_triggers::SourceSpec::Rabbitmq(_) => "RabbitmqSource",
                };
                let name = spec.name.clone();
                let action = gateway.triggers.apply(spec, dry_run).await?;
                serde_json::json!({ "kind": kind, "name": name, "action": action })
            }
        });
    }
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "dry_run": dry_run, "results": results })))
}

/// `GET /v1/usage` parameters: `function` (an id, or a name in `namespace`), `namespace`,
/// `from`/`to` (dates or RFC 3339 times; widened to whole hours), `by`, `limit`.
fn usage_query(req: &Request<Body>) -> Result<UsageQuery, ApiError> {
    let bad = ApiError::BadRequest;
    let mut query = UsageQuery::default();
    for (k, v) in query_pairs(req) {
        match k.as_str() {
            "function" => query.function = Some(v),
            "namespace" => query.namespace = Some(v),
            "from" => query.from_ms = Some(time_param("from", &v)?),
            "to" => query.to_ms = Some(time_param("to", &v)?),
            "by" => {
                query.by =
                    Some(GroupBy::parse(&v).ok_or_else(|| bad(format!("by: {v:?} is not hour, day or function")))?)
            }
            "limit" => {
                query.limit =
                    v.parse().ok().filter(|n| *n <= MAX_USAGE_RECORDS).ok_or_else(|| {
                        bad(format!("limit: {v:?} is not a whole number from 0 to {MAX_USAGE_RECORDS}"))
                    })?
            }
            other => return Err(bad(format!("unknown query parameter `{other}`"))),
        }
    }
    // A bare name is in the namespace asked for; an id must be in it (access is checked on it).
    if let (Some(namespace), Some(function)) = (&query.namespace, &query.function) {
        match function.split_once('/') {
            Some((ns, _)) if ns != namespace => {
                return Err(bad(format!("function: {function:?} is not in namespace {namespace:?}")));
            }
            Some(_) => {}
            None => query.function = Some(function_id(namespace, function)),
        }
    }
    if let (Some(from), Some(to)) = (query.from_ms, query.to_ms)
        && from >= to
    {
        return Err(bad("from: must be before to".into()));
    }
    Ok(query)
}

fn time_param(name: &str, value: &str) -> Result<u64, ApiError> {
    parse_time(value).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{name}: {value:?} is not a date (2026-11-22) or an RFC 3339 time (2026-11-22T03:00:00Z), from 1970 on"
        ))
    })
}

/// `GET /v1/bill` parameters: `period` (`YYYY-MM`, required) and `namespace`.
fn bill_query(req: &Request<Body>) -> Result<(Period, Option<String>), ApiError> {
    let (mut period, mut namespace) = (None, None);
    for (k, v) in query_pairs(req) {
        match k.as_str() {
            "period" => {
                let month = Period::parse(&v);
                period = Some(month.ok_or_else(|| {
                    ApiError::BadRequest(format!("period: {v:?} is not a month like 2026-11 (UTC, from 1970-01)"))
                })?)
            }
            "namespace" => namespace = Some(v),
            other => return Err(ApiError::BadRequest(format!("unknown query parameter `{other}`"))),
        }
    }
    let period =
        period.ok_or_else(|| ApiError::BadRequest("period: missing; name a month, e.g. ?period=2026-11".into()))?;
    Ok((period, namespace))
}

/// `POST|PUT /v1/functions/{name}`: the body is the component, or, with `?image=REF`, empty
/// and the service runs the image REF names (`name[:tag]` or `sha256:<hex>`).
async fn deploy(gateway: &Gateway, id: &str, req: Request<Body>) -> Result<Resp, ApiError> {
    let mut image = None;
    let mut params = Vec::new();
    for (k, v) in query_pairs(&req) {
        match k.as_str() {
            "namespace" => {}
            "image" => image = Some(v),
            _ => params.push((k, v)),
        }
    }
    let view = match image {
        Some(image) => {
            if image.is_empty() {
                return Err(ApiError::BadRequest("image: empty; name an image (name[:tag] or sha256:<hex>)".into()));
            }
            expect_no_body(gateway, req).await?;
            gateway.scheduler.deploy_ref(id, &params, &image).await?
        }
        None => {
            let bytes = read_upload(gateway, req).await?;
            gateway.scheduler.deploy(id, &params, bytes).await?
        }
    };
    Ok(json_response(StatusCode::CREATED, &view))
}

/// A deploy by image reference carries no component: refuses a body rather than ignore it.
async fn expect_no_body(gateway: &Gateway, req: Request<Body>) -> Result<(), ApiError> {
    let (parts, body) = req.into_parts();
    let mut body = Box::pin(body);
    let read = tokio::time::timeout(gateway.config.upload_timeout, read_within(&parts.headers, body.as_mut(), 0)).await;
    match read {
        Err(_) => Err(ApiError::UploadTimeout(gateway.config.upload_timeout)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(BodyError::TooLarge { .. })) => {
            drain(body.as_mut()).await;
            Err(ApiError::BadRequest(
                "a deploy with ?image= takes no body: upload a component or name an image, not both".into(),
            ))
        }
        Ok(Err(e)) => Err(ApiError::BadRequest(format!("reading the body: {e}"))),
    }
}

/// `POST /v1/images[?name=NAME&tag=TAG]`: an `oci-archive` (tar, maybe compressed) streamed to
/// a file within `--max-image-size` and `--upload-timeout`, then imported into the node's image
/// store and tagged (by default with the archive's own ref name, else `latest`).
async fn import_image(gateway: &Gateway, req: Request<Body>) -> Result<Resp, ApiError> {
    let (mut name, mut tag) = (None, None);
    for (k, v) in query_pairs(&req) {
        match k.as_str() {
            "name" => name = Some(v),
            "tag" => tag = Some(v),
            other => return Err(ApiError::BadRequest(format!("unknown query parameter `{other}` (name, tag)"))),
        }
    }
    let upload = receive_image(gateway, req).await?;
    let imported = gateway.scheduler.import_image(upload.to_path_buf(), name, tag).await;
    // A bad archive's message names the temporary file: name what the client sent instead.
    let shown = upload.display().to_string();
    let imported = imported.map_err(|e| match e.to_string() {
        m if kind_status(e.kind()) == StatusCode::BAD_REQUEST && m.contains(&shown) => {
            ApiError::BadRequest(m.replace(&shown, "the uploaded archive"))
        }
        _ => ApiError::from(e),
    });
    // Unlinking a file of gigabytes is disk work too.
    let _ = tokio::task::spawn_blocking(move || drop(upload)).await;
    Ok(json_response(StatusCode::CREATED, &imported?))
}

/// Image uploads are written in pieces this large (one blocking write each).
const IMAGE_WRITE_BUFFER: usize = 1 << 20;

/// Streams an image upload into a temporary file in the upload dir (removed when the returned
/// path is dropped), never holding more than one write buffer of it in memory.
async fn receive_image(gateway: &Gateway, req: Request<Body>) -> Result<tempfile::TempPath, ApiError> {
    let config = &gateway.config;
    let limit = config.max_image_bytes;
    let too_large = || ApiError::BodyTooLarge { what: "image upload", limit, flag: "--max-image-size" };
    let mut body = Box::pin(req.into_body());
    if body.size_hint().lower() > limit {
        drain(body.as_mut()).await;
        return Err(too_large());
    }
    let dir = config.upload_dir.clone().unwrap_or_else(std::env::temp_dir);
    let created = tokio::task::spawn_blocking(move || {
        let file = tempfile::Builder::new().prefix(".image-upload-").suffix(".tar").tempfile_in(&dir);
        file.map_err(|e| ApiError::Internal(format!("creating a file for the upload in {}: {e}", dir.display())))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("creating a file for the upload: {e}")))??;
    let (file, path) = created.into_parts();
    let written = |e: std::io::Error| ApiError::Internal(format!("writing the upload to {}: {e}", path.display()));
    let mut file = tokio::io::BufWriter::with_capacity(IMAGE_WRITE_BUFFER, tokio::fs::File::from_std(file));
    let copy = async {
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading the upload: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            received += data.len() as u64;
            if received > limit {
                return Err(too_large());
            }
            file.write_all(&data).await.map_err(written)?;
        }
        file.flush().await.map_err(written)?;
        Ok(())
    };
    let result = match tokio::time::timeout(config.upload_timeout, copy).await {
        Err(_) => Err(ApiError::UploadTimeout(config.upload_timeout)),
        Ok(Err(e @ ApiError::BodyTooLarge { .. })) => {
            drain(body.as_mut()).await;
            Err(e)
        }
        Ok(result) => result,
    };
    // Complete on disk for the import: `flush` waited for the last write.
    drop(file);
    match result {
        Ok(()) => Ok(path),
        Err(e) => {
            tokio::task::spawn_blocking(move || drop(path));
            Err(e)
        }
    }
}

/// Reads a component upload within `--max-component-size` and `--upload-timeout`.
async fn read_upload(gateway: &Gateway, req: Request<Body>) -> Result<Bytes, ApiError> {
    let config = &gateway.config;
    let limit = config.max_component_bytes;
    let (parts, body) = req.into_parts();
    let mut body = Box::pin(body);
    // The upload is read (within its limit and time) before any answer; the scheduler
    // validates before compiling.
    let read = tokio::time::timeout(config.upload_timeout, read_within(&parts.headers, body.as_mut(), limit)).await;
    let bytes = match read {
        Err(_) => return Err(ApiError::UploadTimeout(config.upload_timeout)),
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge { limit })) => {
            drain(body.as_mut()).await;
            return Err(ApiError::BodyTooLarge { what: "component upload", limit, flag: "--max-component-size" });
        }
        Ok(Err(e)) => return Err(ApiError::BadRequest(format!("reading the upload: {e}"))),
    };
    Ok(bytes)
}

/// Discards the rest of a refused upload, within bounds, so a client that writes its whole
/// body before reading (most do) sees the answer.
pub(crate) async fn drain(mut body: Pin<&mut Body>) {
    let mut left = DRAIN_LIMIT;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while !body.is_end_stream() {
            match tokio::time::timeout(DRAIN_PAUSE, body.frame()).await.ok().flatten() {
                Some(Ok(frame)) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    left = match left.checked_sub(n) {
                        Some(left) => left,
                        None => return,
                    };
                }
                _ => return,
            }
        }
    })
    .await;
}

pub(crate) fn query_pairs<B>(req: &Request<B>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}
