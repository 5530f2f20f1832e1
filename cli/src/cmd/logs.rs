use crate::client::{self, Client};
use crate::output::{self, Output};

/// Print a function's captured guest stdout/stderr (bounded, newest last)
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Function name
    pub name: String,
    /// Namespace of the function
    #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
}

pub fn run(client: &Client, _output: Output, args: LogsArgs) -> anyhow::Result<()> {
    let req = client.admin("GET", &format!("/v1/functions/{}/logs", client::segment(&args.name)));
    let text = client.text(super::with_namespace(req, &args.namespace), None)?;
    Ok(output::print(&text)?)
}
