//! Handing bundles and ids runnc does not own to runc: the same argv, with runnc's
//! `--root R` made `--root R/.runc` so the two runtimes never share state.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors running runc.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// runc cannot be executed.
    #[error("cannot execute runc ({path})")]
    Exec {
        /// The runc path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `runc list` failed or printed something else than JSON.
    #[error("runc list failed: {0}")]
    List(String),
}

/// runc's state directory under runnc's root.
#[must_use]
pub fn runc_root(root: &Path) -> PathBuf {
    root.join(".runc")
}

/// runnc's argv (without argv[0]) with the root rewritten for runc.
#[must_use]
pub fn forward_args(args: &[OsString], root: &Path) -> Vec<OsString> {
    let new_root = runc_root(root).into_os_string();
    let mut out = Vec::with_capacity(args.len() + 2);
    let mut replaced = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if !replaced && (a == b"--root" || a == b"-root") {
            out.push(args[i].clone());
            out.push(new_root.clone());
            replaced = true;
            i += 2;
            continue;
        }
        if !replaced && (a.starts_with(b"--root=") || a.starts_with(b"-root=")) {
            let mut s = OsString::from("--root=");
            s.push(&new_root);
            out.push(s);
            replaced = true;
            i += 1;
            continue;
        }
        out.push(args[i].clone());
        i += 1;
    }
    if !replaced {
        out.insert(0, new_root);
        out.insert(0, OsString::from("--root"));
    }
    out
}

/// Replaces this process with runc (`execvp`); returns only on failure.
#[must_use]
pub fn exec(runc: &Path, args: &[OsString], root: &Path) -> Error {
    let argv = forward_args(args, root);
    tracing::debug!("handing to runc: {} {:?}", runc.display(), argv);
    let err = |source| Error::Exec {
        path: runc.to_path_buf(),
        source,
    };
    let Ok(prog) = CString::new(runc.as_os_str().as_bytes()) else {
        return err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    let mut cargs = vec![prog.clone()];
    for a in argv {
        match CString::new(a.into_vec()) {
            Ok(c) => cargs.push(c),
            Err(_) => return err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
        }
    }
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: prog and ptrs are NUL-terminated and outlive the call; execvp returns
    // only on failure.
    unsafe { libc::execvp(prog.as_ptr(), ptrs.as_ptr()) };
    err(std::io::Error::last_os_error())
}

/// `runc --root R/.runc list --format json` (no containers: empty).
pub fn list(runc: &Path, root: &Path) -> Result<Vec<serde_json::Value>, Error> {
    let rroot = runc_root(root);
    if !rroot.is_dir() {
        return Ok(Vec::new());
    }
    let out = Command::new(runc)
        .arg("--root")
        .arg(&rroot)
        .args(["list", "--format", "json"])
        .output()
        .map_err(|source| Error::Exec {
            path: runc.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::List(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() || text.trim() == "null" {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).map_err(|e| Error::List(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::forward_args;
    use std::ffi::OsString;
    use std::path::Path;

    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn root_rewritten() {
        let r = Path::new("/run/runnc");
        assert_eq!(
            forward_args(&v(&["--root", "/run/runnc", "--log", "l", "state", "x"]), r),
            v(&["--root", "/run/runnc/.runc", "--log", "l", "state", "x"])
        );
        assert_eq!(
            forward_args(&v(&["--root=/x", "state", "x"]), r),
            v(&["--root=/run/runnc/.runc", "state", "x"])
        );
        assert_eq!(
            forward_args(&v(&["state", "x"]), r),
            v(&["--root", "/run/runnc/.runc", "state", "x"])
        );
    }
}
