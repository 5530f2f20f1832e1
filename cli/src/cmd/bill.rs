use crate::client::Client;
use crate::output::{self, Output};
use crate::table::Table;
use wisp_ledger::Bill;

/// Show a month's bill: line items per namespace, function and meter (requests, GB-seconds,
/// CPU-ms), priced with the node's plans in exact micro-units, and totals
#[derive(clap::Args, Debug)]
pub struct BillArgs {
    /// The month, UTC: 2026-11
    #[arg(long, value_name = "YYYY-MM")]
    pub period: String,
    /// Only this namespace
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
}

pub fn run(client: &Client, output: Output, args: BillArgs) -> anyhow::Result<()> {
    let mut req = client.admin("GET", "/v1/bill").query("period", &args.period);
    if let Some(namespace) = &args.namespace {
        req = req.query("namespace", namespace);
    }
    let body = client.text(req, None)?;
    if output == Output::Json {
        return Ok(output::print(&body)?);
    }
    let bill: Bill = crate::client::parse(&body)?;
    let mut text = format!("period {} ({} to {})\n\n", bill.period, bill.from, bill.to);
    if bill.lines.is_empty() {
        text.push_str("no usage in this period\n");
        return Ok(output::print(&text)?);
    }
    let mut t = Table::new(&["NAMESPACE", "FUNCTION", "METER", "QUANTITY", "UNIT PRICE", "AMOUNT"]);
    for l in &bill.lines {
        t.row(vec![
            l.namespace.clone(),
            l.function.clone(),
            l.meter.clone(),
            format!("{} {}", l.quantity, l.unit),
            format!("{} {} / {}", l.unit_price, l.currency, l.price_per),
            format!("{} {}", l.amount, l.currency),
        ]);
    }
    text.push_str(&t.render(""));
    text.push('\n');
    let mut t = Table::new(&["NAMESPACE", "PLAN", "TOTAL"]);
    for n in &bill.namespaces {
        t.row(vec![n.namespace.clone(), n.plan.clone(), format!("{} {}", n.amount, n.currency)]);
    }
    for c in &bill.totals {
        t.row(vec!["(all)".into(), "-".into(), format!("{} {}", c.amount, c.currency)]);
    }
    text.push_str(&t.render(""));
    text.push_str(&format!("\n{}\n", bill.rounding));
    Ok(output::print(&text)?)
}
