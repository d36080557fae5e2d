//! Container logs in the CRI file format the kubelet reads:
//! `<RFC3339Nano> <stream> <F|P> <text>`, one line per line the container wrote; a line
//! longer than [`MAX_LINE`] is cut into `P` (partial) pieces ending with an `F` one.
//! Each stream is a FIFO in the container's directory read by a thread of its own;
//! both write to one file, which `ReopenContainerLog` reopens (after the kubelet rotated
//! it). FIFOs rather than pipes so that a restarted septem-cri can open them again and
//! go on copying: while no one reads, the monitor's writes fail with `EPIPE` (it ignores
//! `SIGPIPE`), so the guest keeps running and that output is lost.

use crate::util;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Longest piece written as one log line.
pub const MAX_LINE: usize = 16 * 1024;

/// The shared log file.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Opens (appends to) `path`, creating its directory.
    pub fn open(path: &Path) -> std::io::Result<Arc<LogFile>> {
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(Some(open(path)?)),
        }))
    }

    /// Reopens the file (the old one may have been renamed away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let f = open(&self.path)?;
        *self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(f);
        Ok(())
    }

    fn write(&self, stream: &str, tag: char, text: &[u8]) {
        let mut line =
            format!("{} {stream} {tag} ", util::rfc3339_nano(util::now_ns())).into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = guard.as_mut() {
            // A full disk must not stop the container: the line is lost.
            let _ = f.write_all(&line);
        }
    }
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd as _;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the FIFO `path` and opens it: (read end, write end), both close-on-exec.
pub fn fifo(path: &Path) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let read = open_reader(path)?;
    let write = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok((read, OwnedFd::from(write)))
}

/// Opens the FIFO `path` for reading without waiting for a writer (then blocking).
pub fn open_reader(path: &Path) -> std::io::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let fd = OwnedFd::from(f);
    // SAFETY: fd is an open descriptor we own; F_GETFL/F_SETFL take integer flags.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Copies `reader` into `log` as `stream` lines until end of file, on a new thread.
pub fn copy(reader: OwnedFd, stream: &'static str, log: Arc<LogFile>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("log-{stream}"))
        .spawn(move || {
            let mut r = BufReader::new(File::from(reader));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = match r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    log.write(stream, 'F', &buf);
                } else if n == MAX_LINE {
                    log.write(stream, 'P', &buf);
                } else {
                    // End of file inside a line: the line is complete.
                    log.write(stream, 'F', &buf);
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partial_lines_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/0.log");
        let log = LogFile::open(&path).unwrap();
        let (r, w) = pipe().unwrap();
        copy(r, "stdout", log.clone()).unwrap();
        let mut w = File::from(w);
        let long = vec![b'x'; MAX_LINE + 10];
        w.write_all(b"hello\nworld\r\n").unwrap();
        w.write_all(&long).unwrap();
        w.write_all(b"\nlast").unwrap();
        drop(w);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let t = std::fs::read_to_string(&path).unwrap();
            if t.lines().count() >= 5 || std::time::Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].ends_with(" stdout F hello"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F world"));
        assert!(lines[2].contains(" stdout P xxx"));
        assert!(lines[3].ends_with(" stdout F xxxxxxxxxx"));
        assert!(lines[4].ends_with(" stdout F last"));
        let ts = lines[0].split(' ').next().unwrap();
        assert_eq!(ts.len(), "2026-11-27T21:06:39.115000000Z".len(), "{ts}");
        std::fs::rename(&path, dir.path().join("sub/0.log.1")).unwrap();
        log.reopen().unwrap();
        assert!(path.exists());
    }

    #[test]
    fn a_fifo_can_be_read_again_after_its_reader_went_away() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("out.fifo");
        let (r, w) = fifo(&f).unwrap();
        let mut w = File::from(w);
        w.write_all(b"one\n").unwrap();
        let mut buf = [0u8; 4];
        File::from(r).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"one\n");
        // No reader: EPIPE (SIGPIPE is ignored by Rust programs).
        assert_eq!(
            w.write_all(b"lost\n").unwrap_err().raw_os_error(),
            Some(libc::EPIPE)
        );
        let r = open_reader(&f).unwrap();
        w.write_all(b"two\n").unwrap();
        drop(w);
        let mut rest = String::new();
        File::from(r).read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "two\n");
    }
}
