//! `septem-run`: runs a Septem unikernel image (see `septem_monitor::cli`).

use anyhow::Context as _;
use septem_monitor::cli::{self, Command, RunOptions};
use septem_monitor::seccomp::policy;
use septem_monitor::{exit_status, prepare, select, RunError};
use std::io::Write as _;
use std::process::ExitCode;

/// Logging is opt-in: with neither `SEPTEM_LOG` nor `RUST_LOG` set no subscriber is
/// installed (its registry costs ~0.1 ms of boot-to-exit) and `tracing` events are
/// dropped. The monitor reports errors and guest faults itself, never through `tracing`.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    if std::env::var_os("SEPTEM_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    let filter = EnvFilter::try_from_env("SEPTEM_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn print_policy(choice: select::BackendChoice) -> anyhow::Result<u8> {
    let mut text = String::new();
    policy::write_policy(&mut text, policy::policy_for(choice.policy_kind()))
        .context("formatting the policy")?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the policy to standard output")?;
    Ok(0)
}

fn run(opts: &RunOptions) -> anyhow::Result<u8> {
    let spec = prepare::prepare(opts)?;
    let backend = select::select(opts.backend)?;
    tracing::debug!(backend = backend.kind().name(), "backend selected");
    Ok(backend.run(spec)?)
}

/// One line: the error and its causes, joined by ": ".
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(exit) => {
            if exit.stdout {
                print!("{}", exit.text);
            } else {
                eprint!("{}", exit.text);
            }
            return ExitCode::from(exit.status);
        }
    };
    init_logging();
    let result = match command {
        Command::PrintPolicy(choice) => print_policy(choice),
        Command::Run(opts) => run(&opts),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            let status = e
                .downcast_ref::<RunError>()
                .map_or(exit_status::INTERNAL, RunError::exit_status);
            eprintln!("septem-run: error: {}", one_line(&e));
            ExitCode::from(status)
        }
    }
}
