//! The command line shared by the three binaries: catalogue, case, digest,
//! verify and config commands. Each binary adds its own (`init`, and for the
//! hub `nodes`, `enroll`…) and flattens [`Common`] into its command enum.
//!
//! It is split by what each part does: `args` holds the clap definitions,
//! whose doc comments are the `--help` text; `run` carries the commands out;
//! and `print` writes what they show, as text or JSON. This module keeps the
//! process plumbing (logging, exit codes, output whose reader went away) and
//! re-exports the public items of the others, so their paths, such as
//! `node::cli::Common` or `node::cli::run`, stay as they were.

use anyhow::Result;
use std::process::ExitCode;

/// Prints a line to standard output. Unlike `println!` it does not panic
/// when the output is gone (`| head`): the write error ends the command,
/// and [`exit_with`] ends the program quietly.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod args;
mod print;
mod run;

pub use args::{
    BundleCmd, CaseCmd, CatalogueCmd, Common, DataDir, FilesCmd, FollowupCmd, QuarantineCmd, Staff, StaffCmd, StepArgs,
    Unlock,
};
pub use print::{clean, json_line, json_pretty};
pub use run::{actor, followups, init_from_bundle, peer_address, run, serve, today, FollowupRow};

/// A process holding many sessions at once has a thread for each blocking
/// SQLite call in flight. Left alone, glibc gives those threads up to 8
/// arenas per core, and the first time a large block is freed (a QUIC
/// endpoint's 3 MB receive buffer) it raises its mmap threshold to that
/// size, so page caches, frames and zstd buffers land in those arenas and
/// their freed space stays resident. Measured: the demo 760 MB peak against
/// about 220 MB; a hub receiving files crept 42 → 58 MiB over six rounds
/// (28 → 30 MiB with one arena).
pub const ALLOCATOR_ENV: [(&str, &str); 2] = [("MALLOC_ARENA_MAX", "2"), ("MALLOC_MMAP_THRESHOLD_", "131072")];

/// The settings of [`ALLOCATOR_ENV`] that `get` (the environment) lacks.
pub fn allocator_env_missing(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Vec<(&'static str, &'static str)> {
    ALLOCATOR_ENV.iter().copied().filter(|(k, _)| get(k).is_none()).collect()
}

/// Runs this program again, in place (same process id), under
/// [`ALLOCATOR_ENV`] when the environment lacks any of it: glibc reads them
/// only as the process starts. Call it first thing, before anything is read
/// or started. Returns only when nothing was missing, or with a warning
/// when the program could not be started again (`what` then runs as it
/// is).
pub fn bounded_allocator(what: &str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let missing = allocator_env_missing(|k| std::env::var_os(k));
        if missing.is_empty() {
            return;
        }
        let err = match std::env::current_exe() {
            Ok(exe) => std::process::Command::new(exe).args(std::env::args_os().skip(1)).envs(missing).exec(),
            Err(e) => e,
        };
        eprintln!("warning: cannot start again with a bounded allocator ({err}); {what} uses more memory");
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = what;
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs a command and maps the outcome to an exit code: 0 done, 1 refused
/// or failed (the message says why and what to do). Output that could not
/// be written because its reader went away (`| head`) is not a failure:
/// the program ends quietly with 0.
pub fn exit_with(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "error: {}", clean(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn output_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Makes a `println!` that meets closed output (`| head`) end the program
/// quietly with 0 instead of a panic message. Commands print through
/// [`say!`]; this covers whatever else prints.
pub fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allocator_settings_the_caller_did_not_give_are_added() {
        assert_eq!(allocator_env_missing(|_| None), ALLOCATOR_ENV.to_vec());
        let given = |k: &str| (k == "MALLOC_ARENA_MAX").then(|| "4".into());
        assert_eq!(allocator_env_missing(given), vec![("MALLOC_MMAP_THRESHOLD_", "131072")]);
        assert!(allocator_env_missing(|_| Some("1".into())).is_empty());
    }
}
