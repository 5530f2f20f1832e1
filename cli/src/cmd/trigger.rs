use crate::client::{self, Client};
use crate::human;
use crate::output::{self, Output};
use crate::table::{self, Table};
use wisp_triggers::spec::duration_ms;
use wisp_triggers::{
    BackoffPolicy, DeliverySpec, InitialOffset, KafkaSpec, Ordering, RabbitmqSpec, SourceSpec, TriggerSpec, TriggerView,
};

/// Bind functions to Kafka topics and RabbitMQ queues (events arrive as CloudEvents)
#[derive(clap::Args, Debug)]
pub struct TriggerArgs {
    #[command(subcommand)]
    command: TriggerCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TriggerCommand {
    Create(Box<CreateArgs>),
    #[command(visible_alias = "list")]
    Ls,
    Describe {
        name: String,
    },
    #[command(visible_alias = "delete")]
    Rm {
        name: String,
    },
}

/// Create a trigger: consume a Kafka topic (--kafka) or a RabbitMQ queue (--rabbitmq) and deliver
/// each record to a function, at least once, acknowledged only after the function answered 2xx
/// or the event went to the dead-letter destination
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["kafka", "rabbitmq"]))]
struct CreateArgs {
    /// Trigger name
    name: String,
    /// The function events go to
    #[arg(long = "fn", value_name = "FUNCTION")]
    function: String,
    /// Kafka bootstrap servers, host:port[,host:port]
    #[arg(long, value_name = "BROKERS", help_heading = "Kafka")]
    kafka: Option<String>,
    /// Topics to consume, comma-separated
    #[arg(long, value_name = "T[,T2]", value_delimiter = ',', requires = "kafka", help_heading = "Kafka")]
    topic: Vec<String>,
    /// Consumer group [default: wisp-NAME]
    #[arg(long, requires = "kafka", help_heading = "Kafka")]
    group: Option<String>,
    /// Where a group with no committed offset starts: earliest or latest
    #[arg(long, default_value = "latest", value_name = "WHERE", requires = "kafka", help_heading = "Kafka")]
    from: String,
    /// ordered (one record per partition at a time) or unordered (up to --max-in-flight at once)
    #[arg(long, default_value = "ordered", requires = "kafka", help_heading = "Kafka")]
    ordering: String,
    /// Records in flight at once in unordered mode
    #[arg(long, default_value_t = 50, value_name = "N", requires = "kafka", help_heading = "Kafka")]
    max_in_flight: u32,
    /// Topic that receives records whose last attempt failed
    #[arg(long, value_name = "T", requires = "kafka", help_heading = "Kafka")]
    dead_letter_topic: Option<String>,
    /// RabbitMQ URL, amqp://user:pass@host:port/vhost
    #[arg(long, value_name = "URL", help_heading = "RabbitMQ")]
    rabbitmq: Option<String>,
    /// Queue to consume (declared, durable, if missing)
    #[arg(long, value_name = "Q", requires = "rabbitmq", help_heading = "RabbitMQ")]
    queue: Option<String>,
    /// Exchange to bind the queue to
    #[arg(long, value_name = "X", requires = "rabbitmq", help_heading = "RabbitMQ")]
    exchange: Option<String>,
    /// Routing key of the binding [default: #]
    #[arg(long, value_name = "K", requires = "exchange", help_heading = "RabbitMQ")]
    routing_key: Option<String>,
    /// Messages in flight at once
    #[arg(long, default_value_t = 1, value_name = "N", requires = "rabbitmq", help_heading = "RabbitMQ")]
    prefetch: u16,
    /// Exchange that receives messages whose last attempt failed
    #[arg(long, value_name = "X", requires = "rabbitmq", help_heading = "RabbitMQ")]
    dead_letter_exchange: Option<String>,
    /// Retries after the first attempt (5xx, 404, 408, 409, 429 and timeouts are retried)
    #[arg(long, default_value_t = 3, value_name = "N", help_heading = "Delivery")]
    retries: u32,
    /// Backoff unit: 200ms, 1s, PT0.2S...
    #[arg(long, default_value = "1s", value_name = "DURATION", help_heading = "Delivery")]
    backoff: String,
    /// exponential (2d, 4d, 8d...) or linear (d, 2d, 3d...)
    #[arg(long, default_value = "exponential", value_name = "POLICY", help_heading = "Delivery")]
    backoff_policy: String,
    /// How long one attempt may take
    #[arg(long, default_value = "30s", value_name = "DURATION", help_heading = "Delivery")]
    timeout: String,
}

fn parse_choice<T>(flag: &str, value: &str, choices: &[(&str, T)]) -> anyhow::Result<T>
where
    T: Copy,
{
    choices.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
        anyhow::anyhow!("--{flag}: {value:?} is not one of {}", names.join(", "))
    })
}

impl CreateArgs {
    fn spec(self) -> anyhow::Result<TriggerSpec> {
        let delivery = DeliverySpec {
            retries: self.retries,
            backoff_ms: duration_ms("backoff", &self.backoff)?,
            backoff_policy: BackoffPolicy::parse(&self.backoff_policy)
                .map_err(|e| anyhow::anyhow!("--backoff-policy: {e}"))?,
            timeout_ms: duration_ms("timeout", &self.timeout)?,
        };
        let source = match (self.kafka, self.rabbitmq) {
            (Some(brokers), None) => {
                anyhow::ensure!(!self.topic.is_empty(), "--kafka needs --topic");
                SourceSpec::Kafka(KafkaSpec {
                    brokers,
                    topics: self.topic,
                    group: self.group,
                    from: parse_choice(
                        "from",
                        &self.from,
                        &[("earliest", InitialOffset::Earliest), ("latest", InitialOffset::Latest)],
                    )?,
                    ordering: parse_choice(
                        "ordering",
                        &self.ordering,
                        &[("ordered", Ordering::Ordered), ("unordered", Ordering::Unordered)],
                    )?,
                    max_in_flight: self.max_in_flight,
                    dead_letter_topic: self.dead_letter_topic,
                })
            }
            (None, Some(url)) => SourceSpec::Rabbitmq(RabbitmqSpec {
                url,
                queue: self.queue.ok_or_else(|| anyhow::anyhow!("--rabbitmq needs --queue"))?,
                exchange: self.exchange,
                routing_key: self.routing_key,
                prefetch: self.prefetch,
                dead_letter_exchange: self.dead_letter_exchange,
            }),
            _ => anyhow::bail!("give exactly one of --kafka and --rabbitmq"),
        };
        Ok(TriggerSpec { name: self.name, function: self.function, source, delivery })
    }
}

pub fn run(client: &Client, output: Output, args: TriggerArgs) -> anyhow::Result<()> {
    match args.command {
        TriggerCommand::Create(create) => {
            let spec = serde_json::to_vec(&create.spec()?)?;
            let req = client.admin("POST", "/v1/triggers").set("content-type", "application/json");
            let body = client.text(req, Some(&spec))?;
            if output == Output::Json {
                return Ok(output::print(&body)?);
            }
            let view: TriggerView = client::parse(&body)?;
            Ok(output::print(&format!("created trigger {} -> {}", view.spec.name, view.spec.function))?)
        }
        TriggerCommand::Ls => {
            let body = client.get("/v1/triggers")?;
            if output == Output::Json {
                return Ok(output::print(&body)?);
            }
            #[derive(serde::Deserialize)]
            struct List {
                triggers: Vec<TriggerView>,
            }
            let list: List = client::parse(&body)?;
            if list.triggers.is_empty() {
                eprintln!("no triggers");
                return Ok(());
            }
            let now = human::now_ms();
            let mut table = Table::new(&["NAME", "SOURCE", "FUNCTION", "STATE", "DELIVERED", "DEAD-LETTERED", "AGE"]);
            for t in &list.triggers {
                table.row(vec![
                    t.spec.name.clone(),
                    source_summary(&t.spec.source),
                    t.spec.function.clone(),
                    state_text(t),
                    t.status.delivered.to_string(),
                    t.status.dead_lettered.to_string(),
                    human::age(t.created_at_ms, now),
                ]);
            }
            Ok(output::print(&table.render(""))?)
        }
        TriggerCommand::Describe { name } => {
            let body = client.get(&format!("/v1/triggers/{}", client::segment(&name)))?;
            if output == Output::Json {
                return Ok(output::print(&body)?);
            }
            Ok(output::print(&describe(&client::parse(&body)?))?)
        }
        TriggerCommand::Rm { name } => {
            let req = client.admin("DELETE", &format!("/v1/triggers/{}", client::segment(&name)));
            let body = client.text(req, None)?;
            if output == Output::Json {
                return Ok(output::print(&body)?);
            }
            Ok(output::print(&format!("deleted trigger {name}"))?)
        }
    }
}

fn source_summary(source: &SourceSpec) -> String {
    match source {
        SourceSpec::Kafka(k) => format!("kafka:{}", k.topics.join(",")),
        SourceSpec::Rabbitmq(r) => format!("rabbitmq:{}", r.queue),
    }
}

fn state_text(t: &TriggerView) -> String {
    serde_json::to_value(t.status.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn describe(t: &TriggerView) -> String {
    let s = &t.status;
    let d = &t.spec.delivery;
    let mut pairs = vec![
        ("name", t.spec.name.clone()),
        ("function", t.spec.function.clone()),
        ("created", human::utc(t.created_at_ms)),
        ("state", state_text(t)),
        ("last error", s.last_error.clone().unwrap_or_else(|| "-".into())),
        ("delivered", s.delivered.to_string()),
        ("retried", s.retried.to_string()),
        ("dead-lettered", s.dead_lettered.to_string()),
        ("dropped", s.dropped.to_string()),
    ];
    match &t.spec.source {
        SourceSpec::Kafka(k) => {
            pairs.push(("kafka", k.brokers.clone()));
            pairs.push(("topics", k.topics.join(",")));
            pairs.push(("group", t.spec.kafka_group(k)));
            pairs.push(("ordering", format!("{:?}", k.ordering).to_lowercase()));
            pairs.push(("dead-letter topic", k.dead_letter_topic.clone().unwrap_or_else(|| "-".into())));
        }
        SourceSpec::Rabbitmq(r) => {
            pairs.push(("rabbitmq", r.url.clone()));
            pairs.push(("queue", r.queue.clone()));
            if let Some(x) = &r.exchange {
                pairs.push(("exchange", format!("{x} ({})", r.routing_key.as_deref().unwrap_or("#"))));
            }
            pairs.push(("prefetch", r.prefetch.to_string()));
            pairs.push(("dead-letter exchange", r.dead_letter_exchange.clone().unwrap_or_else(|| "-".into())));
            pairs.push(("queue depth", s.queue_depth.map_or_else(|| "-".into(), |d| d.to_string())));
        }
    }
    pairs.push((
        "delivery",
        format!(
            "{} retries, {:?} backoff from {}, {} per attempt",
            d.retries,
            d.backoff_policy,
            human::duration_ms(d.backoff_ms),
            human::duration_ms(d.timeout_ms)
        )
        .to_lowercase(),
    ));
    let mut text = table::key_values(&pairs, "");
    if !s.lag.is_empty() {
        text.push_str("lag:\n");
        let mut lag = Table::new(&["TOPIC", "PARTITION", "LAG"]);
        for p in &s.lag {
            lag.row(vec![p.topic.clone(), p.partition.to_string(), p.lag.to_string()]);
        }
        text.push_str(&lag.render("  "));
    }
    text
}
