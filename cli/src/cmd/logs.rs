use crate::client::{self, Client};
use crate::output::{self, Output};

/// Print a function's captured guest stdout/stderr (bounded, newest last)
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Function name
    pub name: String,
}

pub fn run(client: &Client, _output: Output, args: LogsArgs) -> anyhow::Result<()> {
    let text = client.get(&format!("/v1/functions/{}/logs", client::segment(&args.name)))?;
    Ok(output::print(&text)?)
}
