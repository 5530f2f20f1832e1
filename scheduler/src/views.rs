//! What the admin API shows: functions (the `wisp ls` view of services) and services with a
//! Knative-shaped status, read from the live snapshots.

use crate::api::{Condition, FunctionView, RevisionStatus, RevisionView, ServiceStatus, ServiceView, TrafficStatus};
use crate::route::Target;
use crate::services::validate_id;
use crate::{Scheduler, SchedulerError, Service};
use wisp_runtime::Workload;

impl Scheduler {
    /// Every function (service), sorted by id.
    pub fn list(&self) -> Vec<FunctionView> {
        let mut views: Vec<FunctionView> = self.inner.services().iter().map(|s| self.function_view(s)).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// One function with its revision history.
    pub async fn describe(&self, id: &str) -> Result<FunctionView, SchedulerError> {
        validate_id(id)?;
        let service = self.service(id).ok_or_else(|| SchedulerError::NotFound(id.to_string()))?;
        let mut view = self.function_view(&service);
        view.revisions = service
            .history
            .iter()
            .map(|r| RevisionView {
                revision: r.revision,
                component_hash: r.artifact.digest(),
                artifact: r.artifact.clone(),
                created_at_ms: r.created_at_ms,
            })
            .collect();
        Ok(view)
    }

    fn function_view(&self, service: &Service) -> FunctionView {
        let latest = service.latest();
        let (mut ready, mut in_flight) = (0, 0);
        for r in service.live.values() {
            let stats = r.live.stats();
            ready += stats.ready;
            in_flight += stats.in_flight;
        }
        FunctionView {
            name: service.state.name.to_string(),
            revision: latest.revision,
            component_hash: latest.artifact.digest(),
            component_bytes: latest.artifact.bytes(),
            artifact: latest.artifact.clone(),
            created_at_ms: latest.created_at_ms,
            settings: latest.settings.clone(),
            concurrency_limit: self.inner.concurrency_limit(&latest.settings),
            ready_instances: ready,
            in_flight,
            error: service.failed.get(&latest.revision).cloned(),
            revisions: Vec::new(),
        }
    }

    /// Every service with its status, sorted by namespace and name.
    pub fn services(&self) -> Vec<ServiceView> {
        let mut views: Vec<ServiceView> = self.inner.services().iter().map(|s| self.service_view(s)).collect();
        views.sort_by(|a, b| (&a.spec.namespace, &a.spec.name).cmp(&(&b.spec.namespace, &b.spec.name)));
        views
    }

    /// One service with its status and revisions.
    pub fn get_service(&self, id: &str) -> Result<ServiceView, SchedulerError> {
        validate_id(id)?;
        let service = self.service(id).ok_or_else(|| SchedulerError::NotFound(id.to_string()))?;
        Ok(self.service_view(&service))
    }

    fn url(&self, host_label: &str, namespace: &str) -> String {
        let config = &self.inner.config;
        match config.url_port {
            0 | 80 => format!("http://{host_label}.{namespace}.{}", config.domain),
            port => format!("http://{host_label}.{namespace}.{}:{port}", config.domain),
        }
    }

    fn service_view(&self, service: &Service) -> ServiceView {
        let spec = &service.spec;
        let latest = service.latest();
        let traffic: Vec<TrafficStatus> = service
            .route
            .targets
            .iter()
            .map(|t| TrafficStatus {
                revision_name: t.revision_name.clone(),
                latest_revision: t.spec.latest_revision,
                percent: t.spec.percent,
                tag: t.spec.tag.clone(),
                url: t.spec.tag.as_ref().map(|tag| self.url(&format!("{tag}-{}", spec.name), &spec.namespace)),
            })
            .collect();
        let configuration = service
            .failed
            .get(&latest.revision)
            .map(|reason| ("RevisionFailed", format!("Revision {:?} failed: {reason}", latest.name)));
        let route = service.route.targets.iter().find_map(|t| match &t.target {
            Target::Live(_) => None,
            Target::Unavailable { revision, reason } => {
                Some(("RevisionMissing", format!("Revision {revision:?} referenced in traffic is not ready: {reason}")))
            }
        });
        let ready = configuration.clone().or(route.clone());
        let status = ServiceStatus {
            observed_generation: latest.revision,
            url: self.url(&spec.name, &spec.namespace),
            latest_created_revision_name: latest.name.clone(),
            latest_ready_revision_name: service.latest_ready().map(|r| r.stored.name.clone()),
            traffic,
            conditions: vec![
                Condition::new("ConfigurationsReady", configuration),
                Condition::new("Ready", ready),
                Condition::new("RoutesReady", route),
            ],
        };
        let revisions = service
            .history
            .iter()
            .map(|r| {
                let (percent, tags) = service.route.share_of(&r.name);
                let live = service.live.get(&r.revision);
                RevisionStatus {
                    name: r.name.clone(),
                    generation: r.revision,
                    image: r.template.image.clone(),
                    artifact: r.artifact.clone(),
                    created_at_ms: r.created_at_ms,
                    ready: !service.failed.contains_key(&r.revision),
                    reason: service.failed.get(&r.revision).cloned(),
                    percent,
                    tags,
                    latest: r.revision == latest.revision,
                    container_concurrency: r.settings.container_concurrency,
                    scaling: live.map(|l| l.status()).unwrap_or_default(),
                }
            })
            .collect();
        ServiceView { id: service.state.name.to_string(), spec: spec.clone(), status, revisions }
    }
}
