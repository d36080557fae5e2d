//! `septem-build`: build, inspect and run Septem unikernel images.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use septem_build::{build_guest, inspect_file, runner, BuildOptions, InspectError, Profile};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status: an error other than an invalid image (build failure, I/O, …).
const EXIT_ERROR: u8 = 1;
/// Exit status: the file given to `inspect` is not a valid Septem image.
const EXIT_INVALID_IMAGE: u8 = 3;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success (for `run`: the guest's own exit status is returned instead)
  1  error: compile or link failure, unreadable file, bad [package.metadata.septem], …
  2  usage error (bad command line)
  3  `inspect`: the file is not a valid Septem image

Examples:
  septem-build build examples/hello --release
  septem-build inspect target/guest/release/hello.septem
  cargo run --release -p septem-build -- run examples/hello -- world";

/// Builds Septem unikernel images from Rust app crates, inspects and runs them.
///
/// An app is a `#![no_std] #![no_main]` binary crate that depends on septem-libos and
/// names its entry with `septem_libos::main!(main)`. Devices and default memory are
/// declared in its Cargo.toml under [package.metadata.septem].
#[derive(Debug, Parser)]
#[command(name = "septem-build", version, after_long_help = EXIT_STATUS_HELP)]
struct Cli {
    /// More logging (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile an app crate into a Septem image (ELF + finalized manifest).
    Build {
        #[command(flatten)]
        build: BuildArgs,
        /// Write the image here (default: <target dir>/<profile>/<name>.septem).
        #[arg(short, long, value_name = "IMAGE")]
        output: Option<PathBuf>,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Describe an image: ABI version, manifest, devices, entry, segments.
    Inspect {
        /// The image file.
        image: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build an app and run it with septem-run; exits with the guest's status.
    Run {
        #[command(flatten)]
        build: BuildArgs,
        /// Monitor backend (passed to septem-run as --backend).
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
        /// Guest memory (passed to septem-run as --mem), e.g. 64M.
        #[arg(long, value_name = "SIZE")]
        mem: Option<String>,
        /// Guest environment variable (passed to septem-run as --env), repeatable.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Any other septem-run option, verbatim (repeatable), e.g. --monitor-arg=--net:service=tap0.
        #[arg(long = "monitor-arg", value_name = "ARG", allow_hyphen_values = true)]
        monitor_args: Vec<String>,
        /// Arguments for the guest (after `--`).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// The app crate (directory or Cargo.toml).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Build with the release profile.
    #[arg(long)]
    release: bool,
    /// Cargo target directory (default: target/guest of the enclosing workspace, or of the app).
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
}

impl BuildArgs {
    fn options(&self, output: Option<PathBuf>) -> BuildOptions {
        BuildOptions {
            path: self.path.clone(),
            profile: if self.release {
                Profile::Release
            } else {
                Profile::Debug
            },
            output,
            target_dir: self.target_dir.clone(),
            ..BuildOptions::default()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn report(err: &anyhow::Error) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

fn build(build: &BuildArgs, output: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let built = build_guest(&build.options(output))?;
    if json {
        let devices: Vec<_> = built
            .manifest
            .devices()
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name_str(),
                    "kind": d.device_kind().map_or("?", |k| k.name()),
                })
            })
            .collect();
        let v = serde_json::json!({
            "image": built.path,
            "size": built.size,
            "name": built.name,
            "profile": built.profile.dir_name(),
            "linked": built.linked,
            "default_mem_mib": built.manifest.header.default_mem_mib,
            "devices": devices,
        });
        println!("{v}");
    } else {
        println!("{} ({} bytes)", built.path.display(), built.size);
    }
    Ok(())
}

fn inspect(image: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let report = inspect_file(image)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

#[derive(Debug)]
struct RunSpec<'a> {
    build: &'a BuildArgs,
    backend: &'a Option<String>,
    mem: &'a Option<String>,
    env: &'a [String],
    monitor_args: &'a [String],
    args: &'a [String],
}

fn run(spec: &RunSpec<'_>) -> anyhow::Result<ExitCode> {
    let built = build_guest(&spec.build.options(None))?;
    runner::build_monitor_beside_us()?;
    let monitor = runner::find_monitor()?;
    let mut options = Vec::new();
    if let Some(b) = spec.backend {
        options.extend(["--backend".to_owned(), b.clone()]);
    }
    if let Some(m) = spec.mem {
        options.extend(["--mem".to_owned(), m.clone()]);
    }
    for e in spec.env {
        options.extend(["--env".to_owned(), e.clone()]);
    }
    options.extend(spec.monitor_args.iter().cloned());
    let mut cmd = runner::monitor_command(&monitor, &options, &built.path, spec.args);
    tracing::info!(?cmd, "running");
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Replace this process: the guest's status, signals and terminal pass straight through.
        let err = cmd.exec();
        Err(runner::RunnerError::Spawn {
            path: monitor,
            source: err,
        })
        .context("running the image")
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status().map_err(|source| runner::RunnerError::Spawn {
            path: monitor.clone(),
            source,
        })?;
        Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Build {
            build: b,
            output,
            json,
        } => build(b, output.clone(), *json).map(|()| ExitCode::SUCCESS),
        Command::Inspect { image, json } => inspect(image, *json).map(|()| ExitCode::SUCCESS),
        Command::Run {
            build,
            backend,
            mem,
            env,
            monitor_args,
            args,
        } => run(&RunSpec {
            build,
            backend,
            mem,
            env,
            monitor_args,
            args,
        }),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            report(&err);
            if err
                .downcast_ref::<InspectError>()
                .is_some_and(|e| matches!(e, InspectError::Invalid { .. }))
            {
                ExitCode::from(EXIT_INVALID_IMAGE)
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}
