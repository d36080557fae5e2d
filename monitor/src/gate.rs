//! The start gate (`--start-fifo FIFO`): septem-run sets the guest up first — image
//! read and loaded, devices attached, under KVM the VM and its vCPU built — and then
//! waits at the gate: it opens FIFO for writing, which blocks until a reader opens it,
//! writes one byte, closes it, and only then starts the guest (with the boot clocks in
//! `BootInfo` taken again, so the guest's uptime starts at the gate).
//!
//! This is runc's exec fifo protocol: runnc's `create` runs septem-run with the
//! container's exec fifo as FIFO, and `start` (the reader) releases a guest that is
//! ready to run. The set-up then overlaps the rest of `create` instead of lying on the
//! start path, and the taps are attached from `create` on, so frames that arrive before
//! `start` wait in the tap's queue instead of being dropped.
//!
//! Until the gate opens nothing is sealed and no signal is blocked: SIGTERM or SIGKILL
//! end septem-run as they would any process.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

/// Errors at the gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The path is not a FIFO.
    #[error("--start-fifo {0}: not a FIFO (make one with mkfifo)")]
    NotFifo(String),
    /// It cannot be opened, written or examined.
    #[error("--start-fifo {path}: cannot {what}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl GateError {
    /// The system error number behind it (0 when there is none).
    #[must_use]
    pub fn errno(&self) -> i32 {
        match self {
            GateError::NotFifo(_) => 0,
            GateError::Io { source, .. } => source.raw_os_error().unwrap_or(0),
        }
    }
}

fn io_error<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> GateError + 'a {
    move |source| GateError::Io {
        path: path.display().to_string(),
        what,
        source,
    }
}

/// Checks that `path` is a FIFO, before any set-up work (a typo fails at once).
pub fn check(path: &Path) -> Result<(), GateError> {
    let meta = std::fs::metadata(path).map_err(io_error(path, "examine it"))?;
    if meta.file_type().is_fifo() {
        Ok(())
    } else {
        Err(GateError::NotFifo(path.display().to_string()))
    }
}

/// Waits at the gate: opens `path` for writing (blocking until a reader opens it),
/// writes one byte and closes it.
pub fn wait(path: &Path) -> Result<(), GateError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| GateError::NotFifo(path.display().to_string()))?;
    let fd = loop {
        // SAFETY: `c_path` is a NUL-terminated path; the descriptor is closed below.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            break fd;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(io_error(path, "open it for writing")(e));
        }
    };
    let written = write_one_byte(fd);
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    written.map_err(io_error(path, "write to it"))
}

fn write_one_byte(fd: libc::c_int) -> io::Result<()> {
    // The path was checked to be a FIFO, but it could have been replaced since.
    // SAFETY: `st` is plain storage for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is valid storage.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a FIFO"));
    }
    loop {
        // SAFETY: one byte from a static buffer to an open descriptor.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n == 1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn the_gate_opens_when_a_reader_comes() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("exec.fifo");
        mkfifo(&fifo);
        check(&fifo).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        let waiter = std::thread::spawn(move || {
            let r = wait(&f);
            tx.send(()).unwrap();
            r
        });
        // No reader yet: the waiter stays at the gate.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err());
        let mut byte = [0u8; 1];
        std::fs::File::open(&fifo)
            .unwrap()
            .read_exact(&mut byte)
            .unwrap();
        assert_eq!(&byte, b"0");
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn a_plain_file_or_a_missing_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(check(&file), Err(GateError::NotFifo(_))));
        assert!(matches!(
            check(&dir.path().join("missing")),
            Err(GateError::Io { .. })
        ));
        assert!(wait(&file).is_err(), "a regular file is no gate");
    }
}
