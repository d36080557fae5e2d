//! `septem-build`: build, inspect and run Septem unikernel images.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use septem_build::oci::package::{package, parse_disk, PackageOptions, PackageOutput};
use septem_build::oci::reference::ImageTag;
use septem_build::oci::registry::{self, PullOptions, RegistryOptions};
use septem_build::oci::{auth::AuthFlags, human_size, OciError};
use septem_build::{build_guest, inspect_file, runner, BuildOptions, InspectError, Profile};
use std::path::{Path, PathBuf};
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
  3  the file given to `inspect`, `package`, `push` or `build --tag` is not a valid,
     runnable Septem image
  4  an image reference or tag does not parse (`--tag`, push/pull REGISTRY/REPO:TAG)
  5  the registry is unreachable (connection refused, DNS, timeout, TLS to a plain-HTTP
     registry without --insecure)
  6  the registry refused the credentials, or wants some
  7  integrity: a blob's digest or size, or the layer's diff_id, is not what the
     manifest/config says (nothing is written by `pull`)
  8  the OCI image is not a Septem unikernel image (no org.septem.unikernel annotation
     or label, or no runnable unikernel in its layer)
  9  the image (tag or blob) is not in the registry

Examples:
  septem-build build examples/hello --release
  septem-build inspect target/guest/release/hello.septem
  septem-build package hello.septem --tag hello:1.0 --out hello.oci
  septem-build push hello.oci 127.0.0.1:5000/hello:1.0
  septem-build pull 127.0.0.1:5000/hello:1.0 --out pulled.oci --extract pulled
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
    /// Make a block device image from a folder: a tar archive the libOS mounts as a
    /// read-only file tree (septem_libos::fs); see docs/storage.md.
    Disk {
        /// The folder to pack.
        dir: PathBuf,
        /// The image file to write (e.g. site.img).
        #[arg(short, long, value_name = "IMAGE")]
        output: PathBuf,
        /// Pad the image to SIZE (e.g. 64M; a multiple of 512, at least the archive).
        #[arg(long, value_name = "SIZE", value_parser = septem_build::disk::parse_size)]
        size: Option<u64>,
        /// Same bytes for the same contents: mtimes $SOURCE_DATE_EPOCH (or 0), modes 0644/0755.
        #[arg(long)]
        reproducible: bool,
    },
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
        /// Also package the image as an OCI image tagged NAME[:TAG] (see `package`).
        #[arg(long, value_name = "NAME:TAG")]
        tag: Option<String>,
        #[command(flatten)]
        oci: OciOutArgs,
    },
    /// Package an image as an OCI image (layout directory or tar archive).
    ///
    /// One gzip layer holds /unikernel/<name>.septem, /unikernel/septem.json and any
    /// disks (/unikernel/disks/<NAME>.img); the manifest's annotations and the config's
    /// labels record org.septem.unikernel{,.abi,.binary,.devices,.memory,.disks}.
    /// Reproducible: created and file times come from SOURCE_DATE_EPOCH, else the
    /// image file's mtime.
    Package {
        /// The .septem image.
        image: PathBuf,
        /// Image name and tag, NAME[:TAG] (the index's org.opencontainers.image.ref.name is TAG).
        #[arg(long, value_name = "NAME:TAG")]
        tag: String,
        #[command(flatten)]
        oci: OciOutArgs,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Push an OCI image to a registry (OCI distribution API).
    ///
    /// SOURCE is an image layout directory (DIR or DIR:TAG), a tar archive of one, or a
    /// .septem image (packaged on the fly). Plain HTTP only for loopback registries or
    /// with --insecure.
    Push {
        /// Layout directory, DIR:TAG, archive, or .septem image.
        source: PathBuf,
        /// Destination, REGISTRY/REPO:TAG.
        target: String,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Pull a Septem OCI image from a registry, verified before anything is written.
    Pull {
        /// REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:DIGEST.
        reference: String,
        /// Write the image layout here (a tar archive with --archive).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Write a tar archive of the layout instead of a directory.
        #[arg(long)]
        archive: bool,
        /// Also unpack the unikernel (and septem.json, disks) into this directory.
        #[arg(long, value_name = "DIR")]
        extract: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
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
struct OciOutArgs {
    /// Disk image to ship in the layer for a declared block device (repeatable).
    #[arg(long = "disk", value_name = "NAME=FILE", value_parser = parse_disk)]
    disks: Vec<(String, PathBuf)>,
    /// Write an OCI image layout directory here (default: <image>.oci next to the image).
    #[arg(long, value_name = "DIR", conflicts_with = "archive")]
    out: Option<PathBuf>,
    /// Write a tar archive of the layout instead (what `oci-archive:` and `ctr images import` read).
    #[arg(long, value_name = "FILE.tar")]
    archive: Option<PathBuf>,
}

impl OciOutArgs {
    fn output(&self, image: &Path) -> PackageOutput {
        match (&self.out, &self.archive) {
            (_, Some(a)) => PackageOutput::Archive(a.clone()),
            (Some(d), None) => PackageOutput::Dir(d.clone()),
            (None, None) => PackageOutput::Dir(image.with_extension("oci")),
        }
    }

    fn given(&self) -> bool {
        self.out.is_some() || self.archive.is_some() || !self.disks.is_empty()
    }
}

#[derive(Debug, Args)]
struct RegistryArgs {
    /// Registry user name (with --password or --password-stdin); default: ~/.docker/config.json.
    #[arg(long, value_name = "USER")]
    username: Option<String>,
    /// Registry password (visible to other users in `ps`: prefer --password-stdin).
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Allow plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,
    /// No per-blob progress on stderr.
    #[arg(short, long)]
    quiet: bool,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure,
            auth: AuthFlags {
                username: self.username.clone(),
                password: self.password.clone(),
                password_stdin: self.password_stdin,
                token: None,
                identity_token: None,
            },
            quiet: self.quiet,
        }
    }
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

fn build(
    build: &BuildArgs,
    output: Option<PathBuf>,
    json: bool,
    tag: Option<&str>,
    oci: &OciOutArgs,
) -> anyhow::Result<()> {
    if tag.is_none() && oci.given() {
        anyhow::bail!("--out, --archive and --disk package the image: they need --tag NAME:TAG");
    }
    // A bad tag is refused before compiling.
    let tag = tag.map(ImageTag::parse).transpose()?;
    let built = build_guest(&build.options(output))?;
    if let Some(tag) = tag {
        let packaged = package(
            &PackageOptions {
                image: built.path.clone(),
                tag,
                disks: oci.disks.clone(),
                created: None,
            },
            &oci.output(&built.path),
        )?;
        if json {
            println!("{}", serde_json::to_string(&packaged)?);
        } else {
            println!("{} ({} bytes)", built.path.display(), built.size);
            print_packaged(&packaged);
        }
        return Ok(());
    }
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

fn print_packaged(p: &septem_build::oci::package::Packaged) {
    println!(
        "{} ({}, tag {}): {}",
        p.output.display(),
        if p.archive {
            "OCI archive"
        } else {
            "OCI layout"
        },
        p.tag,
        p.manifest_digest
    );
    println!(
        "  layer {} {} ({} uncompressed), unikernel {}",
        p.layer_digest,
        human_size(p.layer_size),
        human_size(p.layer_uncompressed_size),
        p.binary
    );
}

fn package_cmd(image: &Path, tag: &str, oci: &OciOutArgs, json: bool) -> anyhow::Result<()> {
    let tag = ImageTag::parse(tag)?;
    let packaged = package(
        &PackageOptions {
            image: image.to_path_buf(),
            tag,
            disks: oci.disks.clone(),
            created: None,
        },
        &oci.output(image),
    )?;
    if json {
        println!("{}", serde_json::to_string(&packaged)?);
    } else {
        print_packaged(&packaged);
    }
    Ok(())
}

fn push_cmd(source: &Path, target: &str, reg: &RegistryArgs, json: bool) -> anyhow::Result<()> {
    let pushed = registry::push(source, target, &reg.options())?;
    if json {
        println!("{}", serde_json::to_string(&pushed)?);
    } else {
        println!(
            "pushed {}@{} ({} blobs uploaded, {}; {} already there)",
            pushed.reference,
            pushed.digest,
            pushed.uploaded,
            human_size(pushed.bytes),
            pushed.skipped
        );
    }
    Ok(())
}

fn pull_cmd(
    reference: &str,
    pull: &PullOptions,
    reg: &RegistryArgs,
    json: bool,
) -> anyhow::Result<()> {
    let pulled = registry::pull(reference, pull, &reg.options())?;
    if json {
        println!("{}", serde_json::to_string(&pulled)?);
    } else {
        println!(
            "pulled {}@{} ({}) into {}",
            pulled.reference,
            pulled.digest,
            human_size(pulled.bytes),
            pulled.output.display()
        );
        if let Some(u) = &pulled.extracted {
            println!("unikernel: {}", u.display());
        }
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

fn disk(dir: &Path, output: &Path, size: Option<u64>, reproducible: bool) -> anyhow::Result<()> {
    let d = septem_build::disk::make_disk(&septem_build::disk::DiskOptions {
        dir: dir.to_path_buf(),
        output: output.to_path_buf(),
        size,
        reproducible,
    })?;
    println!(
        "{}: {} bytes ({} sectors; archive {} bytes): {} files, {} directories, {} links",
        output.display(),
        d.size,
        d.size / 512,
        d.archive_size,
        d.files,
        d.dirs,
        d.symlinks
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Build {
            build: b,
            output,
            json,
            tag,
            oci,
        } => build(b, output.clone(), *json, tag.as_deref(), oci).map(|()| ExitCode::SUCCESS),
        Command::Package {
            image,
            tag,
            oci,
            json,
        } => package_cmd(image, tag, oci, *json).map(|()| ExitCode::SUCCESS),
        Command::Push {
            source,
            target,
            registry,
            json,
        } => push_cmd(source, target, registry, *json).map(|()| ExitCode::SUCCESS),
        Command::Pull {
            reference,
            out,
            archive,
            extract,
            registry,
            json,
        } => pull_cmd(
            reference,
            &PullOptions {
                out: out.clone(),
                archive: *archive,
                extract: extract.clone(),
                accept_ordinary: false,
            },
            registry,
            *json,
        )
        .map(|()| ExitCode::SUCCESS),
        Command::Inspect { image, json } => inspect(image, *json).map(|()| ExitCode::SUCCESS),
        Command::Disk {
            dir,
            output,
            size,
            reproducible,
        } => disk(dir, output, *size, *reproducible).map(|()| ExitCode::SUCCESS),
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
            if let Some(oci) = err.chain().find_map(|e| e.downcast_ref::<OciError>()) {
                ExitCode::from(oci.exit_status())
            } else if err
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
