use crate::api::Usage;
use crate::client::Client;
use crate::human;
use crate::output::{self, Output};
use crate::table::Table;

/// Show metered usage: a summary per function, optionally the newest invocation records
#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// Only this function
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Also list the N newest invocation records
    #[arg(long, value_name = "N")]
    pub records: Option<u64>,
}

pub fn run(client: &Client, output: Output, args: UsageArgs) -> anyhow::Result<()> {
    let mut req = client.admin("GET", "/v1/usage");
    if let Some(function) = &args.function {
        req = req.query("function", function);
    }
    if let Some(n) = args.records {
        req = req.query("limit", &n.to_string());
    }
    let body = client.text(req, None)?;
    if output == Output::Json {
        return Ok(output::print(&body)?);
    }
    let usage: Usage = crate::client::parse(&body)?;

    let mut text = String::new();
    if usage.summary.is_empty() {
        eprintln!("no usage recorded");
    } else {
        let mut t = Table::new(&[
            "FUNCTION",
            "INVOCATIONS",
            "COLD",
            "OK",
            "FAILED",
            "WALL-MS",
            "AVG-US",
            "REQ-BYTES",
            "RESP-BYTES",
            "PEAK-MEM",
            "RUNTIME",
            "REPLICA-S",
        ]);
        for s in &usage.summary {
            let runtimes: Vec<&str> = s.by_runtime.keys().map(String::as_str).collect();
            let avg = match s.invocations {
                0 => "-".to_owned(),
                n => (s.wall_us_total / n).to_string(),
            };
            t.row(vec![
                s.function.clone(),
                s.invocations.to_string(),
                s.cold_starts.to_string(),
                s.ok.to_string(),
                s.failed.to_string(),
                format!("{:.1}", s.wall_us_total as f64 / 1000.0),
                avg,
                human::size(s.request_bytes),
                human::size(s.response_bytes),
                human::size(s.peak_memory_bytes_max),
                if runtimes.is_empty() { "-".to_owned() } else { runtimes.join(",") },
                match (s.replica_ms, s.replica_cpu_ms) {
                    (0, _) => "-".to_owned(),
                    (up, cpu) => format!("{:.1} (cpu {:.1})", up as f64 / 1000.0, cpu as f64 / 1000.0),
                },
            ]);
        }
        text.push_str(&t.render(""));
    }

    if args.records.is_some() && !usage.records.is_empty() {
        let now = human::now_ms();
        let mut t = Table::new(&[
            "ID",
            "FUNCTION",
            "REVISION",
            "SOURCE",
            "AGE",
            "OUTCOME",
            "STATUS",
            "COLD",
            "RUNTIME",
            "WALL-US",
            "REQ-BYTES",
            "RESP-BYTES",
            "PEAK-MEM",
            "EVENT",
        ]);
        for r in &usage.records {
            t.row(vec![
                r.id.to_string(),
                r.function.clone(),
                r.revision.to_string(),
                match &r.trigger {
                    Some(trigger) => format!("{}:{trigger}", r.source),
                    None => r.source.to_string(),
                },
                human::age(r.start_ms, now),
                r.outcome.to_string(),
                if r.status == 0 { "-".to_owned() } else { r.status.to_string() },
                if r.cold { "yes" } else { "no" }.to_owned(),
                r.runtime.to_string(),
                r.wall_us.to_string(),
                human::size(r.request_bytes),
                human::size(r.response_bytes),
                human::size(r.peak_memory_bytes),
                r.event_id.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&t.render(""));
    }
    Ok(output::print(&text)?)
}
