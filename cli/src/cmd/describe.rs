use crate::api::Function;
use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};
use crate::table::{self, Table};

/// Show a function: its current revision, settings, live instances and revision history
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// Function name
    pub name: String,
}

pub fn run(client: &Client, output: Output, args: DescribeArgs) -> anyhow::Result<()> {
    let body = client.get(&format!("/v1/functions/{}", client::segment(&args.name)))?;
    if output == Output::Json {
        return Ok(output::print(&body)?);
    }
    let f: Function = client::parse(&body)?;
    let now = human::now_ms();
    let when = |ms: u64| format!("{} ({} ago)", human::utc(ms), human::age(ms, now));
    let s = &f.settings;
    let mut text = table::key_values(
        &[
            ("name", f.name.clone()),
            ("revision", f.revision.to_string()),
            ("component", format!("{} ({})", f.component_hash, human::size(f.component_bytes))),
            ("deployed", when(f.created_at_ms)),
            ("ready instances", f.ready_instances.to_string()),
            ("in flight", f.in_flight.to_string()),
            ("status", f.error.clone().unwrap_or_else(|| "serving".into())),
        ],
        "",
    );
    text.push_str("settings:\n");
    text.push_str(&table::key_values(
        &[
            ("min warm", s.min_warm.to_string()),
            ("memory", human::size(s.memory_bytes)),
            ("timeout", human::duration_ms(s.timeout_ms)),
            ("idle timeout", human::duration_ms(s.idle_timeout_ms)),
            ("max request body", human::size(s.max_request_body_bytes)),
            ("max response body", human::size(s.max_response_body_bytes)),
            ("max concurrency", f.concurrency_limit.to_string()),
        ],
        "  ",
    ));
    if let revisions @ [_, ..] = f.revisions.as_slice() {
        text.push_str("revisions:\n");
        let mut t = Table::new(&["REVISION", "COMPONENT", "DEPLOYED", "AGE"]);
        for r in revisions {
            let mark = if r.revision == f.revision { " (current)" } else { "" };
            t.row(vec![
                format!("{}{mark}", r.revision),
                r.component_hash.clone(),
                human::utc(r.created_at_ms),
                human::age(r.created_at_ms, now),
            ]);
        }
        text.push_str(&t.render("  "));
    }
    Ok(output::print(&text)?)
}
