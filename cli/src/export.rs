//! `wisp up`'s usage-export flags, and the exporter's metrics. The exporter itself lives in the
//! ledger crate (the ledger's raw tables are its outbox).

use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wisp_ledger::{ExportConfig, Exporter, MAX_EXPORT_BATCH};
use wisp_scheduler::parse_duration;

/// Usage export: every invocation (and container replica lifetime) as a CloudEvent, POSTed in
/// batches to a webhook from the ledger (at least once, with stable event ids)
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Usage export")]
pub struct ExportArgs {
    /// Webhook that receives usage as `application/cloudevents-batch+json` (OpenMeter's
    /// `/api/v1/events` takes it as is); unset: no export
    #[arg(long, value_name = "URL")]
    usage_export_url: Option<String>,
    /// File holding the key that signs each batch (HMAC-SHA256, header `X-Wisp-Signature-256: sha256=HEX`)
    #[arg(long, value_name = "FILE", requires = "usage_export_url")]
    usage_export_signing_key_file: Option<PathBuf>,
    /// File holding a token sent as `Authorization: Bearer` with each batch
    #[arg(long, value_name = "FILE", requires = "usage_export_url")]
    usage_export_token_file: Option<PathBuf>,
    /// The events' CloudEvents `source` [default: wisp://HOSTNAME]
    #[arg(long, value_name = "URI", requires = "usage_export_url")]
    usage_export_source: Option<String>,
    /// Events per POST at most
    #[arg(long, default_value_t = 100, value_name = "N")]
    usage_export_batch: usize,
    /// How often the ledger is checked for new usage when the last check found none
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    usage_export_interval: String,
    /// Longest wait between retries of a failed POST (the wait doubles from 1s, or from this if lower)
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    usage_export_max_backoff: String,
    /// Time limit of one POST
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    usage_export_timeout: String,
}

impl ExportArgs {
    /// The exporter's configuration, or `None` without `--usage-export-url`. Checks every flag
    /// (and reads the key files) before the node starts.
    pub fn config(&self) -> anyhow::Result<Option<ExportConfig>> {
        let Some(url) = &self.usage_export_url else { return Ok(None) };
        let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        anyhow::ensure!(
            host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')),
            "--usage-export-url {url:?}: expected an http:// or https:// URL"
        );
        anyhow::ensure!(
            (1..=MAX_EXPORT_BATCH).contains(&self.usage_export_batch),
            "--usage-export-batch must be from 1 to {MAX_EXPORT_BATCH}"
        );
        let source = match &self.usage_export_source {
            Some(source) => source.clone(),
            None => format!("wisp://{}", hostname()),
        };
        let mut config = ExportConfig::new(url.clone(), source);
        config.signing_key = self.usage_export_signing_key_file.as_deref().map(read_secret).transpose()?;
        config.bearer_token = self
            .usage_export_token_file
            .as_deref()
            .map(read_secret)
            .transpose()?
            .map(|t| String::from_utf8(t).context("--usage-export-token-file: the token is not UTF-8"))
            .transpose()?;
        config.batch_size = self.usage_export_batch;
        config.poll_interval = duration("--usage-export-interval", &self.usage_export_interval)?;
        config.max_backoff = duration("--usage-export-max-backoff", &self.usage_export_max_backoff)?;
        config.min_backoff = config.min_backoff.min(config.max_backoff);
        config.request_timeout = duration("--usage-export-timeout", &self.usage_export_timeout)?;
        Ok(Some(config))
    }
}

fn duration(flag: &str, value: &str) -> anyhow::Result<std::time::Duration> {
    let d = parse_duration(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    anyhow::ensure!(!d.is_zero(), "{flag} must be above 0");
    Ok(d)
}

/// A key or token file: its content without a trailing newline; empty is refused.
fn read_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    anyhow::ensure!(!bytes.is_empty(), "{} is empty", path.display());
    Ok(bytes)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Starts the exporter (after the ledger is open), registering its metrics; without a
/// configuration, releases the rows an earlier export held back from retention.
pub fn start(
    config: Option<ExportConfig>,
    data_dir: &Path,
    registry: &mut Registry,
) -> anyhow::Result<Option<Arc<Exporter>>> {
    let Some(config) = config else {
        wisp_ledger::disable_export(data_dir).context("usage export: clearing the export cursor")?;
        return Ok(None);
    };
    let url = config.url.clone();
    let exporter = Arc::new(Exporter::start(data_dir, config).context("starting the usage export")?);
    registry.register_collector(Box::new(ExportCollector(Arc::downgrade(&exporter))));
    // stdout's first line is the listening address (scripts read it).
    tracing::info!(%url, "usage export on");
    Ok(Some(exporter))
}

#[derive(Debug)]
struct ExportCollector(std::sync::Weak<Exporter>);

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(exporter) = self.0.upgrade() else { return Ok(()) };
        let stats = exporter.stats();
        for (name, help, value) in [
            ("wisp_usage_export_events", "Usage events the webhook accepted", stats.exported_total),
            ("wisp_usage_export_failures", "Usage export POSTs that failed (each is retried)", stats.failures_total),
        ] {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let g = ConstGauge::new(stats.pending as i64);
        let help = "Usage rows in the ledger not exported yet";
        g.encode(encoder.encode_descriptor("wisp_usage_export_pending", help, None, g.metric_type())?)
    }
}
