//! The commands. Each returns the process exit status or an [`Error`]; ids and
//! bundles runnc does not own are handed to runc ([`Ctx::forward`]).

mod create;
mod delete;
mod events;
mod features;
mod kill;
mod pause;
mod query;
mod run;
mod spec;
mod start;
mod update;

use crate::cli::Command;
use crate::settings::Settings;
use crate::state::{Dir, State};
use std::ffi::OsString;
use std::path::PathBuf;

pub use create::{create_in_process, Created};
pub use delete::teardown;
pub use start::start_in_process;

/// Errors of the commands: each module's own, plus plain refusals.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// State handling.
    #[error(transparent)]
    State(#[from] crate::state::Error),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::Error),
    /// The cgroup.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::Error),
    /// The network wiring.
    #[error(transparent)]
    Network(#[from] crate::network::Error),
    /// runnc's own network namespace.
    #[error(transparent)]
    Netns(#[from] crate::netns::Error),
    /// The container process.
    #[error(transparent)]
    Process(#[from] crate::process::Error),
    /// The console.
    #[error(transparent)]
    Console(#[from] crate::process::console::Error),
    /// A hook.
    #[error(transparent)]
    Hook(#[from] crate::hooks::Error),
    /// runc.
    #[error(transparent)]
    Runc(#[from] crate::runc::Error),
    /// A signal name.
    #[error(transparent)]
    Signal(#[from] crate::signal::Error),
    /// A system call or file operation.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A refusal with its reason (wrong state, unsupported command…).
    #[error("{0}")]
    Refused(String),
}

/// What every command gets.
#[derive(Debug)]
pub struct Ctx {
    /// `--root`.
    pub root: PathBuf,
    /// Config file and environment.
    pub settings: Settings,
    /// `--systemd-cgroup`.
    pub systemd: bool,
    /// runnc's argv without argv[0] (for forwarding to runc).
    pub args: Vec<OsString>,
}

/// Why a [`Ctx`] cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `--log` file.
    #[error(transparent)]
    Log(#[from] crate::logging::Error),
    /// The config file or the environment.
    #[error("runnc configuration")]
    Settings(#[source] crate::settings::Error),
}

impl Ctx {
    /// What the runnc binary does first: the logger from the global flags, the
    /// settings (`septem-run` defaults to the one next to `runnc`, the runnc binary
    /// itself or, for septem-cri's shim, the one it would otherwise run), the context.
    /// `args` is the argv without argv\[0\].
    pub fn from_cli(
        cli: &crate::cli::Cli,
        args: Vec<OsString>,
        runnc: Option<&std::path::Path>,
    ) -> Result<Ctx, SetupError> {
        crate::logging::init(
            cli.log.as_deref(),
            cli.log_format == crate::cli::LogFormat::Json,
            cli.debug,
        )?;
        let settings = Settings::load_for(runnc).map_err(SetupError::Settings)?;
        Ok(Ctx {
            root: crate::bundle::absolute(&cli.root),
            settings,
            systemd: cli.systemd_cgroup,
            args,
        })
    }

    /// Replaces this process with runc on the same argv (root rewritten); returns
    /// only when runc cannot be executed.
    #[must_use]
    pub fn forward(&self) -> Error {
        crate::runc::exec(&self.settings.runc, &self.args, &self.root).into()
    }

    /// Locks `<root>/<id>` and reads its state; hands the command to runc when runnc
    /// has no such container.
    pub fn open(&self, id: &str) -> Result<(Dir, State), Error> {
        open_owned(&self.root, id)?.ok_or_else(|| self.forward())
    }
}

/// Locks `<root>/<id>` and reads its state; None when runnc has no such container
/// (for a library caller, which must not be replaced by runc as [`Ctx::open`] does).
pub(crate) fn open_owned(root: &std::path::Path, id: &str) -> Result<Option<(Dir, State)>, Error> {
    let Some(dir) = Dir::open(root, id)? else {
        return Ok(None);
    };
    match dir.load()? {
        Some(s) => Ok(Some((dir, s))),
        None => Err(Error::Refused(format!(
            "container {id} has no state (its create did not finish); run `runnc delete {id}`"
        ))),
    }
}

/// An io error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn unsupported(what: &str, why: &str) -> Error {
    Error::Refused(format!("{what} is not supported by unikernels: {why}"))
}

/// Runs one command; returns the exit status.
pub fn dispatch(ctx: &Ctx, cmd: &Command) -> Result<i32, Error> {
    match cmd {
        Command::Create(c) => create::create(ctx, c).map(|_| 0),
        Command::Start(a) => start::start(ctx, &a.id).map(|()| 0),
        Command::Run(r) => run::run(ctx, r),
        Command::State(a) => query::state(ctx, &a.id).map(|()| 0),
        Command::Kill(k) => kill::kill(ctx, k).map(|()| 0),
        Command::Delete(d) => delete::delete(ctx, d).map(|()| 0),
        Command::List(l) => query::list(ctx, l).map(|()| 0),
        Command::Ps(p) => query::ps(ctx, p).map(|()| 0),
        Command::Pause(a) => pause::pause(ctx, &a.id, true).map(|()| 0),
        Command::Resume(a) => pause::pause(ctx, &a.id, false).map(|()| 0),
        Command::Features => features::features().map(|()| 0),
        Command::Spec(s) => spec::spec(s).map(|()| 0),
        Command::Events(e) => events::events(ctx, e).map(|()| 0),
        Command::Update(u) => update::update(ctx, u).map(|()| 0),
        Command::Exec(_) => Err(unsupported(
            "exec",
            "a unikernel is one application in one address space; there is no way to start a second process inside it",
        )),
        Command::Checkpoint(_) => Err(unsupported(
            "checkpoint",
            "septem-run cannot save a running guest's memory and device state",
        )),
        Command::Restore(_) => Err(unsupported(
            "restore",
            "septem-run cannot resume a guest from saved memory and device state",
        )),
    }
}
