//! Small helpers: atomic JSON files, clocks, ids, external commands.

use serde::{de::DeserializeOwned, Serialize};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Writes `value` as JSON to `path` atomically (`<path>.tmp`, then rename), without
/// fsync: for the runtime's records of pods, containers and exits. A septem-cri crash
/// keeps them (the page cache survives it); an OS crash takes every process,
/// namespace and tap they describe with it, so making them durable would buy nothing
/// (runc and runnc do the same with their state).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_json(path, value, false)
}

/// [`write_json_atomic`] plus an fsync of the file before the rename: for what must
/// outlive a reboot (the image index, the pod CIDR).
pub fn write_json_durable<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_json(path, value, true)
}

fn write_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Nanoseconds since the Unix epoch.
#[must_use]
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `ns` since the epoch as RFC 3339 with nanoseconds in UTC (`2026-11-27T21:06:39.115000000Z`).
#[must_use]
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A fresh random id: 32 lowercase hex digits from `/dev/urandom`.
pub fn random_id() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// Where the time of one request went: named laps, logged as one debug line
/// (`SEPTEM_CRI_LOG=septem_cri=debug`), e.g.
/// `CreateContainer took rootfs=0.42ms bundle=0.09ms … shim_report=4.12ms save=0.22ms`.
pub struct Laps {
    what: &'static str,
    start: Instant,
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    /// Starts timing `what`.
    #[must_use]
    pub fn start(what: &'static str) -> Laps {
        let now = Instant::now();
        Laps {
            what,
            start: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Ends the lap `name` (the time since the previous lap).
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    /// Logs the laps and the total at debug level for `id`.
    pub fn log(&self, id: &str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let laps: Vec<String> = self
                .laps
                .iter()
                .map(|(n, d)| format!("{n}={:.2}ms", d.as_secs_f64() * 1e3))
                .collect();
            tracing::debug!(
                id,
                total_ms = self.start.elapsed().as_secs_f64() * 1e3,
                "{} took {}",
                self.what,
                laps.join(" ")
            );
        }
    }
}

/// What an external command did.
#[derive(Debug)]
pub struct Output {
    /// Exit status (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// True on exit status 0.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// How long an external command (runnc, ip, a CNI plugin) may take before it is
/// killed: a gRPC call must never hang.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd` with `stdin` (if any), capturing its output; killed after
/// [`COMMAND_TIMEOUT`] (an error of kind `TimedOut`).
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> std::io::Result<Output> {
    run_with_timeout(cmd, stdin, COMMAND_TIMEOUT)
}

/// [`run`] with a timeout of its own.
pub fn run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = crate::reaper::spawn(cmd)?;
    let pid = i32::try_from(child.id()).unwrap_or(-1);
    let result = wait_for(&mut child, stdin, timeout);
    crate::reaper::forget(pid);
    result
}

/// Waits for `child` at most `timeout`, then kills it (an error of kind `TimedOut`).
/// The wait blocks on a pidfd, so the exit is seen the moment it happens.
pub fn wait_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    let pidfd = crate::reaper::pidfd_open(i32::try_from(child.id()).unwrap_or(-1))?;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("did not finish within {timeout:?}; killed"),
            ));
        }
        crate::reaper::poll_readable(&pidfd, Some(left));
    }
}

fn wait_for(
    child: &mut std::process::Child,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Output> {
    fn drain(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A plugin may exit without reading everything: not our error.
        let _ = pipe.write_all(input);
    }
    let status = wait_timeout(child, timeout)?;
    Ok(Output {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_captured_and_killed_after_their_timeout() {
        let out = run(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            Some(b"in"),
        )
        .unwrap();
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(3), "in", "err\n")
        );
        let t = Instant::now();
        let e = run_with_timeout(
            Command::new("sleep").arg("30"),
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(1_795_813_599_115_000_001),
            "2026-11-27T21:06:39.115000001Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
