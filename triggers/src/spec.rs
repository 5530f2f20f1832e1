//! Trigger objects as the API takes and stores them. Unknown fields are refused (a typo must not
//! silently mean a default), and every check names the field it failed on.

use crate::delivery::{DeliverySpec, parse_duration};
use serde::{Deserialize, Serialize};

/// A trigger: events from a source, delivered to a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// The trigger's name (a DNS label, like function names).
    pub name: String,
    /// The function events go to.
    pub function: String,
    /// Where events come from.
    pub source: SourceSpec,
    /// Retries, backoff, per-attempt timeout.
    #[serde(default)]
    pub delivery: DeliverySpec,
}

/// One source per kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// A Kafka consumer group on some topics.
    Kafka(KafkaSpec),
    /// A RabbitMQ queue.
    Rabbitmq(RabbitmqSpec),
}

/// Where a consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialOffset {
    /// The oldest record kept.
    Earliest,
    /// Only records produced from now on (Knative's default).
    #[default]
    Latest,
}

/// Per-partition order, or throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// One record of a partition at a time, in offset order; partitions in parallel.
    #[default]
    Ordered,
    /// Up to `max_in_flight` records at once per trigger, in any order.
    Unordered,
}

/// KafkaSource's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group; `wisp-<trigger>` when not given.
    #[serde(default)]
    pub group: Option<String>,
    /// Where to start when the group has no committed offset.
    #[serde(default)]
    pub from: InitialOffset,
    /// Ordered (default) or unordered delivery.
    #[serde(default)]
    pub ordering: Ordering,
    /// Records in flight at once in unordered mode (Knative's `max.poll.records`, 50).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// Topic that receives records whose last attempt failed.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

fn default_in_flight() -> u32 {
    50
}

/// RabbitmqSource's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqSpec {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: String,
    /// The queue to consume (declared, durable, if it does not exist).
    pub queue: String,
    /// An exchange to bind the queue to (declared, durable `topic`, if it does not exist).
    #[serde(default)]
    pub exchange: Option<String>,
    /// The binding's routing key (`#` when an exchange is given without one).
    #[serde(default)]
    pub routing_key: Option<String>,
    /// Messages in flight at once (the channel's QoS prefetch).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Exchange that receives messages whose last attempt failed. Without one, such a message
    /// is rejected without requeue (the queue's own dead-letter exchange gets it, if it has one).
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
}

fn default_prefetch() -> u16 {
    1
}

/// A setting that failed its check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trigger setting `{field}`: {message}")]
pub struct Invalid {
    /// The field, as the CLI flag or JSON key names it.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

/// Topic names Kafka accepts: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(field: &'static str, topic: &str) -> Result<(), Invalid> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{topic:?} is not a Kafka topic name ([a-zA-Z0-9._-], 1-249)")))
    }
}

/// AMQP short strings: at most 255 bytes.
fn check_amqp_name(field: &'static str, name: &str, allow_empty: bool) -> Result<(), Invalid> {
    if (!allow_empty && name.is_empty()) || name.len() > 255 {
        return Err(invalid(field, format!("{name:?} must be 1-255 bytes")));
    }
    Ok(())
}

impl TriggerSpec {
    /// Checks every field; the first failure names its field.
    pub fn validate(&self) -> Result<(), Invalid> {
        wisp_scheduler::validate_name(&self.name).map_err(|e| invalid("name", e.to_string()))?;
        wisp_scheduler::validate_name(&self.function).map_err(|e| invalid("fn", e.to_string()))?;
        self.delivery.validate().map_err(|(field, message)| invalid(field, message))?;
        match &self.source {
            SourceSpec::Kafka(k) => {
                if k.brokers.split(',').any(|b| b.trim().is_empty() || !b.contains(':')) {
                    return Err(invalid("kafka", format!("{:?} is not a list of host:port brokers", k.brokers)));
                }
                if k.topics.is_empty() {
                    return Err(invalid("topic", "at least one topic is required"));
                }
                for t in &k.topics {
                    check_topic("topic", t)?;
                }
                if let Some(t) = &k.dead_letter_topic {
                    check_topic("dead-letter-topic", t)?;
                    if k.topics.contains(t) {
                        return Err(invalid("dead-letter-topic", format!("{t:?} is also a consumed topic")));
                    }
                }
                if let Some(g) = &k.group
                    && (g.is_empty() || g.len() > 255)
                {
                    return Err(invalid("group", "must be 1-255 characters"));
                }
                if !(1..=10_000).contains(&k.max_in_flight) {
                    return Err(invalid("max-in-flight", format!("{} is not from 1 to 10000", k.max_in_flight)));
                }
            }
            SourceSpec::Rabbitmq(r) => {
                let url = r.url.as_str();
                if !url.starts_with("amqp://") {
                    return Err(invalid(
                        "rabbitmq",
                        "must be an amqp://user:pass@host:port/vhost URL (amqps is not supported)",
                    ));
                }
                url.parse::<lapin::uri::AMQPUri>().map_err(|e| invalid("rabbitmq", format!("not an AMQP URL: {e}")))?;
                check_amqp_name("queue", &r.queue, false)?;
                if let Some(x) = &r.exchange {
                    check_amqp_name("exchange", x, false)?;
                }
                if let Some(k) = &r.routing_key {
                    if r.exchange.is_none() {
                        return Err(invalid("routing-key", "needs --exchange"));
                    }
                    check_amqp_name("routing-key", k, true)?;
                }
                if let Some(x) = &r.dead_letter_exchange {
                    check_amqp_name("dead-letter-exchange", x, false)?;
                }
                if r.prefetch == 0 {
                    return Err(invalid("prefetch", "must be at least 1"));
                }
            }
        }
        Ok(())
    }

    /// The Kafka group, defaulted.
    pub fn kafka_group(&self, k: &KafkaSpec) -> String {
        k.group.clone().unwrap_or_else(|| format!("wisp-{}", self.name))
    }

    /// The spec as shown to users: the broker password replaced.
    pub fn redacted(&self) -> TriggerSpec {
        let mut spec = self.clone();
        if let SourceSpec::Rabbitmq(r) = &mut spec.source {
            r.url = redact_url(&r.url);
        }
        spec
    }
}

/// `amqp://user:secret@host/` -> `amqp://user:***@host/`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let mut out = format!("{scheme}://{user}:***@{host}");
    if let Some(p) = path {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// Parses a CLI duration flag into milliseconds, naming the flag on failure.
pub fn duration_ms(field: &'static str, value: &str) -> Result<u64, Invalid> {
    parse_duration(value).map(|d| d.as_millis() as u64).map_err(|m| invalid(field, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka() -> TriggerSpec {
        TriggerSpec {
            name: "orders".into(),
            function: "hello".into(),
            source: SourceSpec::Kafka(KafkaSpec {
                brokers: "127.0.0.1:9092".into(),
                topics: vec!["orders".into()],
                group: None,
                from: InitialOffset::Earliest,
                ordering: Ordering::Ordered,
                max_in_flight: 50,
                dead_letter_topic: Some("orders-dlq".into()),
            }),
            delivery: DeliverySpec::default(),
        }
    }

    #[test]
    fn bad_settings_name_their_field() {
        assert_eq!(kafka().validate(), Ok(()));
        let field = |f: fn(&mut TriggerSpec)| {
            let mut spec = kafka();
            f(&mut spec);
            spec.validate().unwrap_err().field
        };
        assert_eq!(field(|s| s.name = "Bad Name".into()), "name");
        assert_eq!(field(|s| s.function = "".into()), "fn");
        assert_eq!(field(|s| s.delivery.retries = 1000), "retries");
        let kafka_field = |f: fn(&mut KafkaSpec)| {
            field_of(kafka(), |s| {
                let SourceSpec::Kafka(k) = &mut s.source else { unreachable!() };
                f(k)
            })
        };
        assert_eq!(kafka_field(|k| k.brokers = "nohost".into()), "kafka");
        assert_eq!(kafka_field(|k| k.topics = vec![]), "topic");
        assert_eq!(kafka_field(|k| k.topics = vec!["a b".into()]), "topic");
        assert_eq!(kafka_field(|k| k.dead_letter_topic = Some("orders".into())), "dead-letter-topic");
        assert_eq!(kafka_field(|k| k.max_in_flight = 0), "max-in-flight");
    }

    fn field_of(mut spec: TriggerSpec, f: impl FnOnce(&mut TriggerSpec)) -> &'static str {
        f(&mut spec);
        spec.validate().unwrap_err().field
    }

    #[test]
    fn rabbitmq_urls_are_checked_and_redacted() {
        let spec = |url: &str| TriggerSpec {
            source: SourceSpec::Rabbitmq(RabbitmqSpec {
                url: url.into(),
                queue: "q".into(),
                exchange: None,
                routing_key: None,
                prefetch: 1,
                dead_letter_exchange: None,
            }),
            ..kafka()
        };
        assert_eq!(spec("amqp://guest:guest@127.0.0.1:5672/%2f").validate(), Ok(()));
        assert_eq!(spec("http://x").validate().unwrap_err().field, "rabbitmq");
        let SourceSpec::Rabbitmq(r) = spec("amqp://guest:secret@127.0.0.1:5672/vh").redacted().source else {
            unreachable!()
        };
        assert_eq!(r.url, "amqp://guest:***@127.0.0.1:5672/vh");
        assert_eq!(redact_url("amqp://localhost"), "amqp://localhost");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"name":"t","function":"f","source":{"kafka":{"brokers":"a:1","topics":["t"],"grup":"x"}}}"#;
        let err = serde_json::from_str::<TriggerSpec>(json).unwrap_err().to_string();
        assert!(err.contains("unknown field `grup`"), "{err}");
    }
}
