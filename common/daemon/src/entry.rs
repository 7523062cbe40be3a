//! What every binary's `main` does around its work: build the async runtime, and turn the
//! outcome into an exit status, an error printed with its causes.

use std::process::ExitCode;

/// The threads a binary's runtime runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread: enough for one stream and one Docker engine.
    One,
    /// A worker per core.
    PerCore,
    /// This many workers.
    Workers(usize),
}

/// The runtime `main` blocks on; when it cannot be built, the error is printed and the exit
/// status to return is the `Err`.
pub fn runtime(threads: Threads) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore | Threads::Workers(_) => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Threads::Workers(workers) = threads {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().map_err(|err| {
        eprintln!("error: cannot start the async runtime: {err}");
        ExitCode::from(2)
    })
}

/// 0 for success; an error is printed with its causes and exits 2.
pub fn exit_status(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
