//! `runnc`: the command line (see the `runnc` library).

use anyhow::Context as _;
use clap::Parser as _;
use runnc::cli::{Cli, LogFormat};
use runnc::commands::{self, Ctx};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // Usage errors exit 1 like every other error (clap's default is 2).
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            eprintln!("runnc: {}", first.trim_start_matches("error: "));
            for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                eprintln!("{line}");
            }
            std::process::exit(1);
        }
    };
    let code = match real_main(&cli) {
        Ok(code) => code,
        Err(e) => {
            runnc::logging::error(&format!("{e:#}"));
            1
        }
    };
    std::process::exit(code);
}

fn real_main(cli: &Cli) -> anyhow::Result<i32> {
    runnc::logging::init(
        cli.log.as_deref(),
        cli.log_format == LogFormat::Json,
        cli.debug,
    )?;
    let settings = runnc::settings::Settings::load().context("runnc configuration")?;
    let ctx = Ctx {
        root: runnc::bundle::absolute(&cli.root),
        settings,
        systemd: cli.systemd_cgroup,
        args: std::env::args_os().skip(1).collect(),
    };
    Ok(commands::dispatch(&ctx, &cli.command)?)
}
