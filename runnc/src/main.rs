//! `runnc`: the command line (see the `runnc` library).

use clap::Parser as _;
use runnc::cli::Cli;
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
    let exe = std::env::current_exe().ok();
    let ctx = Ctx::from_cli(cli, std::env::args_os().skip(1).collect(), exe.as_deref())?;
    Ok(commands::dispatch(&ctx, &cli.command)?)
}
