//! What the ledger stores: one record per invocation, one per replica lifetime, and their
//! vocabulary (outcomes, sources, runtimes).

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::sync::Arc;

/// Declares a closed set of names stored as lowercase text: `ALL`, `as_str`, `parse`,
/// `Display`, serde as the lowercase name, and a lenient reader for report clients.
macro_rules! names {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),*].len()] = [$($name::$variant),*];

            /// The stored (and serialized) name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// The value with this stored name (exact, lowercase).
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names! {
    /// How an invocation ended, as metered. Serialized lowercase: `ok`, `error`, `trap`,
    /// `timeout`, `memory`, `rejected`, `cancelled`.
    pub enum Outcome {
        /// The function produced a response (whatever its status).
        Ok => "ok",
        /// The function answered with an error instead of a response, or an oversized one.
        Error => "error",
        /// The function trapped.
        Trap => "trap",
        /// The function ran past its timeout.
        Timeout => "timeout",
        /// The function ran out of memory.
        Memory => "memory",
        /// Refused before running: request too large, or no instance could be had.
        Rejected => "rejected",
        /// The caller went away before the invocation finished.
        Cancelled => "cancelled",
    }
}

names! {
    /// What triggered an invocation. Serialized lowercase: `http`, `kafka`, `rabbitmq`, `async`.
    pub enum Source {
        /// A request to `/fn/...`.
        Http => "http",
        /// A Kafka record.
        Kafka => "kafka",
        /// A RabbitMQ message.
        Rabbitmq => "rabbitmq",
        /// An asynchronous invocation.
        Async => "async",
    }
}

impl Default for Source {
    /// Rows from before sources existed were all HTTP (the column's default too).
    fn default() -> Self {
        Source::Http
    }
}

names! {
    /// What ran an invocation. Serialized lowercase: `wasm`, `container`.
    pub enum Runtime {
        /// A WebAssembly component.
        Wasm => "wasm",
        /// An OCI image run by crun.
        Container => "container",
    }
}

impl Default for Runtime {
    /// Rows from before container functions existed were all WebAssembly (the column's
    /// default too).
    fn default() -> Self {
        Runtime::Wasm
    }
}

impl Outcome {
    /// Stored names this release does not know (a newer writer) read as a failure: `ok` is the
    /// only outcome billed as a success, so an unknown one must not count as one.
    pub(crate) fn parse_lenient(s: &str) -> Outcome {
        Outcome::parse(&s.to_ascii_lowercase()).unwrap_or(Outcome::Error)
    }
}

impl Source {
    /// Stored names this release does not know read as the default source.
    pub(crate) fn parse_lenient(s: &str) -> Source {
        Source::parse(&s.to_ascii_lowercase()).unwrap_or_default()
    }
}

impl Runtime {
    /// Stored names this release does not know read as the default runtime.
    pub(crate) fn parse_lenient(s: &str) -> Runtime {
        Runtime::parse(&s.to_ascii_lowercase()).unwrap_or_default()
    }
}

/// Report clients must not fail on a value a newer server added.
pub(crate) fn lenient_outcome<'de, D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
    Ok(Outcome::parse_lenient(&String::deserialize(d)?))
}

/// Report clients must not fail on a value a newer server added.
pub(crate) fn lenient_source<'de, D: Deserializer<'de>>(d: D) -> Result<Source, D::Error> {
    Ok(Source::parse_lenient(&String::deserialize(d)?))
}

/// Report clients must not fail on a value a newer server added.
pub(crate) fn lenient_runtime<'de, D: Deserializer<'de>>(d: D) -> Result<Runtime, D::Error> {
    Ok(Runtime::parse_lenient(&String::deserialize(d)?))
}

/// What triggered one invocation: its source, and for event sources the trigger and the event id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The kind of source.
    pub source: Source,
    /// The trigger that delivered the event (Kafka and RabbitMQ sources).
    pub trigger: Option<Arc<str>>,
    /// The event's id: a CloudEvent id, or an async invocation's id.
    pub event_id: Option<Arc<str>>,
}

impl From<Source> for Origin {
    fn from(source: Source) -> Self {
        Origin { source, trigger: None, event_id: None }
    }
}

/// Exactly one per invocation.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// The function's name.
    pub function: Arc<str>,
    /// The revision that ran.
    pub revision: u64,
    /// What triggered it.
    pub source: Source,
    /// Unix time in milliseconds when the invocation started.
    pub start_ms: u64,
    /// Wall time, microseconds.
    pub wall_us: u64,
    /// Whether it had to start an instance.
    pub cold: bool,
    /// Highest linear memory the instance reached.
    pub peak_memory_bytes: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
    /// The function's HTTP status; 0 when it produced no response (the outcome says why).
    pub status: u16,
    /// The trigger that delivered the event (Kafka and RabbitMQ sources).
    pub trigger: Option<Arc<str>>,
    /// The event's id: the CloudEvent id a trigger sent, or an async invocation's id.
    pub event_id: Option<Arc<str>>,
    /// What ran it.
    pub runtime: Runtime,
    /// The memory the function was configured with (what GB-seconds are billed on).
    pub memory_bytes: u64,
    /// CPU time the invocation used, microseconds (0 where not metered per invocation).
    pub cpu_us: u64,
    /// Bytes sent and received over granted outbound HTTP.
    pub outbound_bytes: u64,
}

/// One replica's lifetime, for billing replicas that stay up between requests (container
/// functions): written once, when the replica stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaUsage {
    /// The function's name.
    pub function: Arc<str>,
    /// The revision the replica ran.
    pub revision: u64,
    /// The replica's id (the container id).
    pub replica: Arc<str>,
    /// Unix time in milliseconds when the replica started.
    pub start_ms: u64,
    /// Unix time in milliseconds when it stopped. An end before the start counts as no time.
    pub end_ms: u64,
    /// CPU time the replica used (its cgroup's), milliseconds; 0 where the host has no cgroups.
    pub cpu_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(o.to_string(), o.as_str());
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
        }
        assert_eq!(Outcome::ALL.len(), 7);
        assert_eq!(Outcome::parse("bogus"), None);
        assert_eq!(Outcome::parse("OK"), None);
        assert_eq!(Outcome::parse_lenient("OK"), Outcome::Ok);
        assert_eq!(Outcome::parse_lenient("exploded"), Outcome::Error);
    }

    #[test]
    fn source_names_round_trip() {
        for s in Source::ALL {
            assert_eq!(Source::parse(s.as_str()), Some(s));
            assert_eq!(s.to_string(), s.as_str());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Source>(&json).unwrap(), s);
        }
        let names: Vec<_> = Source::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["http", "kafka", "rabbitmq", "async"]);
        assert_eq!(Source::parse("grpc"), None);
        assert_eq!(Source::parse_lenient("grpc"), Source::Http);
    }

    #[test]
    fn runtime_names_round_trip() {
        for r in Runtime::ALL {
            assert_eq!(Runtime::parse(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<Runtime>(&json).unwrap(), r);
        }
        let names: Vec<_> = Runtime::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["wasm", "container"]);
        assert_eq!(Runtime::default(), Runtime::Wasm);
        assert_eq!(Runtime::parse("firecracker"), None);
        assert_eq!(Runtime::parse_lenient("CONTAINER"), Runtime::Container);
        assert_eq!(Runtime::parse_lenient("firecracker"), Runtime::Wasm);
    }
}
