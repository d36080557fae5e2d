//! The per-container shim: a hidden mode of the septem-cri binary
//! (`septem-cri __shim <container dir> <runnc> <runnc args…>`) that keeps a
//! container's exit status when septem-cri itself is gone.
//!
//! septem-cri starts one shim per container (in a process group of its own, so a
//! Ctrl-C to septem-cri does not reach it) with:
//!
//! - stdin: the write end of a pipe, the **report** channel: the shim writes one line,
//!   `created <pid>` or `failed <why>`, and closes it;
//! - stdout, stderr: the write ends of the container's output FIFOs, which `runnc
//!   create` (and through it the container) inherits.
//!
//! The shim makes itself a child subreaper and creates the container: a Septem bundle
//! through runnc's library in the shim itself (the container process is then the
//! shim's child), any other bundle by running `runnc create` (the container process,
//! forked by runnc or runc, becomes the shim's child when they exit; its pid comes
//! from the pid file). It reports, and then lets go of the report pipe and the FIFOs (its descriptors
//! 0, 1 and 2 become `/dev/null` and `<dir>/shim.log`): from then on only the container
//! holds the FIFOs, so septem-cri's log copier sees end of file when the container is
//! gone. It waits for the container process (reaping any other orphan on the way),
//! writes `<dir>/exit.json` atomically (`exit.json.tmp`, fsync, rename) and exits.
//!
//! septem-cri waits for the shim (its child) or, after a restart, watches its pid
//! (`runtime/waiter.rs`), then reads `exit.json`. Signals do not go through the shim:
//! StopContainer's `runnc kill` signals the container process directly.
//!
//! Plain std + libc: no tokio; tracing only as runnc's logger, into runnc's `--log`
//! file (the shim's own messages go to `shim.log`).

use crate::{reaper, util};
use serde::{Deserialize, Serialize};
use std::io::{BufRead as _, Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The first argument that selects the shim mode.
pub const ARG: &str = "__shim";
/// runnc's pid file, in the container directory.
pub const PID_FILE: &str = "pid";
/// The exit record, in the container directory.
pub const EXIT_FILE: &str = "exit.json";
/// The shim's own messages, in the container directory.
pub const LOG_FILE: &str = "shim.log";

/// How a container ended, as the shim (or septem-cri) records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code (128 + N when killed by signal N; 255 when unknown).
    pub exit_code: i32,
    /// `Completed`, `Error` or `Unknown`.
    pub reason: String,
    /// Why, when the status is unknown.
    #[serde(default)]
    pub message: String,
    /// When (ns since the epoch).
    pub finished_at: i64,
}

impl Exit {
    /// An exit from a `waitpid` status.
    #[must_use]
    pub fn from_wait_status(status: i32) -> Exit {
        let exit_code = reaper::exit_code(status);
        Exit {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            finished_at: util::now_ns(),
        }
    }

    /// An exit nobody could wait for.
    #[must_use]
    pub fn unknown(message: impl Into<String>) -> Exit {
        Exit {
            exit_code: 255,
            reason: "Unknown".into(),
            message: message.into(),
            finished_at: util::now_ns(),
        }
    }
}

/// The exit record of the container in `dir`, if the shim wrote one.
#[must_use]
pub fn read_exit(dir: &Path) -> Option<Exit> {
    util::read_json::<Exit>(&dir.join(EXIT_FILE)).ok().flatten()
}

/// What the shim reported about `runnc create`.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// Created; the container process' pid.
    Created(i32),
    /// Failed, and why.
    Failed(String),
}

/// Parses the shim's report line (an empty one: the shim died before reporting).
#[must_use]
pub fn parse_report(text: &str) -> Report {
    let line = text.lines().next().unwrap_or_default();
    match line.split_once(' ') {
        Some(("created", pid)) => match pid.trim().parse() {
            Ok(pid) => Report::Created(pid),
            Err(_) => Report::Failed(format!("bad report from the shim: {line:?}")),
        },
        Some(("failed", why)) => Report::Failed(why.to_string()),
        _ if line.is_empty() => Report::Failed("the shim exited without reporting".into()),
        _ => Report::Failed(format!("bad report from the shim: {line:?}")),
    }
}

/// The shim's `main` (`args`: what follows [`ARG`]); its exit code.
#[must_use]
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let [dir, runnc, runnc_args @ ..] = args else {
        eprintln!("usage: septem-cri {ARG} <container dir> <runnc> <runnc args…>");
        return 2;
    };
    let dir = PathBuf::from(dir);
    close_inherited_fds();
    let mut report = match report_channel() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("septem-cri shim: no report channel on stdin: {e}");
            return 2;
        }
    };
    match create(&dir, Path::new(runnc), runnc_args) {
        Ok(pid) => {
            let _ = writeln!(report, "created {pid}");
            drop(report);
            if let Err(e) = let_go_of_stdio(&dir) {
                eprintln!("septem-cri shim: redirecting its stdio: {e}");
            }
            let exit = wait_for_container(pid);
            if let Err(e) = util::write_json_atomic(&dir.join(EXIT_FILE), &exit) {
                eprintln!("septem-cri shim: writing {EXIT_FILE}: {e}");
                return 1;
            }
            0
        }
        Err(why) => {
            let _ = writeln!(report, "failed {why}");
            1
        }
    }
}

/// Closes every descriptor above stderr that septem-cri's own parent may have leaked
/// into it (e.g. a jobserver pipe): the shim, runnc and the container keep none of them.
fn close_inherited_fds() {
    // SAFETY: called first thing in the shim, when nothing in this process owns a
    // descriptor above 2; close_range takes integers only.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        eprintln!(
            "septem-cri shim: close_range: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A writable duplicate of stdin (the report pipe's write end), close-on-exec so that
/// runnc and the container never hold it.
fn report_channel() -> std::io::Result<std::fs::File> {
    Ok(std::fs::File::from(
        std::io::stdin().as_fd().try_clone_to_owned()?,
    ))
}

/// Becomes a subreaper and creates the container; the container process' pid. A
/// Septem bundle is created in this process by runnc's library (one exec less on the
/// pod's critical path); any other bundle by the runnc binary, which hands it to runc.
fn create(dir: &Path, runnc: &Path, args: &[std::ffi::OsString]) -> Result<i32, String> {
    reaper::become_subreaper().map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    if let Some(created) = create_in_process(runnc, args)? {
        return Ok(created);
    }
    let mut child = Command::new(runnc)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("running {}: {e}", runnc.display()))?;
    let status = util::wait_timeout(&mut child, util::COMMAND_TIMEOUT)
        .map_err(|e| format!("runnc create: {e}"))?;
    if !status.success() {
        return Err(format!("runnc create: {status}"));
    }
    let text = std::fs::read_to_string(dir.join(PID_FILE))
        .map_err(|e| format!("reading runnc's pid file: {e}"))?;
    text.trim()
        .parse()
        .map_err(|e| format!("runnc's pid file {text:?}: {e}"))
}

/// `runnc <args>` (a `create`) through runnc's library, as the runnc binary would run
/// it (same log file, settings, state); None when it is not a `create` of a Septem
/// bundle. Errors are logged as the binary logs them and returned as the report's text.
fn create_in_process(runnc: &Path, args: &[std::ffi::OsString]) -> Result<Option<i32>, String> {
    use clap::Parser as _;
    let argv = std::iter::once(runnc.as_os_str()).chain(args.iter().map(|a| a.as_os_str()));
    let Ok(cli) = runnc::cli::Cli::try_parse_from(argv) else {
        return Ok(None); // the binary will say what is wrong with them
    };
    let runnc::cli::Command::Create(c) = &cli.command else {
        return Ok(None);
    };
    let fail = |e: String| {
        runnc::logging::error(&e);
        format!("runnc create: {e}")
    };
    let ctx = runnc::commands::Ctx::from_cli(&cli, args.to_vec(), Some(runnc))
        .map_err(|e| fail(format!("{:#}", anyhow::Error::new(e))))?;
    match runnc::commands::create_in_process(&ctx, c) {
        // Dropping `created` unlocks the container for start, kill and delete.
        Ok(Some(created)) => Ok(Some(created.state.pid)),
        Ok(None) => Ok(None),
        Err(e) => Err(fail(format!("{:#}", anyhow::Error::new(e)))),
    }
}

/// Points descriptors 0 and 1 at `/dev/null` and 2 at `<dir>/shim.log`: the report
/// pipe and the output FIFOs are then held by the container alone.
fn let_go_of_stdio(dir: &Path) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
    {
        Ok(f) => f,
        Err(_) => null.try_clone()?,
    };
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (log.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 on descriptors this process owns (`from` stays open until the
        // files drop below); it only replaces what `to` referred to.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits for child `pid` (reaping every other orphan that comes by) and says how it
/// ended. When it is not our child (runnc made it some other way) it is watched until
/// it is gone, its status unknown.
fn wait_for_container(pid: i32) -> Exit {
    let start = reaper::start_time(pid);
    loop {
        let mut status = 0;
        // SAFETY: status is a valid int for waitpid to write.
        let rc = unsafe { libc::waitpid(-1, &mut status, 0) };
        if rc == pid {
            reap_zombies();
            return Exit::from_wait_status(status);
        }
        if rc > 0 {
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {}
            _ => {
                // ECHILD: the container is not (or no longer) our child.
                while start.is_some() && reaper::start_time(pid) == start {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return Exit::unknown(
                    "the container process was not the shim's child: exit status unknown",
                );
            }
        }
    }
}

/// Reaps the zombies already there (orphans of the container), without waiting.
fn reap_zombies() {
    let mut status = 0;
    // SAFETY: status is a valid int; WNOHANG never blocks.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

/// Reads the shim's report from `reader` (the pipe's read end) within `timeout`.
pub fn read_report(reader: std::fs::File, timeout: Duration) -> Report {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("shim-report".into())
        .spawn(move || {
            let mut text = String::new();
            let _ = std::io::BufReader::new(reader.take(4096)).read_line(&mut text);
            let _ = tx.send(text);
        });
    if let Err(e) = spawned {
        return Report::Failed(format!("no thread to read the shim's report: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(text) => parse_report(&text),
        Err(_) => Report::Failed(format!("no report from the shim within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_parsed() {
        assert_eq!(parse_report("created 42\n"), Report::Created(42));
        assert_eq!(
            parse_report("failed runnc create: exit status: 1\n"),
            Report::Failed("runnc create: exit status: 1".into())
        );
        assert!(matches!(parse_report(""), Report::Failed(m) if m.contains("without reporting")));
        assert!(matches!(parse_report("created x"), Report::Failed(m) if m.contains("bad report")));
    }

    #[test]
    fn exits_from_wait_statuses() {
        // WIFEXITED with code 7; WIFSIGNALED with SIGTERM.
        let e = Exit::from_wait_status(7 << 8);
        assert_eq!((e.exit_code, e.reason.as_str()), (7, "Error"));
        let e = Exit::from_wait_status(0);
        assert_eq!((e.exit_code, e.reason.as_str()), (0, "Completed"));
        let e = Exit::from_wait_status(libc::SIGTERM);
        assert_eq!((e.exit_code, e.reason.as_str()), (143, "Error"));
    }
}
