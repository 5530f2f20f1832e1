//! Placeholder for `wisp up`; the real implementation replaces this file.

/// Run a Wisp node in the foreground
#[derive(clap::Args, Debug)]
pub struct UpArgs {}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("not yet")
}
