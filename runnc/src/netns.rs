//! A persistent network namespace runnc makes itself (a bundle with a network
//! namespace entry but no path, and an image with net devices): a fresh namespace,
//! unshared by a short-lived thread, bind-mounted at `<root>/<id>/netns` so taps can be
//! made in it before the container process joins it; unmounted at `delete`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

/// Errors making or removing the namespace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step failed.
    #[error("cannot {what} network namespace {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The bind mount's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Makes a new network namespace and bind-mounts it at `path`.
pub fn create(path: &Path) -> Result<(), Error> {
    let err = |what, source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    std::fs::File::create(path).map_err(|e| err("create the mount point of", e))?;
    let target = cpath(path);
    let result = std::thread::spawn(move || -> Result<(), (&'static str, std::io::Error)> {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(("unshare", std::io::Error::last_os_error()));
        }
        let src = c"/proc/thread-self/ns/net";
        // SAFETY: both paths are valid C strings; a bind mount takes no data.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(("bind-mount", std::io::Error::last_os_error()));
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(("make", std::io::Error::other("thread panicked"))));
    if let Err((what, e)) = result {
        let _ = std::fs::remove_file(path);
        return Err(err(what, e));
    }
    Ok(())
}

/// Unmounts and removes `path`; absent or not mounted is fine.
pub fn remove(path: &Path) -> Result<(), Error> {
    let c = cpath(path);
    // SAFETY: c is a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(Error::Io {
                what: "unmount",
                path: path.to_path_buf(),
                source: e,
            });
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
