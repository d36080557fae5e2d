//! The `septem-run` command line.
//!
//! ```text
//! septem-run [--backend auto|seccomp|kvm] [--mem SIZE] [--env K=V]… [--trace]
//!            [--net:NAME=TAP]… [--block:NAME=FILE]… IMAGE [-- ARGS…]
//! septem-run --print-policy [--backend seccomp|kvm]
//! ```
//!
//! Device options follow Solo5's `--net:NAME=IFACE` convention, which clap cannot
//! express, so they are split off the argument list before clap sees it. Every error
//! becomes a [`CliExit`] with a one-line message and [`exit_status::USAGE`];
//! `--help`/`--version` exit 0.

use crate::exit_status;
use crate::select::BackendChoice;
use clap::Parser;
use septem_abi::manifest::{is_valid_device_name, DEVICE_NAME_MAX};
use septem_abi::DeviceKind;
use std::ffi::OsString;
use std::path::PathBuf;

/// The options clap parses.
#[derive(Debug, Parser)]
#[command(
    name = "septem-run",
    version,
    about = "Run a Septem unikernel image under KVM or as a seccomp-sealed process.",
    override_usage = "septem-run [OPTIONS] [--net:NAME=TAP]... [--block:NAME=FILE]... IMAGE [-- ARGS...]\n       \
septem-run --print-policy [--backend seccomp|kvm]",
    after_help = "Devices (Solo5 style): --net:NAME=TAP attaches a tap interface and \
--block:NAME=FILE a disk image to the device NAME the image declares.\n\
Sizes: 512K, 64M, 1G, 64MiB... (binary multiples); a plain number is bytes.\n\
Exit status: the guest's own, or 120..127 for septem-run's outcomes (docs/exit-status.md)."
)]
pub struct Args {
    /// Backend: kvm when /dev/kvm works, else seccomp (auto); with --print-policy,
    /// auto prints the seccomp policy.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,

    /// Guest memory size [default: the image's default, else 64M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub mem: Option<u64>,

    /// Environment entry for the guest (repeatable); the host environment is not passed.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,

    /// Print every hypercall on standard error.
    #[arg(long)]
    pub trace: bool,

    /// Print the seccomp policy (syscall, number, argument conditions) and exit.
    #[arg(long, conflicts_with_all = ["image", "mem", "env", "trace"])]
    pub print_policy: bool,

    /// The image to run (built by `septem-build build`).
    #[arg(value_name = "IMAGE", required_unless_present = "print_policy")]
    pub image: Option<PathBuf>,

    /// Arguments for the guest (after `--`); argv[0] is the image's file name.
    #[arg(value_name = "ARGS", last = true)]
    pub args: Vec<String>,
}

/// A device option: `--net:NAME=TAP` or `--block:NAME=FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceOpt {
    /// Which kind the option names.
    pub kind: DeviceKind,
    /// The device name (as declared in the image's manifest).
    pub name: String,
    /// The host side: a tap interface name or a file path.
    pub target: String,
}

impl DeviceOpt {
    /// The option as written, e.g. `--net:service=tap0`.
    #[must_use]
    pub fn spelled(&self) -> String {
        format!("--{}:{}={}", self.kind.name(), self.name, self.target)
    }
}

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    /// Run an image.
    Run(RunOptions),
    /// `--print-policy`.
    PrintPolicy(BackendChoice),
}

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `--backend`.
    pub backend: BackendChoice,
    /// `--mem`, in bytes.
    pub mem: Option<u64>,
    /// `--env` entries, `KEY=VALUE`.
    pub env: Vec<String>,
    /// `--trace`.
    pub trace: bool,
    /// The image path.
    pub image: PathBuf,
    /// Guest arguments after `--`.
    pub args: Vec<String>,
    /// Device options.
    pub devices: Vec<DeviceOpt>,
}

/// The command line ends the program: help/version text, or a usage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliExit {
    /// Exit status.
    pub status: u8,
    /// What to print (with its newline).
    pub text: String,
    /// Print on standard output (help, version) rather than standard error.
    pub stdout: bool,
}

fn usage_error(message: impl std::fmt::Display) -> CliExit {
    CliExit {
        status: exit_status::USAGE,
        text: format!("septem-run: error: {message}; run `septem-run --help` for usage\n"),
        stdout: false,
    }
}

/// Parses a size: `1048576` (bytes), `512K`, `64M`, `1G`, `1T`, also `KiB`/`MiB`/…,
/// `KB`/`MB`/… and a trailing `B` — all binary multiples, case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{s}' is not a size; write e.g. 64M, 1G, 512K or a number of bytes"
        ));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "unknown size suffix '{suffix}' in '{s}'; use K, M, G or T (binary multiples)"
            ))
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size '{s}' is too large"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{s}' is too large"))?;
    if bytes == 0 {
        return Err("guest memory size must be larger than zero".to_string());
    }
    Ok(bytes)
}

/// Checks an `--env` entry: `KEY=VALUE` with a non-empty `KEY` (no `=` in it).
pub fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(s.to_string()),
        _ => Err(format!(
            "'{s}' is not KEY=VALUE (e.g. --env GREETING=hello)"
        )),
    }
}

/// Parses one `--net:…`/`--block:…` word; `None` if it is not a device option.
fn device_option(word: &str) -> Option<Result<DeviceOpt, CliExit>> {
    let (kind, rest) = if let Some(rest) = word.strip_prefix("--net:") {
        (DeviceKind::Net, rest)
    } else if let Some(rest) = word.strip_prefix("--block:") {
        (DeviceKind::Block, rest)
    } else {
        return None;
    };
    let what = match kind {
        DeviceKind::Net => "TAP",
        DeviceKind::Block => "FILE",
    };
    let k = kind.name();
    let Some((name, target)) = rest.split_once('=') else {
        return Some(Err(usage_error(format_args!(
            "'{word}' needs a host side: write --{k}:NAME={what}"
        ))));
    };
    if !is_valid_device_name(name) {
        return Some(Err(usage_error(format_args!(
            "'{word}': device name '{name}' must be 1 to {DEVICE_NAME_MAX} characters of A-Z a-z 0-9 _ -"
        ))));
    }
    if target.is_empty() {
        return Some(Err(usage_error(format_args!(
            "'{word}' names no {}: write --{k}:{name}={what}",
            what.to_ascii_lowercase()
        ))));
    }
    Some(Ok(DeviceOpt {
        kind,
        name: name.to_string(),
        target: target.to_string(),
    }))
}

/// Splits device options off `argv` (up to a `--`), leaving the rest for clap.
pub fn split_device_options(
    argv: Vec<OsString>,
) -> Result<(Vec<OsString>, Vec<DeviceOpt>), CliExit> {
    let mut rest = Vec::with_capacity(argv.len());
    let mut devices: Vec<DeviceOpt> = Vec::new();
    let mut iter = argv.into_iter();
    // argv[0] is the program.
    rest.extend(iter.next());
    for word in iter.by_ref() {
        if word == "--" {
            rest.push(word);
            break;
        }
        match word.to_str().and_then(device_option) {
            Some(Ok(dev)) => {
                if let Some(prev) = devices.iter().find(|d| d.name == dev.name) {
                    return Err(usage_error(format_args!(
                        "device '{}' is given twice ({} and {})",
                        dev.name,
                        prev.spelled(),
                        dev.spelled()
                    )));
                }
                devices.push(dev);
            }
            Some(Err(e)) => return Err(e),
            None => rest.push(word),
        }
    }
    rest.extend(iter);
    Ok((rest, devices))
}

/// Turns a clap error into one line.
fn clap_exit(e: &clap::Error) -> CliExit {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => CliExit {
            status: 0,
            text: e.render().to_string(),
            stdout: true,
        },
        _ => {
            let rendered = e.render().to_string();
            // "error: <what>\n  <details>\n\n<tips, usage>": keep the first paragraph.
            let first = rendered.split("\n\n").next().unwrap_or("");
            let line = first
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line).to_string();
            usage_error(line)
        }
    }
}

/// Parses the whole command line (`argv[0]` first).
pub fn parse(argv: Vec<OsString>) -> Result<Command, CliExit> {
    let (rest, devices) = split_device_options(argv)?;
    let args = Args::try_parse_from(rest).map_err(|e| clap_exit(&e))?;
    if args.print_policy {
        if !devices.is_empty() {
            return Err(usage_error("--print-policy takes no device options"));
        }
        return Ok(Command::PrintPolicy(args.backend));
    }
    let image = args.image.ok_or_else(|| usage_error("no IMAGE given"))?;
    Ok(Command::Run(RunOptions {
        backend: args.backend,
        mem: args.mem,
        env: args.env,
        trace: args.trace,
        image,
        args: args.args,
        devices,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        std::iter::once("septem-run")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn run(words: &[&str]) -> RunOptions {
        match parse(argv(words)) {
            Ok(Command::Run(o)) => o,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    fn err(words: &[&str]) -> CliExit {
        match parse(argv(words)) {
            Err(e) => e,
            Ok(other) => panic!("{words:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("64X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000T").is_err());
    }

    #[test]
    fn run_options() {
        let o = run(&[
            "--mem",
            "128M",
            "--env",
            "A=1",
            "--env=B=",
            "--trace",
            "img.septem",
            "--",
            "x",
            "--y",
            "--net:a=b",
        ]);
        assert_eq!(o.mem, Some(128 << 20));
        assert_eq!(o.env, ["A=1", "B="]);
        assert!(o.trace);
        assert_eq!(o.image, PathBuf::from("img.septem"));
        // Everything after `--` is the guest's, device-looking words included.
        assert_eq!(o.args, ["x", "--y", "--net:a=b"]);
        assert!(o.devices.is_empty());
        assert_eq!(o.backend, BackendChoice::Auto);

        let o = run(&["--backend", "seccomp", "--mem=1G", "img"]);
        assert_eq!((o.backend, o.mem), (BackendChoice::Seccomp, Some(1 << 30)));
        assert!(o.args.is_empty() && o.env.is_empty() && !o.trace);
        assert_eq!(run(&["--backend=kvm", "img"]).backend, BackendChoice::Kvm);
    }

    #[test]
    fn env_entries_are_checked() {
        assert_eq!(run(&["--env", "K=a=b", "img"]).env, ["K=a=b"]);
        for bad in ["NOEQUALS", "=value", ""] {
            let e = err(&["--env", bad, "img"]);
            assert_eq!(e.status, exit_status::USAGE, "{bad}");
            assert!(e.text.starts_with("septem-run: error: "), "{}", e.text);
            assert!(e.text.contains("KEY=VALUE"), "{}", e.text);
            assert_eq!(e.text.lines().count(), 1, "{}", e.text);
        }
    }

    #[test]
    fn device_options() {
        let o = run(&["--net:service=tap0", "img", "--block:disk=/tmp/d.img"]);
        assert_eq!(
            o.devices,
            [
                DeviceOpt {
                    kind: DeviceKind::Net,
                    name: "service".into(),
                    target: "tap0".into()
                },
                DeviceOpt {
                    kind: DeviceKind::Block,
                    name: "disk".into(),
                    target: "/tmp/d.img".into()
                },
            ]
        );
        assert_eq!(o.devices[0].spelled(), "--net:service=tap0");
        for bad in [
            "--net:service",
            "--net:=tap0",
            "--net:a b=tap0",
            "--block:disk=",
            "--net:this-name-is-far-too-long-for-a-device=tap0",
        ] {
            let e = err(&[bad, "img"]);
            assert_eq!(e.status, exit_status::USAGE, "{bad}");
            assert_eq!(e.text.lines().count(), 1, "{}", e.text);
        }
        let e = err(&["--net:a=tap0", "--block:a=f", "img"]);
        assert!(e.text.contains("given twice"), "{}", e.text);
    }

    #[test]
    fn bad_options_exit_with_usage_status() {
        for words in [
            &["--bogus", "img"][..],
            &[],
            &["--mem", "lots", "img"],
            &["--mem", "0", "img"],
            &["--backend", "xen", "img"],
            &["img", "extra"],
            &["--print-policy", "img"],
            &["--net-mac:a=00:11:22:33:44:55", "img"],
        ] {
            let e = err(words);
            assert_eq!(e.status, exit_status::USAGE, "{words:?}: {}", e.text);
            assert!(!e.stdout);
            assert!(e.text.starts_with("septem-run: error: "), "{}", e.text);
            assert!(e.text.ends_with("for usage\n"), "{}", e.text);
            assert_eq!(e.text.lines().count(), 1, "{words:?}: {}", e.text);
        }
        assert!(err(&[]).text.contains("<IMAGE>"), "{}", err(&[]).text);
        assert!(err(&["--bogus", "img"]).text.contains("--bogus"));
    }

    #[test]
    fn help_and_version_exit_zero() {
        for words in [&["--help"][..], &["-h"], &["--version"], &["-V"]] {
            let e = err(words);
            assert_eq!(e.status, 0, "{words:?}");
            assert!(e.stdout);
        }
        assert!(err(&["--help"]).text.contains("--print-policy"));
    }

    #[test]
    fn print_policy() {
        assert!(matches!(
            parse(argv(&["--print-policy"])),
            Ok(Command::PrintPolicy(BackendChoice::Auto))
        ));
        assert!(matches!(
            parse(argv(&["--print-policy", "--backend", "kvm"])),
            Ok(Command::PrintPolicy(BackendChoice::Kvm))
        ));
        assert_eq!(
            err(&["--print-policy", "--net:a=b"]).status,
            exit_status::USAGE
        );
    }
}
