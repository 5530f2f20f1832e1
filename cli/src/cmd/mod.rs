//! One module per subcommand: a clap args struct (its `///` comments are the help) and `run`.

pub mod deploy;
pub mod describe;
pub mod invocation;
pub mod invoke;
pub mod logs;
pub mod ls;
pub mod rm;
pub mod trigger;
pub mod usage;
