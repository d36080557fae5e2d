//! Pod network namespaces, made and removed in-process the way `ip netns add/del`
//! does it (no command per pod): a file `/run/netns/<name>` with the namespace
//! bind-mounted on it, `/run/netns` itself a shared mount so that the bind mounts
//! reach other mount namespaces, and `lo` up in the new namespace. `ip netns list`,
//! `ip netns exec` and the CNI plugins see them as their own.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where named network namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const RUN_DIR: &str = "/run/netns";

/// Errors of namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("network namespace {path}: {what}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The namespace file (or the run directory).
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn sys(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Sys { what, path, source }
}

fn cpath(p: &Path) -> CString {
    // Paths built here from a directory constant and a pod id never hold NUL.
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// The namespace file of `name`.
#[must_use]
pub fn path_of(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// Makes `/run/netns` a shared mount point (once per boot), as iproute2 does: first
/// try to make it shared; when it is no mount point yet, bind-mount it onto itself and
/// try again.
fn ensure_run_dir() -> Result<(), Error> {
    let dir = Path::new(RUN_DIR);
    std::fs::create_dir_all(dir).map_err(sys("create the directory", dir))?;
    let c = cpath(dir);
    let make_shared = || {
        // SAFETY: a valid C path; no source, type or data for a propagation change.
        let rc = unsafe {
            libc::mount(
                c"none".as_ptr(),
                c.as_ptr(),
                c"none".as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match make_shared() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: valid C paths; a recursive bind mount takes no data.
            let rc = unsafe {
                libc::mount(
                    c.as_ptr(),
                    c.as_ptr(),
                    c"none".as_ptr(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(sys("bind-mount onto itself", dir)(
                    std::io::Error::last_os_error(),
                ));
            }
            make_shared().map_err(sys("make shared", dir))
        }
        Err(e) => Err(sys("make shared", dir)(e)),
    }
}

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and is owned here alone.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is a plain C struct; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: raw is an open socket; req is a valid ifreq naming "lo".
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; the kernel reads the name and flags.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the namespace `name` (`/run/netns/<name>`) with `lo` up; its path. Nothing
/// is left behind when it fails.
pub fn create(name: &str) -> Result<PathBuf, Error> {
    ensure_run_dir()?;
    let path = path_of(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(sys("create the mount point", &path))?;
    let target = cpath(&path);
    let made = std::thread::spawn(move || -> Result<(), (&'static str, std::io::Error)> {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(("unshare", std::io::Error::last_os_error()));
        }
        loopback_up().map_err(|e| ("set lo up in", e))?;
        // SAFETY: both are valid C paths; a bind mount takes no type or data.
        let rc = unsafe {
            libc::mount(
                c"/proc/thread-self/ns/net".as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(("bind-mount", std::io::Error::last_os_error()));
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(("make", std::io::Error::other("the thread panicked"))));
    if let Err((what, source)) = made {
        let _ = std::fs::remove_file(&path);
        return Err(Error::Sys { what, path, source });
    }
    Ok(path)
}

/// Removes the namespace `name`: the bind mount (lazily, as `ip netns del`) and the
/// file. The namespace itself goes when nothing else holds it. A missing one is fine.
pub fn delete(name: &str) -> Result<(), Error> {
    let path = path_of(name);
    if !path.exists() {
        return Ok(());
    }
    let c = cpath(&path);
    // SAFETY: a valid C path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        // EINVAL: not a mount point (a half-made namespace): just remove the file.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(sys("unmount", &path)(e));
        }
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(sys("remove", &path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn made_namespace_is_an_ip_netns_with_lo_up_and_goes_away() {
        if !root() {
            eprintln!("SKIPPED: making network namespaces needs root");
            return;
        }
        let name = format!("septem-unit-{}", std::process::id());
        let path = create(&name).expect("create");
        assert_eq!(path, path_of(&name));
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip");
        assert!(String::from_utf8_lossy(&list.stdout).contains(&name));
        let lo = Command::new("ip")
            .args(["-n", &name, "-j", "link", "show", "lo"])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&lo.stdout);
        assert!(text.contains("\"UP\""), "lo not up: {text}");
        // A second one of the same name is refused, and the first is untouched.
        assert!(create(&name).is_err());
        assert!(path.exists());
        delete(&name).expect("delete");
        assert!(!path.exists());
        delete(&name).expect("delete again");
    }
}
