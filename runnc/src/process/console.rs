//! `process.terminal`: a pty whose master goes to the caller over `--console-socket`
//! (SCM_RIGHTS, with the pty's name as the message, like runc) and whose slave becomes
//! the container process's stdio and controlling terminal.

use std::ffi::CStr;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Errors setting up the console.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pty call failed.
    #[error("cannot allocate a pty ({0})")]
    Pty(&'static str, #[source] std::io::Error),
    /// The console socket cannot be used.
    #[error("cannot send the pty master over {path}")]
    Socket {
        /// The socket.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn last(what: &'static str) -> Error {
    Error::Pty(what, std::io::Error::last_os_error())
}

/// Allocates a pty, sends the master over `socket`, returns the slave.
pub fn setup(socket: &Path) -> Result<OwnedFd, Error> {
    // SAFETY: posix_openpt has no memory preconditions.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(last("posix_openpt"));
    }
    // SAFETY: master is a descriptor we just opened and now own.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt/unlockpt on our master; ptsname_r writes into `name` (its length given).
    unsafe {
        if libc::grantpt(master.as_raw_fd()) != 0 {
            return Err(last("grantpt"));
        }
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(last("unlockpt"));
        }
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return Err(last("ptsname_r"));
        }
    }
    // SAFETY: ptsname_r NUL-terminated `name`.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: name is a valid C string.
    let slave = unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(last("open slave"));
    }
    // SAFETY: slave was just opened and is ours.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    send_fd(socket, &master, name.to_bytes()).map_err(|source| Error::Socket {
        path: socket.display().to_string(),
        source,
    })?;
    Ok(slave)
}

fn send_fd(socket: &Path, fd: &OwnedFd, name: &[u8]) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let mut iov = libc::iovec {
        iov_base: name.as_ptr() as *mut libc::c_void,
        iov_len: name.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg points at cbuf, which has room for one cmsg with one int; CMSG_FIRSTHDR
    // and CMSG_DATA stay inside it; sendmsg reads iov and cbuf, both live.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd.as_raw_fd());
        if libc::sendmsg(stream.as_raw_fd(), &msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
