use serde_json::json;
use wisp_scheduler::{RevisionStatus, ServiceView};

use super::Format;
use super::get;
use crate::client::Client;
use crate::human;
use crate::output;
use crate::table::Table;

/// List a service's revisions, newest first, like `kn revisions list`
///
/// TRAFFIC is the share of the service's requests each revision gets, TAGS the traffic tags
/// that reach it by name, REPLICAS its ready/desired replicas as the autoscaler sees them.
/// `-o json|yaml` prints `{"revisions": [...]}` as the node reports them.
#[derive(clap::Args, Debug)]
pub struct RevisionsArgs {
    /// Service name
    pub name: String,
    /// Namespace of the service
    #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
}

pub fn run(client: &Client, format: Format, args: RevisionsArgs) -> anyhow::Result<()> {
    let (_, view) = get::fetch_service(client, &args.namespace, &args.name)?;
    if super::print_data(format, &json!({ "revisions": view.revisions }))? {
        return Ok(());
    }
    Ok(output::print(&table(&view, human::now_ms()))?)
}

/// `100%` for a routed revision, blank otherwise.
pub fn traffic(r: &RevisionStatus) -> String {
    if r.percent > 0 { format!("{}%", r.percent) } else { String::new() }
}

/// `ready/desired` replicas.
pub fn replicas(r: &RevisionStatus) -> String {
    format!("{}/{}", r.scaling.ready_replicas, r.scaling.desired_replicas)
}

fn table(view: &ServiceView, now: u64) -> String {
    let with_reason = view.revisions.iter().any(|r| !r.ready);
    let mut header = vec!["NAME", "SERVICE", "TRAFFIC", "TAGS", "GENERATION", "AGE", "READY", "REPLICAS"];
    if with_reason {
        header.push("REASON");
    }
    let mut t = Table::new(&header);
    for r in &view.revisions {
        let mut row = vec![
            r.name.clone(),
            view.spec.name.clone(),
            traffic(r),
            r.tags.join(","),
            r.generation.to_string(),
            human::age(r.created_at_ms, now),
            if r.ready { "True" } else { "False" }.to_owned(),
            replicas(r),
        ];
        if with_reason {
            row.push(r.reason.clone().unwrap_or_default());
        }
        t.row(row);
    }
    t.render("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kn_columns() {
        let now = 1_763_780_000_000;
        let mut view = ServiceView::default();
        view.spec.name = "hello".into();
        let mut new = RevisionStatus {
            name: "hello-00002".into(),
            generation: 2,
            created_at_ms: now - 30_000,
            ready: true,
            percent: 100,
            ..Default::default()
        };
        new.scaling.ready_replicas = 1;
        new.scaling.desired_replicas = 1;
        let old = RevisionStatus {
            name: "hello-00001".into(),
            generation: 1,
            created_at_ms: now - 120_000,
            ready: true,
            tags: vec!["v1".into()],
            ..Default::default()
        };
        view.revisions = vec![new, old];
        assert_eq!(
            table(&view, now),
            "NAME         SERVICE  TRAFFIC  TAGS  GENERATION  AGE  READY  REPLICAS\n\
             hello-00002  hello    100%           2           30s  True   1/1\n\
             hello-00001  hello             v1    1           2m   True   0/0\n"
        );
        view.revisions[1].ready = false;
        view.revisions[1].reason = Some("trap".into());
        assert!(table(&view, now).lines().nth(2).unwrap().ends_with("False  0/0       trap"));
    }
}
