//! The `septem-run` command line.
//!
//! ```text
//! septem-run [--backend auto|seccomp|kvm] [--mem SIZE] [--env K=V]… [--trace]
//!            [--net:NAME=TAP [--net-mac:NAME=MAC] [--net-ip:NAME=ADDR/PREFIX]
//!             [--net-gw:NAME=ADDR]]… [--dns ADDR] [--block:NAME=FILE[,ro][,sync]]…
//!            [--start-fifo FIFO] IMAGE [-- ARGS…]
//! septem-run --print-policy [--backend seccomp|kvm]
//! ```
//!
//! Device options follow Solo5's `--net:NAME=IFACE` convention, which clap cannot
//! express, so they (and the per-device `--net-mac:`, `--net-ip:`, `--net-gw:`) are
//! split off the argument list before clap sees it. Every error
//! becomes a [`CliExit`] with a one-line message and [`exit_status::USAGE`];
//! `--help`/`--version` exit 0.

use crate::exit_status;
use crate::select::BackendChoice;
use clap::Parser;
use septem_abi::manifest::{is_valid_device_name, DEVICE_NAME_MAX};
use septem_abi::DeviceKind;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The options clap parses.
#[derive(Debug, Parser)]
#[command(
    name = "septem-run",
    version,
    about = "Run a Septem unikernel image under KVM or as a seccomp-sealed process.",
    override_usage = "septem-run [OPTIONS] [--net:NAME=TAP]... [--block:NAME=FILE[,ro][,sync]]... IMAGE [-- ARGS...]\n       \
septem-run --print-policy [--backend seccomp|kvm]",
    after_help = "Devices (Solo5 style): --net:NAME=TAP attaches a tap interface and \
--block:NAME=FILE a disk image to the device NAME the image declares.\n\
Net device settings: --net-mac:NAME=MAC (default: random, locally administered), \
--net-ip:NAME=ADDR/PREFIX (static address; without it the guest may use DHCP), \
--net-gw:NAME=ADDR (default gateway); see docs/networking.md.\n\
Block devices: --block:NAME=FILE[,ro][,sync]: FILE is the whole disk (a multiple of \
512 bytes, e.g. a tar archive made by `septem-build disk`); ,ro refuses guest writes, \
,sync makes every write durable before it returns (O_DSYNC); see docs/storage.md.\n\
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

    /// Name server for every net device of the guest.
    #[arg(long, value_name = "ADDR", value_parser = parse_dns)]
    pub dns: Option<Ipv4Addr>,

    /// Set the guest up, then wait until FIFO is opened for reading (one byte is
    /// written to it) before starting the guest: runc's exec fifo protocol, for
    /// runtimes that create a container before they start it (see docs/runnc.md).
    #[arg(long, value_name = "FIFO")]
    pub start_fifo: Option<PathBuf>,

    /// Print the seccomp policy (syscall, number, argument conditions) and exit.
    #[arg(long, conflicts_with_all = ["image", "mem", "env", "trace", "dns", "start_fifo"])]
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
    /// `--net-mac:`/`--net-ip:`/`--net-gw:` for this device (net devices only).
    pub net: NetParams,
    /// `,ro` and `,sync` after a block device's file (block devices only).
    pub block: BlockParams,
}

/// Flags of one block device: `--block:NAME=FILE,ro,sync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockParams {
    /// `,ro`: open the file read-only; guest writes fail with `ReadOnly`.
    pub read_only: bool,
    /// `,sync`: open the file with `O_DSYNC`, so each write is durable when it returns.
    pub sync: bool,
}

/// Splits `,ro` and `,sync` (in any order, each at most once) off the end of a block
/// device's `FILE,flags`. A trailing `,word` of lowercase letters that is not a known
/// flag is an error (a typo like `,rw` must not become part of the file name); any
/// other comma belongs to the file name.
pub fn split_block_flags(target: &str) -> Result<(&str, BlockParams), String> {
    let mut file = target;
    let mut p = BlockParams::default();
    while let Some((head, word)) = file.rsplit_once(',') {
        let flag = match word {
            "ro" => &mut p.read_only,
            "sync" => &mut p.sync,
            w if !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()) => {
                return Err(format!(
                    "unknown block device flag ',{w}'; the flags are ,ro (read-only) and ,sync (durable writes)"
                ))
            }
            _ => break,
        };
        if *flag {
            return Err(format!("block device flag ',{word}' is given twice"));
        }
        *flag = true;
        file = head;
    }
    Ok((file, p))
}

/// Settings of one net device from `--net-mac:NAME=…`, `--net-ip:NAME=…`,
/// `--net-gw:NAME=…`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetParams {
    /// The guest's MAC address (default: random, locally administered).
    pub mac: Option<[u8; 6]>,
    /// Static address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
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
    /// `--dns`: name server for every net device.
    pub dns: Option<Ipv4Addr>,
    /// `--start-fifo`: where to wait, set up, before starting the guest.
    pub start_fifo: Option<PathBuf>,
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
    match septem_image::size::parse_size(s) {
        Ok(0) => Err("guest memory size must be larger than zero".to_string()),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(e.to_string()),
    }
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

/// Checks a `--dns` value: a unicast IPv4 address.
pub fn parse_dns(s: &str) -> Result<Ipv4Addr, String> {
    crate::net::parse_ipv4(s, "name server")
}

/// The per-device net options: prefix, value syntax.
const NET_SETTINGS: [(&str, &str); 3] = [
    ("--net-mac:", "MAC"),
    ("--net-ip:", "ADDR/PREFIX"),
    ("--net-gw:", "ADDR"),
];

/// The value of a `--net-mac:`/`--net-ip:`/`--net-gw:` option.
#[derive(Clone, Copy, Debug)]
enum NetValue {
    Mac([u8; 6]),
    Ip((Ipv4Addr, u8)),
    Gateway(Ipv4Addr),
}

/// A parsed `--net-mac:`/`--net-ip:`/`--net-gw:` word.
struct NetSettingOpt {
    /// The option, e.g. `--net-ip`.
    opt: &'static str,
    word: String,
    name: String,
    value: NetValue,
}

impl NetSettingOpt {
    /// Sets the value on `n`; false when it was already set.
    fn apply(&self, n: &mut NetParams) -> bool {
        match self.value {
            NetValue::Mac(m) => n.mac.replace(m).is_none(),
            NetValue::Ip(c) => n.ipv4.replace(c).is_none(),
            NetValue::Gateway(g) => n.gateway.replace(g).is_none(),
        }
    }
}

/// Parses one `--net-mac:NAME=…`-style word; `None` if it is not one.
fn net_setting(word: &str) -> Option<Result<NetSettingOpt, CliExit>> {
    let (prefix, what) = NET_SETTINGS
        .into_iter()
        .find(|(p, _)| word.starts_with(p))?;
    let rest = &word[prefix.len()..];
    let opt = prefix.trim_end_matches(':');
    let Some((name, value)) = rest.split_once('=') else {
        return Some(Err(usage_error(format_args!(
            "'{word}' needs a value: write {opt}:NAME={what}"
        ))));
    };
    if !is_valid_device_name(name) {
        return Some(Err(usage_error(format_args!(
            "'{word}': device name '{name}' must be 1 to {DEVICE_NAME_MAX} characters of A-Z a-z 0-9 _ -"
        ))));
    }
    let parsed = match prefix {
        "--net-mac:" => crate::net::parse_mac(value).map(NetValue::Mac),
        "--net-ip:" => crate::net::parse_cidr(value).map(NetValue::Ip),
        _ => crate::net::parse_ipv4(value, "gateway").map(NetValue::Gateway),
    };
    Some(match parsed {
        Ok(value) => Ok(NetSettingOpt {
            opt,
            word: word.to_string(),
            name: name.to_string(),
            value,
        }),
        Err(why) => Err(usage_error(format_args!("{opt}:{name}: {why}"))),
    })
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
    let (target, block) = match kind {
        DeviceKind::Block => match split_block_flags(target) {
            Ok(split) => split,
            Err(why) => return Some(Err(usage_error(format_args!("'{word}': {why}")))),
        },
        DeviceKind::Net => (target, BlockParams::default()),
    };
    if target.is_empty() {
        return Some(Err(usage_error(format_args!(
            "'{word}' names no {}: write --{k}:{name}={what}",
            what.to_ascii_lowercase()
        ))));
    }
    if kind == DeviceKind::Net
        && (target.len() > crate::net::IFNAME_MAX
            || target.contains(|c: char| c == '/' || c == ':' || c.is_whitespace()))
    {
        return Some(Err(usage_error(format_args!(
            "'{word}': '{target}' is not an interface name (at most {} characters, no '/', ':' or spaces)",
            crate::net::IFNAME_MAX
        ))));
    }
    Some(Ok(DeviceOpt {
        kind,
        name: name.to_string(),
        target: target.to_string(),
        net: NetParams::default(),
        block,
    }))
}

/// Splits device options off `argv` (up to a `--`), leaving the rest for clap.
pub fn split_device_options(
    argv: Vec<OsString>,
) -> Result<(Vec<OsString>, Vec<DeviceOpt>), CliExit> {
    let mut rest = Vec::with_capacity(argv.len());
    let mut devices: Vec<DeviceOpt> = Vec::new();
    let mut settings: Vec<NetSettingOpt> = Vec::new();
    let mut iter = argv.into_iter();
    // argv[0] is the program.
    rest.extend(iter.next());
    for word in iter.by_ref() {
        if word == "--" {
            rest.push(word);
            break;
        }
        if let Some(setting) = word.to_str().and_then(net_setting) {
            settings.push(setting?);
            continue;
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
    for s in settings {
        let Some(dev) = devices
            .iter_mut()
            .find(|d| d.name == s.name && d.kind == DeviceKind::Net)
        else {
            return Err(usage_error(format_args!(
                "'{}' is for net device '{}', but no --net:{}=TAP is given; add it (or drop the option)",
                s.word, s.name, s.name
            )));
        };
        if !s.apply(&mut dev.net) {
            return Err(usage_error(format_args!(
                "{}:{} is given twice",
                s.opt, s.name
            )));
        }
    }
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
        dns: args.dns,
        start_fifo: args.start_fifo,
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
                    target: "tap0".into(),
                    net: NetParams::default(),
                    block: BlockParams::default(),
                },
                DeviceOpt {
                    kind: DeviceKind::Block,
                    name: "disk".into(),
                    target: "/tmp/d.img".into(),
                    net: NetParams::default(),
                    block: BlockParams::default(),
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
            "--net:a=tap-name-too-long0",
            "--net:a=../tap0",
        ] {
            let e = err(&[bad, "img"]);
            assert_eq!(e.status, exit_status::USAGE, "{bad}");
            assert_eq!(e.text.lines().count(), 1, "{}", e.text);
        }
        let e = err(&["--net:a=tap0", "--block:a=f", "img"]);
        assert!(e.text.contains("given twice"), "{}", e.text);
    }

    #[test]
    fn block_flags() {
        let o = run(&[
            "--block:www=site.img,ro",
            "--block:db=/d/kv,1.img,sync,ro",
            "img",
        ]);
        assert_eq!(o.devices[0].target, "site.img");
        assert_eq!(
            o.devices[0].block,
            BlockParams {
                read_only: true,
                sync: false
            }
        );
        assert_eq!(o.devices[1].target, "/d/kv,1.img");
        assert_eq!(
            o.devices[1].block,
            BlockParams {
                read_only: true,
                sync: true
            }
        );
        assert!(run(&["--block:a=x,sync", "img"]).devices[0].block.sync);
        for (word, wanted) in [
            ("--block:a=x,rw", "unknown block device flag ',rw'"),
            ("--block:a=x,ro,ro", "',ro' is given twice"),
            ("--block:a=,ro", "names no file"),
            ("--block:a=,sync,ro", "names no file"),
        ] {
            let e = err(&[word, "img"]);
            assert_eq!(e.status, exit_status::USAGE, "{word}");
            assert!(e.text.contains(wanted), "{word}: {}", e.text);
            assert_eq!(e.text.lines().count(), 1, "{}", e.text);
        }
        // Net targets keep their commas (and are refused as interface names elsewhere).
        assert_eq!(
            run(&["--net:a=tap0", "img"]).devices[0].block,
            BlockParams::default()
        );
    }

    #[test]
    fn net_settings() {
        let o = run(&[
            "--net-ip:service=10.0.7.2/24",
            "--net:service=tap0",
            "--net-mac:service=02:00:0a:00:07:02",
            "--net-gw:service=10.0.7.1",
            "--dns",
            "10.0.7.53",
            "img",
        ]);
        assert_eq!(
            o.devices[0].net,
            NetParams {
                mac: Some([2, 0, 10, 0, 7, 2]),
                ipv4: Some((Ipv4Addr::new(10, 0, 7, 2), 24)),
                gateway: Some(Ipv4Addr::new(10, 0, 7, 1)),
            }
        );
        assert_eq!(o.dns, Some(Ipv4Addr::new(10, 0, 7, 53)));
        let o = run(&["--net:service=tap0", "img"]);
        assert_eq!(o.devices[0].net, NetParams::default());
        assert_eq!(o.dns, None);
        for (words, wanted) in [
            (
                &["--net:a=tap0", "--net-mac:a=01:00:5e:00:00:01", "img"][..],
                "--net-mac:a: MAC address 01:00:5e:00:00:01 is a multicast",
            ),
            (
                &["--net:a=tap0", "--net-mac:a=00:00:00:00:00:00", "img"],
                "all zeros",
            ),
            (
                &["--net:a=tap0", "--net-mac:a=02:00:0a", "img"],
                "'02:00:0a' is not a MAC address",
            ),
            (
                &["--net:a=tap0", "--net-ip:a=10.0.7.2", "img"],
                "needs a prefix length",
            ),
            (
                &["--net:a=tap0", "--net-ip:a=10.0.7.2/40", "img"],
                "not a number from 0 to 32",
            ),
            (
                &["--net:a=tap0", "--net-ip:a=10.0.7.300/24", "img"],
                "is not an IPv4 address",
            ),
            (
                &["--net:a=tap0", "--net-gw:a=nope", "img"],
                "gateway 'nope' is not an IPv4 address",
            ),
            (&["--net:a=tap0", "--dns", "1.2.3", "img"], "name server"),
            (
                &["--net-ip:b=10.0.0.2/8", "--net:a=tap0", "img"],
                "is for net device 'b', but no --net:b=TAP is given",
            ),
            (
                &["--block:a=f", "--net-gw:a=10.0.0.1", "img"],
                "no --net:a=TAP is given",
            ),
            (
                &[
                    "--net:a=t",
                    "--net-gw:a=10.0.0.1",
                    "--net-gw:a=10.0.0.2",
                    "img",
                ],
                "--net-gw:a is given twice",
            ),
            (&["--net-ip:a", "img"], "needs a value"),
        ] {
            let e = err(words);
            assert_eq!(e.status, exit_status::USAGE, "{words:?}");
            assert!(e.text.contains(wanted), "{words:?}: {}", e.text);
            assert_eq!(e.text.lines().count(), 1, "{}", e.text);
        }
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
