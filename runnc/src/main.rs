//! `runnc`: the command line (see the `runnc` library).

use anyhow::Context as _;
use clap::Parser as _;
use runnc::cli::{Cli, LogFormat};
use runnc::commands::{self, Ctx};

fn main() {
    let cli = Cli::parse();
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
