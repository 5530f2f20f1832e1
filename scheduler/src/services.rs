//! The admin side of services: restoring them at start, applying a spec (stamping a revision
//! when the template changed, resolving traffic, unloading and garbage-collecting revisions
//! nothing routes to), `wisp deploy` as an apply, `wisp push`, and delete.

use crate::api::{Action, Applied};
use crate::images::{IMAGE_FIELD, container_field, container_spec};
use crate::revision::{Live, Revision};
use crate::route::{Resolved, Route, Target};
use crate::service::{CLUSTER_LOCAL, ServiceSpec, Template, VISIBILITY_LABEL, split_id};
use crate::store::{ArtifactRef, StoredRevision, revision_name};
use crate::{Artifact, FunctionState, Scheduler, SchedulerError, Service, Settings, now_ms, validate_name};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use wisp_oci::Image;
use wisp_runtime::LogBuffer;
use wisp_runtime::wasm::{Compiled, PoolId};

/// A revision's artifact, ready to start: compiled code, or an image in the store.
pub(crate) enum Loaded {
    Wasm(Compiled),
    /// The image, and the uid and gid its user resolved to.
    Container(Arc<Image>, (u32, u32)),
}

/// Why an image did not resolve: content the node has no copy of (fine for a dry run), or
/// anything else.
enum Missing {
    Digest(SchedulerError),
    Other(SchedulerError),
}

impl From<Missing> for SchedulerError {
    fn from(m: Missing) -> Self {
        match m {
            Missing::Digest(e) | Missing::Other(e) => e,
        }
    }
}

/// A function id is `name` or `namespace/name`, both DNS labels.
pub(crate) fn validate_id(id: &str) -> Result<(), SchedulerError> {
    let (namespace, name) = split_id(id);
    validate_name(namespace)?;
    validate_name(name)
}

impl Scheduler {
    /// Loads every stored service: its spec (synthesized for functions deployed before
    /// services existed), its history, and the revisions its traffic routes to.
    pub(crate) async fn restore(&self) -> Result<(), SchedulerError> {
        let inner = self.inner.clone();
        let (revisions, objects) = tokio::task::spawn_blocking(move || {
            Ok::<_, SchedulerError>((inner.store.all_revisions()?, inner.store.objects("service")?))
        })
        .await??;
        let mut specs: BTreeMap<String, ServiceSpec> = BTreeMap::new();
        for object in objects {
            specs.insert(object.name.clone(), serde_json::from_str(&object.spec)?);
        }
        let mut histories: BTreeMap<String, Vec<StoredRevision>> = BTreeMap::new();
        for r in revisions {
            histories.entry(r.function.clone()).or_default().push(r);
        }
        for (id, history) in histories {
            let spec = specs.remove(&id).unwrap_or_else(|| {
                let (namespace, name) = split_id(&id);
                ServiceSpec {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    template: history[0].template.clone(),
                    ..ServiceSpec::default()
                }
            });
            let state = self.new_state(&id);
            let service = self.assemble(spec, state, history, &BTreeMap::new(), BTreeMap::new()).await;
            self.inner.services.write().unwrap().insert(id, Arc::new(service));
        }
        Ok(())
    }

    fn new_state(&self, id: &str) -> Arc<FunctionState> {
        let state = Arc::new(FunctionState {
            name: id.into(),
            logs: Arc::new(LogBuffer::new(self.inner.runtime.config().log_buffer_bytes)),
            admitted: AtomicUsize::new(0),
            metrics: std::sync::OnceLock::new(),
        });
        let mut states = self.inner.states.lock().unwrap();
        states.retain(|s| s.strong_count() > 0);
        states.push(Arc::downgrade(&state));
        state
    }

    /// Builds a service snapshot: loads the revisions its traffic needs (reusing `live` ones
    /// and ones that already failed), then resolves its route.
    async fn assemble(
        &self,
        spec: ServiceSpec,
        state: Arc<FunctionState>,
        history: Vec<StoredRevision>,
        live: &BTreeMap<u64, Arc<Revision>>,
        mut failed: BTreeMap<u64, String>,
    ) -> Service {
        let wanted = wanted_revisions(&spec, &history);
        let mut loaded = BTreeMap::new();
        for stored in history.iter().filter(|r| wanted.contains(&r.revision)) {
            if let Some(r) = live.get(&stored.revision) {
                loaded.insert(stored.revision, r.clone());
                continue;
            }
            if failed.contains_key(&stored.revision) {
                continue;
            }
            match self
                .load(&stored.artifact, &stored.settings)
                .await
                .and_then(|l| self.start_revision(stored.clone(), l, &state))
            {
                Ok(revision) => {
                    loaded.insert(stored.revision, Arc::new(revision));
                }
                Err(e) => {
                    let reason = format!("could not be loaded: {e}");
                    tracing::error!(function = %stored.function, revision = %stored.name, "{reason}");
                    failed.insert(stored.revision, reason);
                }
            }
        }
        let mut service = Service { spec, state, route: Route::default(), live: loaded, failed, history };
        service.route = resolve_route(&service);
        service
    }

    fn start_revision(
        &self,
        stored: StoredRevision,
        loaded: Loaded,
        state: &Arc<FunctionState>,
    ) -> Result<Revision, SchedulerError> {
        let inner = &self.inner;
        let live = match loaded {
            Loaded::Wasm(compiled) => {
                let id = PoolId { function: state.name.clone(), revision: stored.revision };
                let grants = self.grants(split_id(&stored.function).0, &stored.settings)?;
                Live::Wasm(inner.runtime.pool(id, compiled, stored.settings.limits(), state.logs.clone(), grants))
            }
            Loaded::Container(image, user) => {
                let containers = self.containers()?;
                // Secrets' values join the literal env here, never in stored settings.
                let settings = Settings {
                    env: self.grants(split_id(&stored.function).0, &stored.settings)?.env.into_iter().collect(),
                    ..stored.settings.clone()
                };
                let spec = container_spec(&image, user, &state.name, stored.revision, &stored.name, &settings);
                let ended = self.replica_meter(&state.name, stored.revision);
                Live::Container(containers.replica_set(spec, state.logs.clone(), ended))
            }
        };
        Ok(Revision::new(
            stored,
            live,
            inner.config.decider,
            inner.epoch,
            inner.config.activator_queue,
            inner.config.max_ready,
        ))
    }

    /// Reads and compiles an artifact off the async threads (a component another revision
    /// already loaded is neither read nor compiled again), or finds its container image.
    async fn load(&self, artifact: &Artifact, settings: &Settings) -> Result<Loaded, SchedulerError> {
        let sha256 = match artifact {
            Artifact::Wasm { sha256, .. } => sha256,
            Artifact::Image { sha256, .. } => {
                let (image, user) = self.container_image(sha256, settings).await?;
                return Ok(Loaded::Container(image, user));
            }
        };
        if let Some(compiled) = self.inner.runtime.loaded(sha256) {
            return Ok(Loaded::Wasm(compiled));
        }
        let inner = self.inner.clone();
        let hash = sha256.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = inner.store.read_component(&hash)?;
            inner
                .runtime
                .compile(&hash, &bytes)
                .map(Loaded::Wasm)
                .map_err(|error| SchedulerError::Component { path: inner.store.component_path(&hash), error })
        })
        .await?
    }

    /// Validates and compiles component bytes, and stores them durably by hash. The compiled
    /// component is returned so a caller about to apply it can hold it: the runtime keeps
    /// compiled code weakly, and dropping it here would make the apply load it again.
    pub(crate) async fn put_component(&self, bytes: Bytes) -> Result<(Artifact, Compiled), SchedulerError> {
        let hash = hex::encode(Sha256::digest(&bytes));
        let inner = self.inner.clone();
        let artifact = Artifact::Wasm { sha256: hash.clone(), bytes: bytes.len() as u64 };
        let compiled = tokio::task::spawn_blocking(move || {
            let compiled = inner.runtime.compile(&hash, &bytes)?;
            inner.store.put_component(&hash, &bytes)?;
            Ok::<_, SchedulerError>(compiled)
        })
        .await??;
        Ok((artifact, compiled))
    }

    /// Applies a service: a template change stamps a new revision (`<name>-00002`, or the
    /// bring-your-own name), traffic is re-resolved, revisions nothing routes to are unloaded
    /// and the oldest beyond the retention count deleted. Nothing changes unless every check
    /// passes; with `dry_run` nothing changes at all. A 2xx answer means it is on disk.
    pub async fn apply(&self, spec: ServiceSpec, dry_run: bool) -> Result<Applied, SchedulerError> {
        validate_name(&spec.namespace)?;
        validate_name(&spec.name)?;
        let id = spec.id();
        let artifact = match self.resolve_image(&spec.template.image).await {
            Ok(artifact) => Some(artifact),
            // A dry run uploads nothing, so a digest the node has no copy of yet is fine (the
            // real apply uploads first); it cannot be compiled here, so it is not checked.
            Err(Missing::Digest(_)) if dry_run => None,
            Err(e) => return Err(e.into()),
        };
        let settings = &spec.template.settings;
        self.inner.runtime.check_limits(&settings.limits())?;
        if let Some(Artifact::Wasm { .. }) = &artifact
            && let Some(field) = settings.container_fields().first()
        {
            return Err(SchedulerError::InvalidField {
                field: container_field(field),
                message: format!("only container images take {field}: this image is a Wasm component"),
            });
        }

        if let Some(Artifact::Image { .. }) = &artifact
            && settings.max_instance_reuse_count != 1
        {
            return Err(SchedulerError::InvalidSetting {
                field: "max_instance_reuse_count".into(),
                message: "a container replica is one long-lived process that serves every request already; instance reuse is for Wasm components".into(),
            });
        }

        let _admin = self.inner.admin.lock().await;
        self.check_grants(&spec.namespace, settings, matches!(artifact, Some(Artifact::Image { .. })))?;
        let current = self.service(&id);
        let history = current.as_ref().map_or(&[][..], |s| &s.history[..]);
        // A latest revision that could not be loaded is stamped again, so applying (or
        // redeploying) the same thing after repairing its file brings it back.
        let latest_failed = current.as_ref().is_some_and(|c| c.failed.contains_key(&c.latest().revision));
        let changed = latest_failed || history.first().is_none_or(|latest| latest.template != spec.template);
        let new_name = if changed {
            let name = spec
                .template
                .revision_name
                .clone()
                .unwrap_or_else(|| revision_name(&id, history.first().map_or(0, |r| r.revision) + 1));
            if history.iter().any(|r| r.name == name) {
                return Err(SchedulerError::InvalidField {
                    field: "spec.template.metadata.name".into(),
                    message: format!(
                        "Saw the following changes without a name change: revision {name:?} exists (give the template a new name, or none)"
                    ),
                });
            }
            Some(name)
        } else {
            None
        };
        for (i, target) in spec.traffic.iter().enumerate() {
            if let Some(name) = &target.revision_name
                && new_name.as_ref() != Some(name)
                && !history.iter().any(|r| &r.name == name)
            {
                return Err(SchedulerError::InvalidField {
                    field: format!("spec.traffic[{i}].revisionName"),
                    message: format!("Revision {name:?} referenced in traffic not found"),
                });
            }
        }
        let compiled = match (changed, &artifact) {
            (true, Some(artifact)) => {
                let loaded = self.load(artifact, settings).await?;
                match &loaded {
                    // Instantiate once with the revision's own limits, so a component that cannot
                    // start (its initial memory above `memory`, say) is refused now, not per request.
                    Loaded::Wasm(compiled) => {
                        self.inner.runtime.check_instantiates(compiled, settings.limits()).await?
                    }
                    Loaded::Container(..) => drop(self.containers()?),
                }
                Some(loaded)
            }
            _ => None,
        };
        let action = match (&current, changed) {
            (None, _) => Action::Created,
            (Some(c), false) if c.spec == spec => Action::Unchanged,
            _ => Action::Configured,
        };
        let applied = Applied {
            id: id.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            action,
            revision: new_name,
        };
        let Some(artifact) = artifact.filter(|_| !dry_run && action != Action::Unchanged) else {
            return Ok(applied);
        };

        let inner = self.inner.clone();
        let (id_owned, json) = (id.clone(), serde_json::to_string(&spec)?);
        let (artifact_owned, template) = (artifact.clone(), spec.template.clone());
        let created_at_ms = now_ms();
        let added = tokio::task::spawn_blocking(move || {
            let new = changed.then_some((&artifact_owned, &template));
            inner.store.put_service(&id_owned, new, &json, created_at_ms)
        })
        .await??;
        let mut history = history.to_vec();
        let stamped = added.is_some();
        if let Some((revision, name)) = added {
            history.insert(
                0,
                StoredRevision {
                    function: id.clone(),
                    revision,
                    artifact,
                    settings: spec.template.settings.clone(),
                    created_at_ms,
                    name,
                    template: spec.template.clone(),
                },
            );
        }
        let state = current.as_ref().map_or_else(|| self.new_state(&id), |c| c.state.clone());
        let mut live = current.as_ref().map(|c| c.live.clone()).unwrap_or_default();
        if let Some(loaded) = compiled.filter(|_| stamped) {
            let stored = history[0].clone();
            live.insert(stored.revision, Arc::new(self.start_revision(stored, loaded, &state)?));
        }
        let failed = current.as_ref().map(|c| c.failed.clone()).unwrap_or_default();
        let mut service = self.assemble(spec, state, history, &live, failed).await;
        let collected = self.collect_garbage(&service).await;
        if let Ok(deleted) = &collected {
            service.history.retain(|r| !deleted.contains(&r.revision));
        }
        let service = Arc::new(service);
        let replaced = self.inner.services.write().unwrap().insert(id.clone(), service.clone());
        // Revisions no longer loaded release their idle instances now; in-flight requests keep
        // theirs until they finish.
        for (number, r) in replaced.iter().flat_map(|s| s.live.iter()) {
            if !service.live.contains_key(number) {
                r.release();
            }
        }
        if let Err(e) = collected {
            tracing::warn!(function = %id, "garbage-collecting old revisions: {e}");
        }
        tracing::info!(function = %id, action = ?applied.action, revision = ?applied.revision, "applied");
        Ok(applied)
    }

    /// Deletes the oldest unrouted revisions beyond the retention count (and their component
    /// files when nothing else uses them).
    /// Returns the revisions deleted.
    async fn collect_garbage(&self, service: &Service) -> Result<Vec<u64>, SchedulerError> {
        let keep = wanted_revisions(&service.spec, &service.history);
        let doomed: Vec<u64> = service
            .history
            .iter()
            .filter(|r| !keep.contains(&r.revision))
            .skip(self.inner.config.revision_retention)
            .map(|r| r.revision)
            .collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let inner = self.inner.clone();
        let id = service.state.name.to_string();
        tokio::task::spawn_blocking(move || {
            for artifact in inner.store.delete_revisions(&id, &doomed)? {
                inner.remove_content(&artifact);
            }
            Ok::<_, SchedulerError>(doomed)
        })
        .await?
    }

    /// Deploys `bytes` as the image of service `id` (default namespace unless `ns/name`): the
    /// same apply as a manifest's, with the previous template's settings and `params` applied.
    pub async fn deploy(
        &self,
        id: &str,
        params: &[(String, String)],
        bytes: Bytes,
    ) -> Result<crate::FunctionView, SchedulerError> {
        let (settings, private) = self.deploy_settings(id, params)?;
        let (artifact, _held_through_apply) = self.put_component(bytes).await?;
        self.deploy_image(id, settings, private, artifact.digest()).await
    }

    /// Deploys service `id` from an image reference (`name[:tag]` from `wisp image ls`, or a
    /// digest), with the previous template's settings and `params` applied.
    pub async fn deploy_ref(
        &self,
        id: &str,
        params: &[(String, String)],
        image: &str,
    ) -> Result<crate::FunctionView, SchedulerError> {
        let (settings, private) = self.deploy_settings(id, params)?;
        self.deploy_image(id, settings, private, image.to_string()).await
    }

    /// The settings a redeploy of `id` gets: the latest revision's, with `params` applied; and
    /// `private=true|false` if a param sets it (the service's visibility label, not a setting).
    fn deploy_settings(
        &self,
        id: &str,
        params: &[(String, String)],
    ) -> Result<(crate::Settings, Option<bool>), SchedulerError> {
        validate_id(id)?;
        let mut private = None;
        for (k, v) in params.iter().filter(|(k, _)| k == "private") {
            private = Some(match v.as_str() {
                "true" | "" => true,
                "false" => false,
                other => {
                    return Err(SchedulerError::InvalidSetting {
                        field: k.clone(),
                        message: format!("{other:?} is not true or false"),
                    });
                }
            });
        }
        let previous = self.service(id).map(|c| c.latest().settings.clone()).unwrap_or_default();
        let params = params.iter().filter(|(k, _)| k != "private");
        let settings = previous.with_params(params.map(|(k, v)| (k.as_str(), v.as_str())))?;
        self.inner.runtime.check_limits(&settings.limits())?;
        Ok((settings, private))
    }

    async fn deploy_image(
        &self,
        id: &str,
        settings: crate::Settings,
        private: Option<bool>,
        image: String,
    ) -> Result<crate::FunctionView, SchedulerError> {
        let mut spec = match self.service(id) {
            Some(c) => c.spec.clone(),
            None => {
                let (namespace, name) = split_id(id);
                ServiceSpec { namespace: namespace.to_string(), name: name.to_string(), ..ServiceSpec::default() }
            }
        };
        spec.template = Template { image, settings, ..Template::default() };
        match private {
            Some(true) => drop(spec.labels.insert(VISIBILITY_LABEL.into(), CLUSTER_LOCAL.into())),
            Some(false) => drop(spec.labels.remove(VISIBILITY_LABEL)),
            None => {}
        }
        self.apply(spec, false).await?;
        self.describe(id).await
    }

    /// Stores a component under `name:tag` for manifests to refer to; returns what it stored.
    pub async fn push(&self, name: &str, tag: &str, bytes: Bytes) -> Result<ArtifactRef, SchedulerError> {
        validate_name(name)?;
        validate_tag(tag)?;
        let (artifact, _) = self.put_component(bytes).await?;
        let pushed = ArtifactRef { name: name.into(), tag: tag.into(), artifact, created_at_ms: now_ms() };
        let (inner, stored) = (self.inner.clone(), pushed.clone());
        tokio::task::spawn_blocking(move || inner.store.put_artifact(&stored)).await??;
        Ok(pushed)
    }

    /// Every pushed artifact.
    pub async fn artifacts(&self) -> Result<Vec<ArtifactRef>, SchedulerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.store.artifacts()).await?
    }

    /// What an image reference names: `sha256:<hex>` or `name@sha256:<hex>` (content already
    /// on the node), or a pushed `name[:tag]` (tag `latest` by default).
    async fn resolve_image(&self, image: &str) -> Result<Artifact, Missing> {
        let unresolvable =
            |message: String| Missing::Other(SchedulerError::InvalidField { field: IMAGE_FIELD.into(), message });
        let digest = image.rsplit_once('@').map_or(image, |(_, d)| d);
        let inner = self.inner.clone();
        if let Some(hex) = digest.strip_prefix("sha256:") {
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Err(unresolvable(format!("{image:?} is not a sha256 digest (64 lowercase hex digits)")));
            }
            let (path, hex) = (inner.store.component_path(hex), hex.to_string());
            let found = tokio::task::spawn_blocking(move || match std::fs::metadata(path) {
                Ok(m) => Some(Artifact::Wasm { sha256: hex, bytes: m.len() }),
                Err(_) => inner.images.image(&hex).ok().map(|i| Artifact::Image { sha256: hex, bytes: i.size }),
            })
            .await
            .map_err(|e| Missing::Other(e.into()))?;
            return found.ok_or_else(|| {
                Missing::Digest(SchedulerError::InvalidField {
                    field: IMAGE_FIELD.into(),
                    message: format!(
                        "no component or image with digest {digest} on this node (wisp push or wisp image import it first)"
                    ),
                })
            });
        }
        if image.starts_with("./") || image.starts_with("../") || image.starts_with('/') || image.starts_with("file://")
        {
            return Err(unresolvable(format!(
                "{image:?} is a local file: `wisp apply` uploads it, the node cannot read it"
            )));
        }
        let (name, tag) = image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((image, "latest"));
        let (owned_name, owned_tag) = (name.to_string(), tag.to_string());
        let found = tokio::task::spawn_blocking(move || inner.store.artifact(&owned_name, &owned_tag))
            .await
            .map_err(|e| Missing::Other(e.into()))?
            .map_err(Missing::Other)?;
        found.ok_or_else(|| {
            unresolvable(format!(
                "image {image:?} not found: push a component with `wisp push FILE {name}:{tag}` or import an image with `wisp image import PATH --name {name}:{tag}`"
            ))
        })
    }

    /// Deletes a service: its revisions, its metric series, and the component files and
    /// compiled code nothing else uses. Its usage stays in the ledger.
    pub async fn delete(&self, id: &str) -> Result<(), SchedulerError> {
        validate_id(id)?;
        let _admin = self.inner.admin.lock().await;
        let inner = self.inner.clone();
        let owned = id.to_string();
        let unused = tokio::task::spawn_blocking(move || inner.store.delete_function(&owned))
            .await??
            .ok_or_else(|| SchedulerError::NotFound(id.to_string()))?;
        if let Some(gone) = self.inner.services.write().unwrap().remove(id) {
            for r in gone.live.values() {
                r.release();
            }
        }
        self.inner.metrics.remove(id);
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            for artifact in unused {
                inner.remove_content(&artifact);
            }
        })
        .await?;
        tracing::info!(function = id, "deleted");
        Ok(())
    }
}

/// An image tag: what OCI's distribution spec allows.
pub(crate) fn validate_tag(tag: &str) -> Result<(), SchedulerError> {
    if tag.is_empty()
        || tag.len() > 128
        || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || tag.starts_with(['.', '-'])
    {
        return Err(SchedulerError::InvalidField {
            field: "tag".into(),
            message: format!("{tag:?} must be 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'"),
        });
    }
    Ok(())
}

/// The revisions a service keeps loaded: every one its traffic names, and the latest.
fn wanted_revisions(spec: &ServiceSpec, history: &[StoredRevision]) -> Vec<u64> {
    let mut wanted: Vec<u64> = history.first().map(|r| r.revision).into_iter().collect();
    for target in &spec.traffic {
        if let Some(name) = &target.revision_name
            && let Some(r) = history.iter().find(|r| &r.name == name)
        {
            wanted.push(r.revision);
        }
    }
    wanted
}

/// Resolves a service's traffic to its loaded revisions.
fn resolve_route(service: &Service) -> Route {
    let unavailable = |revision: &str, reason: &str| Target::Unavailable {
        revision: revision.to_string(),
        reason: reason.to_string(),
    };
    let targets = service
        .spec
        .traffic
        .iter()
        .map(|spec| {
            let stored = match &spec.revision_name {
                Some(name) => service.history.iter().find(|r| &r.name == name),
                // `latestRevision` follows the latest *ready* revision.
                None => service.latest_ready().map(|r| &r.stored).or(service.history.first()),
            };
            let (revision_name, target) = match stored {
                None => {
                    let name = spec.revision_name.clone().unwrap_or_default();
                    let target = unavailable(&name, "revision not found");
                    (name, target)
                }
                Some(stored) => {
                    let target = match (service.live.get(&stored.revision), service.failed.get(&stored.revision)) {
                        (Some(r), _) => Target::Live(r.clone()),
                        (None, Some(reason)) => unavailable(&stored.name, reason),
                        (None, None) => unavailable(&stored.name, "not loaded"),
                    };
                    (stored.name.clone(), target)
                }
            };
            Resolved { spec: spec.clone(), revision_name, target }
        })
        .collect();
    Route::new(targets)
}
