//! Secrets: named maps of key to value in a namespace, stored in their own table of the
//! registry (settings only name them) and kept in memory to resolve grants. A function reads
//! them as environment variables: the values are put in an instance's environment when it
//! starts and appear in no API answer, log line or error message.

use crate::model::{Settings, check_env_name};
use crate::revision::Live;
use crate::{Scheduler, SchedulerError, Service, now_ms, split_id, validate_name};
use rusqlite::params;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use wisp_runtime::wasm::{Grants, Origin};

/// Keys one secret may hold.
const MAX_KEYS: usize = 256;
/// Longest key (a Kubernetes secret key's limit).
const MAX_KEY_LEN: usize = 253;

/// A secret as the API shows it: its key names, never its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub namespace: String,
    pub name: String,
    pub keys: Vec<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

struct Secret {
    data: SecretData,
    created_at_ms: u64,
    updated_at_ms: u64,
}

/// Every secret on the node, by namespace and name: read on the request path's side (instance
/// creation), so kept in memory and written through to the registry.
#[derive(Default)]
pub(crate) struct Secrets(RwLock<HashMap<(String, String), Secret>>);

impl Secrets {
    fn data(&self, namespace: &str, name: &str) -> Option<SecretData> {
        self.0.read().unwrap().get(&(namespace.to_string(), name.to_string())).map(|s| s.data.clone())
    }
}

/// One secret's keys and values.
type SecretData = Arc<BTreeMap<String, String>>;

/// Why a function's settings do not resolve against the secrets: the field and the message.
type Unresolved = (String, String);

/// The environment `settings` grant in `namespace`: every key of each `secrets` entry, then
/// `secret_env`, then literal `env` (later ones win), looked up with `lookup`.
fn resolve_env(
    namespace: &str,
    settings: &Settings,
    lookup: &dyn Fn(&str) -> Option<SecretData>,
) -> Result<BTreeMap<String, String>, Unresolved> {
    let missing = |field: &str, name: &str| {
        (crate::images::container_field(field), format!("secret {name:?} not found in namespace {namespace:?}"))
    };
    let mut env = BTreeMap::new();
    for name in &settings.secrets {
        let data = lookup(name).ok_or_else(|| missing("envFrom", name))?;
        for (key, value) in data.iter() {
            check_env_name(key).map_err(|why| {
                (crate::images::container_field("envFrom"), format!("secret {name:?} has key {key:?}: {why}"))
            })?;
            env.insert(key.clone(), value.clone());
        }
    }
    for r in &settings.secret_env {
        let data = lookup(&r.secret).ok_or_else(|| missing("env", &r.secret))?;
        let value = data.get(&r.key).ok_or_else(|| {
            (
                crate::images::container_field("env"),
                format!("secret {:?} has no key {:?} (read by {})", r.secret, r.key, r.name),
            )
        })?;
        env.insert(r.name.clone(), value.clone());
    }
    env.extend(settings.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env)
}

/// Whether `settings` read secret `name`.
fn reads(settings: &Settings, name: &str) -> bool {
    settings.secrets.iter().any(|s| s == name) || settings.secret_env.iter().any(|r| r.secret == name)
}

/// The revisions of a service that run or can be routed to at once: its latest and the live ones.
fn current_settings(service: &Service) -> impl Iterator<Item = &Settings> {
    std::iter::once(&service.latest().settings).chain(service.live.values().map(|r| &r.stored.settings))
}

fn check_secret(namespace: &str, name: &str, data: &BTreeMap<String, String>) -> Result<(), SchedulerError> {
    let invalid = |field: &str, message: String| SchedulerError::InvalidField { field: field.into(), message };
    validate_name(namespace).map_err(|e| invalid("namespace", e.to_string()))?;
    validate_name(name)
        .map_err(|_| invalid("name", format!("{name:?} must be a DNS label (lowercase letters, digits, '-')")))?;
    if data.is_empty() {
        return Err(invalid("data", "a secret needs at least one key".into()));
    }
    if data.len() > MAX_KEYS {
        return Err(invalid("data", format!("{} keys is above the maximum of {MAX_KEYS}", data.len())));
    }
    for key in data.keys() {
        let ok = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !ok {
            return Err(invalid(
                "data",
                format!("key {key:?} must be 1 to {MAX_KEY_LEN} letters, digits, '-', '.' or '_'"),
            ));
        }
    }
    Ok(())
}

impl Scheduler {
    /// Reads every secret into memory (at start, before services are restored).
    pub(crate) async fn load_secrets(&self) -> Result<(), SchedulerError> {
        let inner = self.inner.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let conn = inner.store.conn();
            let mut stmt = conn.prepare("SELECT namespace, name, data, created_at_ms, updated_at_ms FROM secrets")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
            })?;
            Ok::<_, SchedulerError>(rows.collect::<Result<Vec<(String, String, String, u64, u64)>, _>>()?)
        })
        .await??;
        let mut map = self.inner.secrets.0.write().unwrap();
        for (namespace, name, data, created_at_ms, updated_at_ms) in rows {
            let data = Arc::new(serde_json::from_str(&data)?);
            map.insert((namespace, name), Secret { data, created_at_ms, updated_at_ms });
        }
        Ok(())
    }

    /// Creates or replaces a secret. A replacement that would break a function reading it (a
    /// key it reads is gone) is refused; otherwise instances started from now on see the new
    /// values. Returns the secret (keys only) and whether it was created.
    pub async fn put_secret(
        &self,
        namespace: &str,
        name: &str,
        data: BTreeMap<String, String>,
    ) -> Result<(SecretInfo, bool), SchedulerError> {
        check_secret(namespace, name, &data)?;
        let _admin = self.inner.admin.lock().await;
        let data = Arc::new(data);
        // Every function that reads it must still resolve with the new data.
        for service in self.namespace_services(namespace) {
            for settings in current_settings(&service).filter(|s| reads(s, name)) {
                let lookup =
                    |n: &str| if n == name { Some(data.clone()) } else { self.inner.secrets.data(namespace, n) };
                if let Err((_, message)) = resolve_env(namespace, settings, &lookup) {
                    return Err(SchedulerError::SecretConflict(format!("function {}: {message}", service.spec.id())));
                }
            }
        }
        let now = now_ms();
        let created_at_ms = self
            .inner
            .secrets
            .0
            .read()
            .unwrap()
            .get(&(namespace.to_string(), name.to_string()))
            .map_or(now, |s| s.created_at_ms);
        let (inner, ns, n, json) =
            (self.inner.clone(), namespace.to_string(), name.to_string(), serde_json::to_string(&*data)?);
        tokio::task::spawn_blocking(move || {
            inner.store.conn().execute(
                "INSERT INTO secrets (namespace, name, data, created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (namespace, name) DO UPDATE SET data = excluded.data, updated_at_ms = excluded.updated_at_ms",
                params![ns, n, json, created_at_ms, now],
            )
        })
        .await??;
        let info = SecretInfo {
            namespace: namespace.to_string(),
            name: name.to_string(),
            keys: data.keys().cloned().collect(),
            created_at_ms,
            updated_at_ms: now,
        };
        let previous = self
            .inner
            .secrets
            .0
            .write()
            .unwrap()
            .insert((namespace.to_string(), name.to_string()), Secret { data, created_at_ms, updated_at_ms: now });
        self.regrant(namespace, name);
        tracing::info!(namespace, secret = name, "secret stored");
        Ok((info, previous.is_none()))
    }

    /// Secrets (names and keys only), in `namespace` or all, by namespace and name.
    pub fn secrets(&self, namespace: Option<&str>) -> Vec<SecretInfo> {
        let map = self.inner.secrets.0.read().unwrap();
        let mut out: Vec<SecretInfo> = map
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|((namespace, name), s)| SecretInfo {
                namespace: namespace.clone(),
                name: name.clone(),
                keys: s.data.keys().cloned().collect(),
                created_at_ms: s.created_at_ms,
                updated_at_ms: s.updated_at_ms,
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// Deletes a secret; refused while a function's latest or live revision reads it.
    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), SchedulerError> {
        let _admin = self.inner.admin.lock().await;
        let key = (namespace.to_string(), name.to_string());
        if !self.inner.secrets.0.read().unwrap().contains_key(&key) {
            return Err(SchedulerError::SecretNotFound { namespace: namespace.into(), name: name.into() });
        }
        let users: Vec<String> = self
            .namespace_services(namespace)
            .iter()
            .filter(|s| current_settings(s).any(|settings| reads(settings, name)))
            .map(|s| s.spec.id())
            .collect();
        if !users.is_empty() {
            return Err(SchedulerError::SecretInUse { name: name.into(), functions: users });
        }
        let (inner, ns, n) = (self.inner.clone(), key.0.clone(), key.1.clone());
        tokio::task::spawn_blocking(move || {
            inner.store.conn().execute("DELETE FROM secrets WHERE namespace = ?1 AND name = ?2", params![ns, n])
        })
        .await??;
        self.inner.secrets.0.write().unwrap().remove(&key);
        tracing::info!(namespace, secret = name, "secret deleted");
        Ok(())
    }

    /// Refuses settings whose grants do not resolve in `namespace` (a missing secret or key),
    /// or that grant outbound HTTP to a container image (its replicas have no network to
    /// filter). Call under the admin lock, so no secret disappears before the apply lands.
    pub(crate) fn check_grants(
        &self,
        namespace: &str,
        settings: &Settings,
        container: bool,
    ) -> Result<(), SchedulerError> {
        if container && !settings.allow_outbound.is_empty() {
            return Err(SchedulerError::InvalidSetting {
                field: "allow_outbound".into(),
                message: "container replicas have no network (only loopback), so outbound HTTP cannot be granted to a container image (--allow-outbound, wisp.dev/allow-outbound); it is for Wasm components".into(),
            });
        }
        self.grants(namespace, settings).map(drop)
    }

    /// What instances of a revision with `settings` in `namespace` are granted, secrets read now.
    pub(crate) fn grants(&self, namespace: &str, settings: &Settings) -> Result<Grants, SchedulerError> {
        let env = resolve_env(namespace, settings, &|n| self.inner.secrets.data(namespace, n))
            .map_err(|(field, message)| SchedulerError::InvalidField { field, message })?;
        let allow_outbound = settings
            .allow_outbound
            .iter()
            .map(|o| {
                Origin::parse(o)
                    .map_err(|message| SchedulerError::InvalidSetting { field: "allow_outbound".into(), message })
            })
            .collect::<Result<_, _>>()?;
        Ok(Grants { env: env.into_iter().collect(), allow_outbound })
    }

    /// Gives the new value of secret `name` to the live Wasm revisions that read it: their
    /// next instances start with it. Container replicas keep theirs until the next revision.
    fn regrant(&self, namespace: &str, name: &str) {
        for service in self.namespace_services(namespace) {
            for revision in service.live.values().filter(|r| reads(&r.stored.settings, name)) {
                if let Live::Wasm(pool) = &revision.live {
                    match self.grants(namespace, &revision.stored.settings) {
                        Ok(grants) => pool.set_grants(grants),
                        Err(e) => tracing::warn!(revision = %revision.stored.name, "secret {name:?} changed: {e}"),
                    }
                }
            }
        }
    }

    fn namespace_services(&self, namespace: &str) -> Vec<Arc<Service>> {
        let services = self.inner.services.read().unwrap();
        services.iter().filter(|(id, _)| split_id(id).0 == namespace).map(|(_, s)| s.clone()).collect()
    }
}
