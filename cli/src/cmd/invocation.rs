use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};
use crate::table;
use wisp_triggers::InvocationView;

/// Show an async invocation: its state, attempts, the function's response and the callback's
#[derive(clap::Args, Debug)]
pub struct InvocationArgs {
    /// Invocation id (printed by `wisp invoke --async`)
    pub id: String,
}

pub fn run(client: &Client, output: Output, args: InvocationArgs) -> anyhow::Result<()> {
    let body = client.get(&format!("/v1/invocations/{}", client::segment(&args.id)))?;
    if output == Output::Json {
        return Ok(output::print(&body)?);
    }
    let v: InvocationView = client::parse(&body)?;
    let text = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let mut pairs = vec![
        ("id", v.id.clone()),
        ("function", v.function.clone()),
        ("state", serde_json::to_value(v.state)?.as_str().unwrap_or_default().to_string()),
        ("attempts", v.attempts.to_string()),
        ("submitted", human::utc(v.created_at_ms)),
        ("finished", text(v.finished_at_ms.map(human::utc))),
        ("status", text(v.status.map(|s| s.to_string()))),
        ("error", text(v.error.clone())),
    ];
    if let Some(cb) = &v.callback {
        pairs.push(("callback", format!("{} ({}, {} attempts)", cb.url, cb.state, cb.attempts)));
    }
    let mut out = table::key_values(&pairs, "");
    if let Some(body) = v.response_body.or(v.response_body_base64.map(|b| format!("(base64) {b}"))) {
        out.push_str("response:\n");
        out.push_str(&body);
        if !body.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(output::print(&out)?)
}
