//! Applies an ordinary image's layers to a container's rootfs, as an overlay stack would
//! show them: layers in order, OCI whiteouts (`.wh.NAME` deletes NAME of the layers
//! below, `.wh..wh..opq` empties its directory of what the layers below put there),
//! hard links, symlinks, modes and ownership kept.
//!
//! Nothing is ever written outside the rootfs: entry names with `..` are refused, and
//! every directory on the way to an entry is resolved inside the rootfs (a symlink met
//! on the way is followed as if the rootfs were `/`, absolute targets and `..` clamped at
//! it, like `chroot`), so a layer's symlink cannot redirect a later entry, a hard link
//! or a whiteout outside. The last component of a path is never followed.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Unpacking errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system or tar trouble.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry the unpacker refuses.
    #[error("layer entry {path:?}: {reason}")]
    Refused {
        /// The entry's name.
        path: String,
        /// Why.
        reason: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// How many symlinks one resolution follows before giving up (as Linux's `ELOOP`).
const MAX_LINKS: usize = 40;

/// The entry name as plain components (no root, no `.`, no `..`).
fn clean(name: &Path) -> Result<Vec<std::ffi::OsString>, Error> {
    let mut out = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p.to_os_string()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Refused {
                    path: name.display().to_string(),
                    reason: "its name contains `..`".into(),
                })
            }
        }
    }
    Ok(out)
}

/// Resolves the directories `dirs` inside `root` (symlinks followed with `root` as `/`),
/// returning a real path under `root` with no symlink in it. Missing directories are
/// resolved lexically (the caller creates them).
fn resolve_dirs(root: &Path, dirs: &[std::ffi::OsString]) -> Result<PathBuf, Error> {
    let mut pending: Vec<std::ffi::OsString> = dirs.iter().rev().cloned().collect();
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            stack.pop();
            continue;
        }
        if c == "." || c.is_empty() {
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&stack);
        here.push(&c);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::Refused {
                        path: here.display().to_string(),
                        reason: "too many levels of symbolic links".into(),
                    });
                }
                let target = std::fs::read_link(&here)
                    .map_err(io(format!("reading link {}", here.display())))?;
                if target.is_absolute() {
                    stack.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(p) => pending.push(p.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => stack.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&stack);
    Ok(out)
}

/// The real path of entry `name` under `root`: its parent resolved, the last component
/// kept as is. None for the root itself.
fn place(root: &Path, name: &Path) -> Result<Option<PathBuf>, Error> {
    let mut parts = clean(name)?;
    let Some(last) = parts.pop() else {
        return Ok(None);
    };
    Ok(Some(resolve_dirs(root, &parts)?.join(last)))
}

/// Removes whatever is at `path` (not following a symlink); absent is fine.
fn remove_any(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(path).map_err(io(format!("removing {}", path.display())))
        }
        Ok(_) => std::fs::remove_file(path).map_err(io(format!("removing {}", path.display()))),
        Err(_) => Ok(()),
    }
}

/// Applies one uncompressed layer (a tar stream) to `root`.
pub fn apply_layer(root: &Path, layer: impl Read) -> Result<(), Error> {
    let mut ar = tar::Archive::new(layer);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    // What this layer wrote: an opaque marker only hides the layers below.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut opaque: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<(PathBuf, tar::Header)> = Vec::new();
    for entry in ar.entries().map_err(io("reading the layer"))? {
        let mut entry = entry.map_err(io("reading the layer"))?;
        let name = entry
            .path()
            .map_err(io("reading an entry name"))?
            .into_owned();
        let Some(dest) = place(root, &name)? else {
            continue; // the rootfs itself
        };
        let file_name = dest
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = dest.parent().unwrap_or(root).to_path_buf();
        if file_name == ".wh..wh..opq" {
            opaque.push(parent);
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            remove_any(&parent.join(hidden))?;
            continue;
        }
        std::fs::create_dir_all(&parent).map_err(io(format!("creating {}", parent.display())))?;
        let kind = entry.header().entry_type();
        // A directory stays (and keeps what is in it); anything else replaces.
        let existing = std::fs::symlink_metadata(&dest).ok();
        if !(kind.is_dir() && existing.as_ref().is_some_and(std::fs::Metadata::is_dir)) {
            remove_any(&dest)?;
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(io("reading a link name"))?
                .ok_or_else(|| Error::Refused {
                    path: name.display().to_string(),
                    reason: "a hard link without a target".into(),
                })?
                .into_owned();
            let src = place(root, &target)?.ok_or_else(|| Error::Refused {
                path: name.display().to_string(),
                reason: "a hard link to the rootfs itself".into(),
            })?;
            std::fs::hard_link(&src, &dest).map_err(io(format!(
                "linking {} to {}",
                dest.display(),
                src.display()
            )))?;
        } else {
            entry
                .unpack(&dest)
                .map_err(io(format!("unpacking {}", name.display())))?;
            if kind.is_dir() {
                // Modes and times of directories are set again at the end (their
                // contents change them, and a read-only one would refuse them).
                dirs.push((dest.clone(), entry.header().clone()));
            }
        }
        // The entry and the directories leading to it are this layer's.
        let mut p = dest.as_path();
        while p != root && written.insert(p.to_path_buf()) {
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
    }
    for dir in opaque {
        let Ok(children) = std::fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten() {
            let p = child.path();
            if !written.contains(&p) {
                remove_any(&p)?;
            }
        }
    }
    for (dir, header) in dirs.into_iter().rev() {
        if let Ok(mode) = header.mode() {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode & 0o7777));
        }
    }
    Ok(())
}

/// Applies the gzip tar `layers` in order to `rootfs` (created if needed).
pub fn unpack(layers: &[PathBuf], rootfs: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(rootfs).map_err(io(format!("creating {}", rootfs.display())))?;
    for layer in layers {
        let f = std::fs::File::open(layer).map_err(io(format!("opening {}", layer.display())))?;
        apply_layer(
            rootfs,
            flate2::read::GzDecoder::new(std::io::BufReader::new(f)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A tar stream of `(name, kind, data or link target)`.
    fn layer(entries: &[(&str, char, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            match kind {
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, name, std::io::empty()).unwrap();
                }
                'f' => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o640);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, data.as_bytes()).unwrap();
                }
                'l' => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, name, data).unwrap();
                }
                'h' => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, name, data).unwrap();
                }
                _ => panic!("kind {kind}"),
            }
        }
        b.into_inner().unwrap()
    }

    fn raw_entry(name: &str) -> Vec<u8> {
        // tar::Builder refuses `..` names; write the header by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend([0u8; 1024]);
        out
    }

    #[test]
    fn whiteouts_opaque_dirs_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        let lower = layer(&[
            ("etc/", 'd', ""),
            ("etc/keep", 'f', "keep"),
            ("etc/gone", 'f', "gone"),
            ("data/", 'd', ""),
            ("data/old1", 'f', "1"),
            ("data/sub/", 'd', ""),
            ("data/sub/old2", 'f', "2"),
            ("bin/", 'd', ""),
            ("bin/busybox", 'f', "bb"),
            ("bin/sh", 'l', "busybox"),
            ("bin/hard", 'h', "bin/busybox"),
        ]);
        let upper = layer(&[
            ("etc/.wh.gone", 'f', ""),
            ("data/", 'd', ""),
            ("data/new", 'f', "new"),
            ("data/.wh..wh..opq", 'f', ""),
            // No entry for data/deep/ itself: kept because something below it is new.
            ("data/deep/x", 'f', "x"),
            ("etc/keep", 'f', "replaced"),
        ]);
        unpack_bytes(&root, &[lower, upper]);
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("etc/keep"), "replaced");
        assert!(!root.join("etc/gone").exists());
        assert_eq!(read("data/new"), "new");
        assert_eq!(read("data/deep/x"), "x");
        assert!(!root.join("data/old1").exists());
        assert!(!root.join("data/sub").exists());
        assert!(!root.join("data/.wh..wh..opq").exists());
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(read("bin/hard"), "bb");
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            std::fs::metadata(root.join("bin/hard")).unwrap().ino(),
            std::fs::metadata(root.join("bin/busybox")).unwrap().ino()
        );
        assert_eq!(
            std::fs::metadata(root.join("bin/busybox"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o640
        );
    }

    #[test]
    fn nothing_escapes_the_rootfs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "safe").unwrap();
        // A symlink to the outside, absolute and relative; then entries through them.
        let evil = layer(&[
            ("abs", 'l', outside.to_str().unwrap()),
            ("rel", 'l', "../outside"),
            ("abs/victim", 'f', "pwned"),
            ("rel/new", 'f', "pwned"),
            ("rel/.wh.victim", 'f', ""),
            ("hard", 'h', "../outside/victim"),
        ]);
        let _ = unpack_one(&root, &evil);
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "safe"
        );
        assert!(!outside.join("new").exists());
        // What was written went inside, clamped at the rootfs.
        assert_eq!(
            std::fs::read_to_string(root.join(outside.strip_prefix("/").unwrap()).join("victim"))
                .unwrap(),
            "pwned"
        );
        assert!(root.join("outside/new").exists());
        // `..` in a name, or in a hard link's target, is refused.
        let e = unpack_one(&root, &raw_entry("../escape")).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert!(!tmp.path().join("escape").exists());
        let e = unpack_one(&root, &layer(&[("hard", 'h', "../outside/victim")])).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
    }

    fn unpack_one(root: &Path, bytes: &[u8]) -> Result<(), Error> {
        std::fs::create_dir_all(root).unwrap();
        apply_layer(root, bytes)
    }

    fn unpack_bytes(root: &Path, layers: &[Vec<u8>]) {
        std::fs::create_dir_all(root).unwrap();
        for l in layers {
            apply_layer(root, l.as_slice()).unwrap();
        }
    }
}
