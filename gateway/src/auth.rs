//! Who may call what. Every `/v1` request carries `Authorization: Bearer <token>`; [`required`]
//! maps its route to the action and namespace it needs, and [`authorize`] checks the token
//! against that before the handler runs, so a refused request (401 without a valid token, 403
//! outside its role or scope) has read no body and changed nothing. Routes it does not know
//! need an admin token (fail closed). Private functions need a token that may invoke in their
//! namespace ([`check_invoke`]); public ones cost one map lookup.
//!
//! There are no CORS grants anywhere: a web page cannot make a browser send a token, so a
//! browser-borne request (a form post, a `text/plain` fetch) is always a 401.

use crate::{ApiError, Body, Gateway};
use http::{HeaderMap, Method, Request};
use std::sync::Arc;
use wisp_access::{Action, TokenInfo};
use wisp_scheduler::{DEFAULT_NAMESPACE, split_id};

/// Where a route acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// In one namespace: the token's scope must include it.
    Namespace(String),
    /// Across the node: needs the `*` scope.
    Node,
    /// Any scope; the handler confines a namespaced token (filters what it lists, checks the
    /// namespaces a body names once it is parsed, or the namespace of what it looked up).
    Confined,
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Need {
    pub action: Action,
    pub target: Target,
}

fn need(action: Action, target: Target) -> Need {
    Need { action, target }
}

/// The permission a `/v1` route needs: `segments` is the path after `/v1/` split at `/`,
/// `query` its decoded query pairs. Pure: the table test covers every route.
pub(crate) fn required(method: &Method, segments: &[&str], query: &[(String, String)]) -> Need {
    use Action::*;
    use Target::*;
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    // `?namespace=` names the namespace of per-namespace routes (default: `default`).
    let namespace = || Namespace(param("namespace").unwrap_or(DEFAULT_NAMESPACE).to_string());
    let read = matches!(*method, Method::GET | Method::HEAD);
    let rw = if read { Read } else { Write };
    match segments {
        ["functions"] | ["services"] => need(rw, Confined),
        ["functions", _] | ["functions", _, "logs"] | ["secrets"] | ["secrets", _] => need(rw, namespace()),
        ["services", ns, _] => need(rw, Namespace(ns.to_string())),
        ["apply"] | ["triggers"] | ["triggers", _] => need(rw, Confined),
        ["invocations", _] => need(Read, Confined),
        // Images and artifacts are node-wide: any viewer lists them, any deployer adds one
        // (deploys refer to them), only a node-wide deployer removes one others may use.
        ["images"] | ["artifacts"] | ["artifacts", _, _] => need(rw, Confined),
        ["images", _, _] => need(rw, if read { Confined } else { Node }),
        ["usage"] | ["bill"] => match (param("namespace"), param("function")) {
            (Some(ns), _) => need(Read, Namespace(ns.to_string())),
            (None, Some(function)) => need(Read, Namespace(split_id(function).0.to_string())),
            (None, None) => need(Read, Confined),
        },
        ["plans"] if read => need(Read, Node),
        ["plans", ns] if read => need(Read, Namespace(ns.to_string())),
        _ => need(Admin, Node),
    }
}

/// The token a request carries, or 401.
pub(crate) fn authenticate(gateway: &Gateway, headers: &HeaderMap) -> Result<Arc<TokenInfo>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "no bearer token: send `Authorization: Bearer <token>` (the node's first admin token is in \
             DATA_DIR/admin-token; `wisp token create` makes more)"
                .into(),
        ));
    };
    let text = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    });
    let Some(text) = text else {
        return Err(ApiError::Unauthorized("the Authorization header is not `Bearer <token>`".into()));
    };
    gateway.access.verify(text).ok_or_else(|| ApiError::Unauthorized("invalid or revoked token".into()))
}

/// 403 unless `caller` may do `action` in `namespace` (`None`: across the node).
pub(crate) fn confine(caller: &TokenInfo, action: Action, namespace: Option<&str>) -> Result<(), ApiError> {
    if caller.may(action, namespace) {
        return Ok(());
    }
    let place = match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "across the node (needs namespace *)".to_string(),
    };
    Err(ApiError::Forbidden(format!("{} may not {action} {place}", caller.describe())))
}

/// Checks a `/v1` request before its handler runs; returns the caller. A namespaced token that
/// asks for usage or a bill without naming a namespace gets its own (the query is rewritten).
pub(crate) fn authorize(gateway: &Gateway, req: &mut Request<Body>) -> Result<Arc<TokenInfo>, ApiError> {
    let caller = authenticate(gateway, req.headers())?;
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let query = crate::admin::query_pairs(req);
    let Need { action, target } = required(req.method(), &segments, &query);
    let scoped = match &caller.namespace {
        wisp_access::Scope::Namespace(ns) => Some(ns.clone()),
        wisp_access::Scope::All => None,
    };
    match target {
        Target::Namespace(ns) => confine(&caller, action, Some(&ns))?,
        Target::Node => confine(&caller, action, None)?,
        Target::Confined => {
            confine(&caller, action, scoped.as_deref())?;
            if let (Some(ns), ["usage"] | ["bill"]) = (&scoped, segments.as_slice()) {
                let mut pairs = form_urlencoded::Serializer::new(req.uri().query().unwrap_or("").to_string());
                pairs.append_pair("namespace", ns);
                let uri = format!("{path}?{}", pairs.finish());
                *req.uri_mut() = uri.parse().map_err(|e| ApiError::BadRequest(format!("request path: {e}")))?;
            }
        }
    }
    Ok(caller)
}

/// Before a function runs: a private one needs a token that may invoke in its namespace. A
/// Wisp token is the node's credential, never the function's: it is not passed on (other
/// `Authorization` values are, for functions that check their own).
pub(crate) fn check_invoke(gateway: &Gateway, headers: &mut HeaderMap, id: &str) -> Result<(), ApiError> {
    if gateway.scheduler.is_private(id) {
        let caller = authenticate(gateway, headers)?;
        confine(&caller, Action::Invoke, Some(split_id(id).0))?;
    }
    let wisp_token = headers.get(http::header::AUTHORIZATION).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() > 12 && v[..7].eq_ignore_ascii_case(b"bearer ") && v[7..].trim_ascii_start().starts_with(b"wisp_")
    });
    if wisp_token {
        headers.remove(http::header::AUTHORIZATION);
    }
    Ok(())
}

/// A refused request's answer, once its body is drained (within bounds) so a client still
/// sending it reads the 401/403 instead of a broken pipe.
pub(crate) async fn refuse(refused: ApiError, body: Body) -> ApiError {
    crate::admin::drain(std::pin::pin!(body)).await;
    refused
}

/// Whether `caller` sees objects of namespace `ns` in a list.
pub(crate) fn sees(caller: &TokenInfo, ns: &str) -> bool {
    caller.namespace.includes(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Target::*;

    fn ns(n: &str) -> Target {
        Namespace(n.to_string())
    }

    #[test]
    fn every_route_needs_its_permission() {
        let table: Vec<(&str, &str, Action, Target)> = vec![
            ("GET", "functions", Read, Confined),
            ("GET", "functions/hello", Read, ns("default")),
            ("GET", "functions/hello?namespace=team", Read, ns("team")),
            ("POST", "functions/hello?namespace=team", Write, ns("team")),
            ("PUT", "functions/hello", Write, ns("default")),
            ("DELETE", "functions/hello?namespace=team", Write, ns("team")),
            ("GET", "functions/hello/logs?namespace=team", Read, ns("team")),
            ("POST", "apply", Write, Confined),
            ("GET", "services", Read, Confined),
            ("GET", "services/team/api", Read, ns("team")),
            ("DELETE", "services/team/api", Write, ns("team")),
            ("GET", "artifacts", Read, Confined),
            ("PUT", "artifacts/events/v1", Write, Confined),
            ("GET", "images", Read, Confined),
            ("POST", "images", Write, Confined),
            ("DELETE", "images/web/latest", Write, Node),
            ("GET", "triggers", Read, Confined),
            ("POST", "triggers", Write, Confined),
            ("GET", "triggers/orders", Read, Confined),
            ("DELETE", "triggers/orders", Write, Confined),
            ("GET", "invocations/0190", Read, Confined),
            ("GET", "usage", Read, Confined),
            ("GET", "usage?namespace=team", Read, ns("team")),
            ("GET", "usage?function=team/api", Read, ns("team")),
            ("GET", "usage?function=hello", Read, ns("default")),
            ("GET", "bill?period=2025-01", Read, Confined),
            ("GET", "bill?period=2025-01&namespace=team", Read, ns("team")),
            ("GET", "secrets?namespace=team", Read, ns("team")),
            ("PUT", "secrets/db?namespace=team", Write, ns("team")),
            ("DELETE", "secrets/db", Write, ns("default")),
            ("GET", "plans", Read, Node),
            ("GET", "plans/team", Read, ns("team")),
            ("PUT", "plans/team", Admin, Node),
            ("DELETE", "plans/team", Admin, Node),
            ("GET", "tokens", Admin, Node),
            ("POST", "tokens", Admin, Node),
            ("DELETE", "tokens/0123456789ab", Admin, Node),
            // Unknown routes fail closed.
            ("GET", "nothing/here", Admin, Node),
            ("POST", "functions/a/b/c", Admin, Node),
            ("OPTIONS", "tokens", Admin, Node),
        ];
        for (method, route, action, target) in table {
            let (path, query) = route.split_once('?').unwrap_or((route, ""));
            let segments: Vec<&str> = path.split('/').collect();
            let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            let method: Method = method.parse().unwrap();
            assert_eq!(required(&method, &segments, &query), Need { action, target }, "{method} /v1/{route}");
        }
    }
}
