//! OCI hooks: each runs with the container's state JSON on stdin, its own args and
//! env, and its timeout (seconds); a non-zero exit, a failure to run it or a timeout
//! fails it.

use oci_spec::runtime::Hook;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Errors of a hook.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hook could not be run.
    #[error("{kind} hook {path} could not be run")]
    Spawn {
        /// Which hook list.
        kind: &'static str,
        /// The hook's path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The hook failed.
    #[error("{kind} hook {path} failed: {why}")]
    Failed {
        /// Which hook list.
        kind: &'static str,
        /// The hook's path.
        path: String,
        /// Exit status, signal or timeout.
        why: String,
    },
}

/// Runs `hooks` in order; stops at the first failure.
pub fn run(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state: &serde_json::Value,
) -> Result<(), Error> {
    let input = state.to_string();
    for hook in hooks.map(Vec::as_slice).unwrap_or_default() {
        let path = hook.path().display().to_string();
        tracing::debug!("running {kind} hook {path}");
        let mut cmd = Command::new(hook.path());
        if let Some(args) = hook.args() {
            if let Some((first, rest)) = args.split_first() {
                use std::os::unix::process::CommandExt as _;
                cmd.arg0(first);
                cmd.args(rest);
            }
        }
        cmd.env_clear();
        for kv in hook.env().as_deref().unwrap_or_default() {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            kind,
            path: path.clone(),
            source,
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let deadline = hook
            .timeout()
            .filter(|t| *t > 0)
            .map(|t| Instant::now() + Duration::from_secs(t as u64));
        let failed = |why: String| Error::Failed {
            kind,
            path: path.clone(),
            why,
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => return Err(failed(status.to_string())),
                Ok(None) => {}
                Err(e) => return Err(failed(e.to_string())),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "timed out after {} s",
                    hook.timeout().unwrap_or(0)
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}
