use crate::api::Deleted;
use crate::client::{self, Client};
use crate::output::{self, Output};

/// Delete a function and all its revisions
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Function name
    pub name: String,
    /// Namespace of the function
    #[arg(short = 'n', long, default_value = wisp_scheduler::DEFAULT_NAMESPACE, value_name = "NS")]
    pub namespace: String,
}

pub fn run(client: &Client, output: Output, args: RmArgs) -> anyhow::Result<()> {
    let req = client.admin("DELETE", &format!("/v1/functions/{}", client::segment(&args.name)));
    let req = super::with_namespace(req, &args.namespace);
    let body = client.text(req, None)?;
    if output == Output::Json {
        return Ok(output::print(&body)?);
    }
    let answer: Deleted = client::parse(&body)?;
    let name = if answer.deleted.is_empty() { args.name } else { answer.deleted };
    Ok(output::print(&format!("deleted {name}"))?)
}
