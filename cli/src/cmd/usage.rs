use crate::api::Usage;
use crate::client::Client;
use crate::human;
use crate::output::{self, Output};
use crate::table::Table;

/// Show metered usage: a summary per function, optionally grouped by hour, day or function,
/// and the newest invocation records
#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// Only this function (a name in --namespace, or namespace/name)
    #[arg(long, visible_alias = "fn", value_name = "NAME")]
    pub function: Option<String>,
    /// Only this namespace
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// From this date or time (2026-11-22, 2026-11-22T03:00:00Z), rounded down to the hour
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Up to this date or time (exclusive), rounded up to the hour
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Also show usage per hour, day or function
    #[arg(long, value_name = "GROUP", value_parser = ["hour", "day", "function"])]
    pub by: Option<String>,
    /// Also list the N newest invocation records
    #[arg(long, value_name = "N")]
    pub records: Option<u64>,
}

pub fn run(client: &Client, output: Output, args: UsageArgs) -> anyhow::Result<()> {
    let mut req = client.admin("GET", "/v1/usage");
    let params = [
        ("function", &args.function),
        ("namespace", &args.namespace),
        ("from", &args.from),
        ("to", &args.to),
        ("by", &args.by),
    ];
    for (name, value) in params {
        if let Some(value) = value {
            req = req.query(name, value);
        }
    }
    // Records cost a read of the raw table: only when asked for.
    req = req.query("limit", &args.records.unwrap_or(0).to_string());
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

    if !usage.series.is_empty() {
        let mut t = Table::new(&[
            if args.by.as_deref() == Some("function") { "FUNCTION" } else { "START" },
            "INVOCATIONS",
            "FAILED",
            "BILLED-MS",
            "GB-S",
            "CPU-MS",
            "REQ-BYTES",
            "RESP-BYTES",
            "OUTBOUND",
        ]);
        for b in &usage.series {
            t.row(vec![
                b.function.clone().or_else(|| b.start.clone()).unwrap_or_default(),
                b.invocations.to_string(),
                b.failed.to_string(),
                b.billed_ms.to_string(),
                wisp_ledger::decimal(b.billed_kib_ms.into(), wisp_ledger::KIB_MS_PER_GB_S),
                wisp_ledger::decimal(b.cpu_us.into(), 1000),
                human::size(b.request_bytes),
                human::size(b.response_bytes),
                human::size(b.outbound_bytes),
            ]);
        }
        if !text.is_empty() {
            text.push('\n');
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
