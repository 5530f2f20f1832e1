use crate::api::FunctionList;
use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};
use crate::table::Table;

/// List the deployed functions
#[derive(clap::Args, Debug)]
pub struct LsArgs {}

pub fn run(client: &Client, output: Output, _args: LsArgs) -> anyhow::Result<()> {
    let body = client.get("/v1/functions")?;
    if output == Output::Json {
        return Ok(output::print(&body)?);
    }
    let list: FunctionList = client::parse(&body)?;
    if list.functions.is_empty() {
        eprintln!("no functions deployed");
        return Ok(());
    }
    let now = human::now_ms();
    let mut table = Table::new(&["NAME", "REVISION", "READY", "IN-FLIGHT", "MIN-WARM", "MEMORY", "TIMEOUT", "AGE"]);
    for f in &list.functions {
        table.row(vec![
            f.name.clone(),
            f.revision.to_string(),
            f.ready_instances.to_string(),
            f.in_flight.to_string(),
            f.settings.min_warm.to_string(),
            human::size(f.settings.memory_bytes),
            human::duration_ms(f.settings.timeout_ms),
            human::age(f.created_at_ms, now),
        ]);
    }
    Ok(output::print(&table.render(""))?)
}
