//! The scheduler's errors, each with a [`ErrorKind`]: the one vocabulary the gateway maps to
//! HTTP statuses (exhaustively, in one place) and triggers map to retry decisions.

use std::path::PathBuf;
use wisp_runtime::wasm::DeployError;

/// What kind of failure an error is, independent of the transport that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is invalid (name, setting, component, request).
    Invalid,
    /// No such function.
    NotFound,
    /// A body is larger than its limit.
    TooLarge,
    /// The function is at its concurrency limit.
    Throttled,
    /// An object of that name exists already.
    Conflict,
    /// The node cannot serve this now (out of instance slots, memory budget, function not loaded).
    Unavailable,
    /// The function ran past its timeout.
    Timeout,
    /// The function itself failed (trap, memory limit, bad response).
    FunctionFailed,
    /// The function's server broke the exchange (a container that exited or reset the
    /// connection): what a proxy answers with 502.
    BadGateway,
    /// Something on the node broke (disk, database).
    Internal,
}

impl ErrorKind {
    /// The HTTP status that reports this kind: what the gateway answers, and what a trigger
    /// retries on and records as `knativeerrorcode` when the function produced no response.
    /// Exhaustive, so a new kind cannot silently become a 500.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::TooLarge => 413,
            ErrorKind::Throttled => 429,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::FunctionFailed | ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
        }
    }
}

/// Why an admin operation (deploy, delete, describe...) failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("invalid function name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid setting `{field}`: {message}")]
    InvalidSetting { field: String, message: String },
    /// A manifest field the node rejects (Knative's `<message>: <field path>` form).
    #[error("{message}: {field}")]
    InvalidField { field: String, message: String },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("function {0:?} not found")]
    NotFound(String),
    #[error("registry database: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Component {
        path: PathBuf,
        #[source]
        error: DeployError,
    },
    #[error("stored settings: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the registry has schema version {found}, newer than this release knows ({known}): upgrade wisp")]
    SchemaTooNew { found: usize, known: usize },
    #[error("the registry names an artifact kind this release does not know: {0:?}")]
    UnknownArtifact(String),
    /// An OCI image could not be imported or read.
    #[error(transparent)]
    Image(#[from] wisp_oci::ImageError),
    #[error("usage ledger: {0}")]
    Ledger(#[from] wisp_ledger::LedgerError),
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("secret {name:?} not found in namespace {namespace:?}")]
    SecretNotFound { namespace: String, name: String },
    /// A secret functions still read: deleting it would break their next instance.
    #[error("secret {name:?} is used by {}: remove it from them first", functions.join(", "))]
    SecretInUse { name: String, functions: Vec<String> },
    /// A secret's new data would break a function reading it.
    #[error("{0}")]
    SecretConflict(String),
}

impl SchedulerError {
    /// The kind of failure, for the caller's status mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SchedulerError::InvalidName { .. }
            | SchedulerError::InvalidSetting { .. }
            | SchedulerError::InvalidField { .. } => ErrorKind::Invalid,
            SchedulerError::Deploy(e) => match e {
                DeployError::Capacity(_) => ErrorKind::Unavailable,
                DeployError::Cache(_) | DeployError::CacheLoad { .. } | DeployError::Compiler { .. } => {
                    ErrorKind::Internal
                }
                DeployError::Empty
                | DeployError::NotWasm
                | DeployError::CoreModule
                | DeployError::Invalid(_)
                | DeployError::MissingExport(_)
                | DeployError::Link(_)
                | DeployError::Instantiate(_)
                | DeployError::MemoryTooLarge { .. } => ErrorKind::Invalid,
            },
            SchedulerError::NotFound(_) | SchedulerError::SecretNotFound { .. } => ErrorKind::NotFound,
            SchedulerError::SecretInUse { .. } | SchedulerError::SecretConflict(_) => ErrorKind::Conflict,
            SchedulerError::Image(e) => match e {
                wisp_oci::ImageError::NotFound(_) => ErrorKind::NotFound,
                wisp_oci::ImageError::Io { .. } => ErrorKind::Internal,
                _ => ErrorKind::Invalid,
            },
            SchedulerError::Store(_)
            | SchedulerError::Io { .. }
            | SchedulerError::Component { .. }
            | SchedulerError::Json(_)
            | SchedulerError::SchemaTooNew { .. }
            | SchedulerError::UnknownArtifact(_)
            | SchedulerError::Ledger(_)
            | SchedulerError::Task(_) => ErrorKind::Internal,
        }
    }
}

/// Why an invocation produced no response from the function.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function {0:?} not found")]
    NotFound(String),
    #[error("function {function:?} is at its concurrency limit of {limit} (max_concurrency)")]
    Throttled { function: String, limit: u32 },
    #[error("function {function:?} is not available: {reason}")]
    Unavailable { function: String, reason: String },
    /// The request named a traffic tag the service does not have.
    #[error("function {function:?} has no traffic tag {tag:?}")]
    NoSuchTag { function: String, tag: String },
    /// The revision's activator queue is at its bound.
    #[error("pending request queue full (function {function:?}, --activator-queue {limit})")]
    QueueFull { function: String, limit: usize },
    /// The request waited in the activator longer than the revision's timeout.
    #[error("activator request timeout (function {function:?} had no capacity within {timeout:?})")]
    ActivatorTimeout { function: String, timeout: std::time::Duration },
    #[error(transparent)]
    Runtime(#[from] wisp_runtime::InvokeError),
}

impl InvokeError {
    /// The kind of failure, for the caller's status mapping or retry decision.
    pub fn kind(&self) -> ErrorKind {
        use wisp_runtime::InvokeError as R;
        match self {
            InvokeError::NotFound(_) | InvokeError::NoSuchTag { .. } => ErrorKind::NotFound,
            InvokeError::QueueFull { .. } => ErrorKind::Unavailable,
            InvokeError::ActivatorTimeout { .. } => ErrorKind::Timeout,
            InvokeError::Throttled { .. } => ErrorKind::Throttled,
            InvokeError::Unavailable { .. } => ErrorKind::Unavailable,
            InvokeError::Runtime(e) => match e {
                R::RequestTooLarge { .. } => ErrorKind::TooLarge,
                R::BadRequest(_) => ErrorKind::Invalid,
                R::Capacity(_) | R::MemoryBudget { .. } | R::NotReady(_) => ErrorKind::Unavailable,
                R::Timeout(_) => ErrorKind::Timeout,
                R::ResponseTooLarge { .. } | R::Trap(_) | R::Memory { .. } | R::Guest(_) => ErrorKind::FunctionFailed,
                R::Upstream(_) => ErrorKind::BadGateway,
            },
        }
    }
}
