//! The runc-compatible command line (clap derive), modeled on youki's `liboci-cli`:
//! global flags before the subcommand, then one of runc's commands.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `runnc [GLOBAL FLAGS] COMMAND …`
#[derive(Debug, Parser)]
#[command(
    name = "runnc",
    version,
    about = "An OCI runtime that runs Septem unikernel bundles with septem-run and hands every other bundle to runc."
)]
pub struct Cli {
    /// Directory for container state.
    #[arg(long, global = false, default_value = "/run/runnc", value_name = "DIR")]
    pub root: PathBuf,
    /// Append log lines (and every error) to this file.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug lines too.
    #[arg(long)]
    pub debug: bool,
    /// Use systemd's `slice:prefix:name` cgroupsPath form.
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Accepted for compatibility (`true`, `false`, `auto`).
    #[arg(long, value_name = "VALUE", num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Accepted for compatibility (checkpoint/restore are not supported).
    #[arg(long, value_name = "PATH", hide = true)]
    pub criu: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time=… level=… msg=…`
    Text,
    /// `{"level":…,"msg":…,"time":…}` (what containerd's go-runc reads).
    Json,
}

/// Output format of `list` and `ps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// JSON.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container (its process waits for `start`).
    Create(Create),
    /// Start a created container.
    Start(IdArg),
    /// Create and start a container; without -d wait for it and delete it.
    Run(Run),
    /// Print the state of a container as JSON.
    State(IdArg),
    /// Send a signal to the container's process.
    Kill(Kill),
    /// Delete a container's resources.
    Delete(Delete),
    /// List containers.
    List(List),
    /// List the processes of a container.
    Ps(Ps),
    /// Freeze the container's processes.
    Pause(IdArg),
    /// Thaw a paused container.
    Resume(IdArg),
    /// Print what this runtime supports as JSON.
    Features,
    /// Write a config.json template for a Septem unikernel bundle.
    Spec(Spec),
    /// Print the container's resource usage.
    Events(Events),
    /// Change the container's cgroup limits.
    Update(Update),
    /// Not supported by unikernels.
    Exec(Rest),
    /// Not supported by unikernels.
    Checkpoint(Rest),
    /// Not supported by unikernels.
    Restore(Rest),
}

/// A command taking only the container id.
#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The container id.
    pub id: String,
}

/// Arguments of commands runnc refuses (anything is accepted, then refused).
#[derive(Debug, clap::Args)]
pub struct Rest {
    /// Ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `create`.
#[derive(Debug, clap::Args)]
pub struct Create {
    /// The bundle directory (default: the current directory).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container process's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Accepted (no root pivot happens for unikernels).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted (no session keyring is made).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N extra file descriptors (3…3+N-1) to the container process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container id.
    pub id: String,
}

/// `run`.
#[derive(Debug, clap::Args)]
pub struct Run {
    /// The create flags.
    #[command(flatten)]
    pub create: Create,
    /// Return once the container is started.
    #[arg(short, long)]
    pub detach: bool,
    /// Accepted for compatibility.
    #[arg(long)]
    pub keep: bool,
}

/// `kill`.
#[derive(Debug, clap::Args)]
pub struct Kill {
    /// Signal every process of the container's cgroup.
    #[arg(short, long)]
    pub all: bool,
    /// The container id.
    pub id: String,
    /// The signal: a name (TERM, SIGTERM) or a number.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

/// `delete`.
#[derive(Debug, clap::Args)]
pub struct Delete {
    /// Kill the container first when it is not stopped.
    #[arg(short, long)]
    pub force: bool,
    /// The container id.
    pub id: String,
}

/// `list`.
#[derive(Debug, clap::Args)]
pub struct List {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print only the ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `ps`.
#[derive(Debug, clap::Args)]
pub struct Ps {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The container id.
    pub id: String,
    /// Accepted for compatibility (ps options).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `spec`.
#[derive(Debug, clap::Args)]
pub struct Spec {
    /// The bundle directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// The unikernel's path inside the rootfs.
    #[arg(long, default_value = "/unikernel/app.septem")]
    pub image: String,
    /// Accepted for compatibility (a rootless spec is the same for unikernels).
    #[arg(long)]
    pub rootless: bool,
}

/// `events`.
#[derive(Debug, clap::Args)]
pub struct Events {
    /// Print one stats line and exit.
    #[arg(long)]
    pub stats: bool,
    /// Interval between stats lines (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// The container id.
    pub id: String,
}

/// `update`.
#[derive(Debug, clap::Args)]
pub struct Update {
    /// Read the resources (OCI linux.resources JSON) from FILE, or stdin with `-`.
    #[arg(short = 'r', long = "resources")]
    pub resources: Option<String>,
    /// Memory limit (refused: guest memory is fixed at boot).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory + swap limit (refused like --memory).
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Memory reservation (refused like --memory).
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// CPU CFS quota in microseconds.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may use (cpuset list).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Maximum number of pids.
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// The container id.
    pub id: String,
}
