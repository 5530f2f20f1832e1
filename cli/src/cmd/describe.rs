use std::collections::BTreeMap;

use wisp_scheduler::{RevisionStatus, ServiceView, Settings};

use super::{Format, get, revisions};
use crate::client::Client;
use crate::human;
use crate::output;
use crate::table::{self, Table};

/// Show a service like `kn service describe`: URL, revisions and traffic, settings, conditions
///
/// Each revision line starts with its share of the traffic (`100%`), `+` when it is ready but
/// gets none, or `!` when it failed; `@latest (NAME)` marks the revision the latest-revision
/// traffic goes to, `#tag` its tags, `[N]` the generation that stamped it. `-o json` prints the
/// node's service view (spec, Knative status, revisions with their autoscaler state).
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// Service (function) name
    pub name: String,
    /// Namespace of the service
    #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
}

pub fn run(client: &Client, format: Format, args: DescribeArgs) -> anyhow::Result<()> {
    let (body, view) = get::fetch_service(client, &args.namespace, &args.name)?;
    if super::print_body(format, &body)? {
        return Ok(());
    }
    Ok(output::print(&render(&view, human::now_ms()))?)
}

fn render(view: &ServiceView, now: u64) -> String {
    let spec = &view.spec;
    let joined = |map: &BTreeMap<String, String>| map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
    let mut header = vec![("Name", spec.name.clone()), ("Namespace", spec.namespace.clone())];
    if !spec.labels.is_empty() {
        header.push(("Labels", joined(&spec.labels).join(", ")));
    }
    if !spec.annotations.is_empty() {
        header.push(("Annotations", joined(&spec.annotations).join(", ")));
    }
    header.push(("Age", get::created_at_ms(view).map(|ms| human::age(ms, now)).unwrap_or_default()));
    header.push(("URL", view.status.url.clone()));
    let mut text = table::key_values(&header, "");

    text.push_str("\nRevisions:\n");
    for r in &view.revisions {
        text.push_str(&revision(view, r, now));
    }

    text.push_str("\nSettings (latest revision):\n");
    text.push_str(&table::key_values(&settings(&spec.template.settings), "  "));
    if !spec.template.settings.env.is_empty() {
        text.push_str("  Env:\n");
        for (k, v) in &spec.template.settings.env {
            text.push_str(&format!("    {k}={v}\n"));
        }
    }

    text.push_str("\nConditions:\n");
    text.push_str(&conditions(view, now));
    text
}

/// `  100%  @latest (hello-00002) #v2 [2] (5m)` and its indented details.
fn revision(view: &ServiceView, r: &RevisionStatus, now: u64) -> String {
    let bullet = if !r.ready {
        "!".to_owned()
    } else if r.percent > 0 {
        revisions::traffic(r)
    } else {
        "+".to_owned()
    };
    let via_latest = view.status.traffic.iter().any(|t| t.latest_revision && t.revision_name == r.name);
    let mut line = if via_latest { format!("@latest ({})", r.name) } else { r.name.clone() };
    if r.latest && !via_latest {
        line.push_str(" (latest created)");
    }
    for tag in &r.tags {
        line.push_str(&format!(" #{tag}"));
    }
    line.push_str(&format!(" [{}] ({})", r.generation, human::age(r.created_at_ms, now)));
    let mut out = format!("  {bullet:>4}  {line}\n");

    let digest = r.artifact.digest();
    let size = human::size(r.artifact.bytes());
    let image = if r.image.is_empty() || r.image == digest {
        format!("{} ({size})", human::short_hash(&digest))
    } else {
        format!("{} (pinned to {}, {size})", r.image, human::short_hash(&digest))
    };
    let mut details = vec![("Image", image), ("Replicas", revisions::replicas(r))];
    if let Some(reason) = &r.reason {
        details.push(("Reason", reason.clone()));
    }
    // A revision something routes to is live: it has an autoscaler.
    if r.ready && (r.percent > 0 || !r.tags.is_empty()) {
        let s = &r.scaling;
        details.push((
            "Autoscaler",
            format!(
                "panic {}, concurrency {:.1} stable / {:.1} panic, rps {:.1} stable / {:.1} panic, activator queue {}, in flight {}",
                if s.panic { "yes" } else { "no" },
                s.stable_concurrency,
                s.panic_concurrency,
                s.stable_rps,
                s.panic_rps,
                s.activator_queue,
                s.in_flight,
            ),
        ));
    }
    for (key, value) in details {
        // One width for every revision, so their details line up.
        out.push_str(&format!("        {:<12}{value}\n", format!("{key}:")));
    }
    out
}

fn settings(s: &Settings) -> Vec<(&'static str, String)> {
    let limit = |n: u32, none: &str| if n == 0 { none.to_owned() } else { n.to_string() };
    let scaling = &s.scaling;
    let mut autoscaling = format!(
        "{} target {}, utilization {}%, min-scale {}, max-scale {}, initial-scale {}",
        match scaling.metric {
            wisp_scheduler::Metric::Concurrency => "concurrency",
            wisp_scheduler::Metric::Rps => "rps",
        },
        scaling.total_target(s.container_concurrency),
        scaling.target_utilization_percentage,
        scaling.min_scale,
        limit(scaling.max_scale, "unlimited"),
        scaling.initial_scale,
    );
    if scaling.scale_down_delay_ms > 0 {
        autoscaling.push_str(&format!(", scale-down-delay {}", human::duration_ms(scaling.scale_down_delay_ms)));
    }
    vec![
        ("Container concurrency", limit(s.container_concurrency, "unlimited")),
        ("Timeout", human::duration_ms(s.timeout_ms)),
        ("Memory", human::size(s.memory_bytes)),
        ("Min warm", s.min_warm.to_string()),
        ("Idle timeout", human::duration_ms(s.idle_timeout_ms)),
        ("Max request body", human::size(s.max_request_body_bytes)),
        ("Max response body", human::size(s.max_response_body_bytes)),
        ("Max concurrency", limit(s.max_concurrency, "node default")),
        ("Autoscaling", autoscaling),
    ]
}

/// `OK TYPE AGE REASON`: `++` true, `!!` false, `??` unknown; Ready first. The node keeps no
/// transition times, so AGE is that of the latest revision (conditions change on applies).
fn conditions(view: &ServiceView, now: u64) -> String {
    let age = view.revisions.iter().map(|r| r.created_at_ms).max().map(|ms| human::age(ms, now)).unwrap_or_default();
    let mut conditions: Vec<_> = view.status.conditions.iter().collect();
    conditions.sort_by_key(|c| c.type_ != "Ready");
    let with_message = conditions.iter().any(|c| c.message.is_some());
    let mut header = vec!["OK", "TYPE", "AGE", "REASON"];
    if with_message {
        header.push("MESSAGE");
    }
    let mut t = Table::new(&header);
    for c in conditions {
        let ok = match c.status.as_str() {
            "True" => "++",
            "False" => "!!",
            _ => "??",
        };
        let mut row = vec![ok.to_owned(), c.type_.clone(), age.clone(), c.reason.clone().unwrap_or_default()];
        if with_message {
            row.push(c.message.clone().unwrap_or_default());
        }
        t.row(row);
    }
    t.render("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_scheduler::{Artifact, Condition, TrafficStatus};

    #[test]
    fn reads_like_kn() {
        let now = 1_763_780_000_000;
        let mut view = ServiceView::default();
        view.spec.name = "hello".into();
        view.status.url = "http://hello.default.example.com".into();
        view.status.traffic = vec![
            TrafficStatus {
                revision_name: "hello-00002".into(),
                latest_revision: true,
                percent: 90,
                ..Default::default()
            },
            TrafficStatus {
                revision_name: "hello-00001".into(),
                percent: 10,
                tag: Some("v1".into()),
                ..Default::default()
            },
        ];
        let condition = |t: &str| Condition { type_: t.into(), status: "True".into(), reason: None, message: None };
        view.status.conditions = vec![condition("ConfigurationsReady"), condition("Ready"), condition("RoutesReady")];
        let artifact = Artifact::Wasm { sha256: "ab".repeat(32), bytes: 93_184 };
        view.revisions = vec![
            RevisionStatus {
                name: "hello-00002".into(),
                generation: 2,
                image: "hello:v2".into(),
                artifact: artifact.clone(),
                created_at_ms: now - 60_000,
                ready: true,
                percent: 90,
                latest: true,
                ..Default::default()
            },
            RevisionStatus {
                name: "hello-00001".into(),
                generation: 1,
                image: format!("sha256:{}", "ab".repeat(32)),
                artifact,
                created_at_ms: now - 300_000,
                ready: true,
                percent: 10,
                tags: vec!["v1".into()],
                ..Default::default()
            },
        ];
        let text = render(&view, now);
        assert!(text.starts_with("Name:      hello\nNamespace: default\nAge:       5m\nURL:"), "{text}");
        assert!(text.contains("\n   90%  @latest (hello-00002) [2] (1m)\n"), "{text}");
        assert!(text.contains("        Image:      hello:v2 (pinned to sha256:abababab…, 91 KiB)\n"), "{text}");
        assert!(text.contains("\n   10%  hello-00001 #v1 [1] (5m)\n"), "{text}");
        assert!(text.contains("        Image:      sha256:abababab… (91 KiB)\n"), "{text}");
        assert!(text.contains("  OK  TYPE                 AGE  REASON\n  ++  Ready                1m\n"), "{text}");
        assert!(text.contains("Timeout:") && text.contains("5m"), "{text}");
    }
}
