use serde::Deserialize;
use serde_json::Value;
use wisp_scheduler::{ArtifactRef, ServiceView};

use super::Format;
use crate::client::{self, Client};
use crate::human;
use crate::output;
use crate::table::Table;

/// List or show services (or pushed artifacts), kubectl style
///
/// `wisp get services` is a table like `kn service list`; `wisp get service NAME -o yaml` (or
/// `-o json`) prints the Knative `Service` object, apiVersion, kind, metadata, spec and status,
/// which `wisp apply -f` takes back as it is (status is ignored). Without NAME, `-o yaml|json`
/// prints a `kind: List` of them. `wisp get artifacts` lists what `wisp push` and `wisp apply`
/// uploaded; its `-o json` is the node's answer.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// What to get
    #[arg(value_enum, value_name = "KIND")]
    pub kind: Kind,
    /// One object (services: in --namespace; artifacts: every tag of that name)
    pub name: Option<String>,
    /// Namespace of the services
    #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// Services of every namespace (without NAME)
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Knative Services (also: services, svc, ksvc)
    #[value(alias = "services", alias = "svc", alias = "ksvc")]
    Service,
    /// Pushed components (also: artifacts)
    #[value(alias = "artifacts")]
    Artifact,
}

#[derive(Debug, Deserialize)]
struct ServiceList {
    #[serde(default)]
    services: Vec<ServiceView>,
}

#[derive(Debug, Deserialize)]
struct ArtifactList {
    #[serde(default)]
    artifacts: Vec<ArtifactRef>,
}

pub fn run(client: &Client, format: Format, args: GetArgs) -> anyhow::Result<()> {
    match args.kind {
        Kind::Service => services(client, format, &args),
        Kind::Artifact => artifacts(client, format, &args),
    }
}

/// `GET /v1/services/{namespace}/{name}`: the answer as text and parsed.
pub fn fetch_service(client: &Client, namespace: &str, name: &str) -> anyhow::Result<(String, ServiceView)> {
    let body = client.get(&format!("/v1/services/{}/{}", client::segment(namespace), client::segment(name)))?;
    let view = client::parse(&body)?;
    Ok((body, view))
}

/// The Knative `Service` for a view: its manifest plus its status.
pub fn knative_object(view: &ServiceView) -> anyhow::Result<Value> {
    let mut object = wisp_manifest::to_manifest(&view.spec);
    if let Value::Object(map) = &mut object {
        map.insert("status".into(), serde_json::to_value(&view.status)?);
    }
    Ok(object)
}

/// When the service was created, as far as its kept revisions tell.
pub fn created_at_ms(view: &ServiceView) -> Option<u64> {
    view.revisions.iter().map(|r| r.created_at_ms).min()
}

/// The `Ready` condition's status and reason.
pub fn readiness(view: &ServiceView) -> (String, String) {
    match view.status.conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) => (c.status.clone(), c.reason.clone().unwrap_or_default()),
        None => ("Unknown".into(), String::new()),
    }
}

fn services(client: &Client, format: Format, args: &GetArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.name {
        let (_, view) = fetch_service(client, &args.namespace, name)?;
        if super::print_data(format, &knative_object(&view)?)? {
            return Ok(());
        }
        return Ok(output::print(&service_table(&[view], false))?);
    }
    let body = client.get("/v1/services")?;
    let list: ServiceList = client::parse(&body)?;
    let views: Vec<ServiceView> =
        list.services.into_iter().filter(|v| args.all_namespaces || v.spec.namespace == args.namespace).collect();
    let items = views.iter().map(knative_object).collect::<anyhow::Result<Vec<_>>>()?;
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
    if super::print_data(format, &list)? {
        return Ok(());
    }
    if views.is_empty() {
        if args.all_namespaces {
            eprintln!("no services");
        } else {
            eprintln!("no services in namespace {}", args.namespace);
        }
        return Ok(());
    }
    Ok(output::print(&service_table(&views, args.all_namespaces))?)
}

/// `kn service list`: NAME URL LATEST AGE READY, and REASON when a service is not ready.
fn service_table(views: &[ServiceView], namespaces: bool) -> String {
    let now = human::now_ms();
    let with_reason = views.iter().any(|v| readiness(v).0 != "True");
    let mut header = vec!["NAME", "URL", "LATEST", "AGE", "READY"];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    if with_reason {
        header.push("REASON");
    }
    let mut table = Table::new(&header);
    for v in views {
        let (ready, reason) = readiness(v);
        let mut row = vec![
            v.spec.name.clone(),
            v.status.url.clone(),
            v.status.latest_ready_revision_name.clone().unwrap_or_default(),
            created_at_ms(v).map(|ms| human::age(ms, now)).unwrap_or_default(),
            ready,
        ];
        if namespaces {
            row.insert(0, v.spec.namespace.clone());
        }
        if with_reason {
            row.push(reason);
        }
        table.row(row);
    }
    table.render("")
}

fn artifacts(client: &Client, format: Format, args: &GetArgs) -> anyhow::Result<()> {
    let body = client.get("/v1/artifacts")?;
    let list: ArtifactList = client::parse(&body)?;
    let artifacts: Vec<&ArtifactRef> =
        list.artifacts.iter().filter(|a| args.name.as_ref().is_none_or(|n| &a.name == n)).collect();
    if format != Format::Table {
        let value = serde_json::json!({ "artifacts": artifacts });
        super::print_data(format, &value)?;
        return Ok(());
    }
    if artifacts.is_empty() {
        eprintln!("no artifacts pushed");
        return Ok(());
    }
    let now = human::now_ms();
    let mut table = Table::new(&["NAME", "TAG", "DIGEST", "SIZE", "AGE"]);
    for a in artifacts {
        table.row(vec![
            a.name.clone(),
            a.tag.clone(),
            human::short_hash(&a.artifact.digest()),
            human::size(a.artifact.bytes()),
            human::age(a.created_at_ms, now),
        ]);
    }
    Ok(output::print(&table.render(""))?)
}
