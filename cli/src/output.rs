//! The `-o` flag and writing to stdout / reporting errors at the binary's edge.

use std::io::{self, Write};
use std::process::ExitCode;

/// How commands print their answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned, human-readable text.
    Table,
    /// The node's JSON answer, unchanged.
    Json,
}

/// Writes `text` to stdout, adding a final newline when it lacks one (and is not empty).
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.is_empty() && !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Prints `error: ...` to stderr and picks the exit code: 1, or 0 if stdout was simply closed
/// early (`wisp logs f | head`).
pub fn report(err: anyhow::Error) -> ExitCode {
    let closed_pipe = err
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe));
    if closed_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}
