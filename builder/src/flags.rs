//! The guest linker script and compiler flags.
//!
//! Guests build with the stock stable toolchain for `x86_64-unknown-linux-gnu` as
//! `#![no_std] #![no_main]` binaries. The flags go in `CARGO_ENCODED_RUSTFLAGS`, which
//! (because `--target` is given explicitly) reach only target artifacts, never build
//! scripts or proc macros.

use std::fs;
use std::path::{Path, PathBuf};

/// The target every guest is compiled for.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The guest linker script (see `guest.ld`): load at 1 MiB, R / RX / RW segments, a
/// PT_NOTE for the manifest.
pub const LINKER_SCRIPT: &str = include_str!("guest.ld");

/// Why the linker script could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the guest linker script {}", path.display())]
pub struct FlagsError {
    /// Where it was to go.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// 64-bit FNV-1a, to name the script after its contents.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The script's file name. It carries a hash of the contents, so that a new script
/// changes the rustflags and cargo relinks (cargo does not track link-arg files).
#[must_use]
pub fn linker_script_name() -> String {
    format!("septem-guest-{:016x}.ld", fnv1a(LINKER_SCRIPT.as_bytes()))
}

/// Writes the linker script into `dir` (unless an identical one is there); returns
/// its path.
pub fn write_linker_script(dir: &Path) -> Result<PathBuf, FlagsError> {
    let path = dir.join(linker_script_name());
    if fs::read_to_string(&path).is_ok_and(|s| s == LINKER_SCRIPT) {
        return Ok(path);
    }
    let err = |source| FlagsError {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    // Write then rename, so a concurrent build never links with half a script.
    let tmp = dir.join(format!(".{}.{}", linker_script_name(), std::process::id()));
    fs::write(&tmp, LINKER_SCRIPT).map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

/// The rustc flags for a guest linked with the script at `script`.
#[must_use]
pub fn guest_rustflags(script: &Path) -> Vec<String> {
    let mut flags: Vec<String> = [
        // Absolute addresses: the image is linked for 1 MiB and never relocated.
        "-Crelocation-model=static",
        // Frame pointers let the monitor walk the stack in fault reports.
        "-Cforce-frame-pointers=yes",
        "-Cpanic=abort",
        // No C runtime, no libc, nothing dynamic.
        "-Clink-arg=-nostartfiles",
        "-Clink-arg=-nodefaultlibs",
        "-Clink-arg=-static",
        "-Clink-arg=-Wl,--build-id=none",
        "-Clink-arg=-Wl,-z,norelro",
        "-Clink-arg=-Wl,-z,noexecstack",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    flags.push(format!("-Clink-arg=-Wl,-T,{}", script.display()));
    flags
}

/// Joins flags as `CARGO_ENCODED_RUSTFLAGS` wants them (0x1f-separated).
#[must_use]
pub fn encode_rustflags(flags: &[String]) -> String {
    flags.join("\x1f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_has_the_required_shape() {
        let s = LINKER_SCRIPT;
        assert!(s.contains("ENTRY(_start)"));
        assert!(s.contains(&format!("{:#x}", septem_abi::IMAGE_BASE)));
        assert!(s.contains("KEEP(*(.note.septem))"));
        for phdr in [
            "text   PT_LOAD FLAGS(5)",
            "rodata PT_LOAD FLAGS(4)",
            "data   PT_LOAD FLAGS(6)",
            "note   PT_NOTE",
        ] {
            assert!(s.contains(phdr), "missing {phdr}");
        }
        // No segment is both writable (2) and executable (1).
        assert!(!s.contains("FLAGS(7)") && !s.contains("FLAGS(3)"));
    }

    #[test]
    fn flags_are_static_abort_and_name_the_script() {
        let f = guest_rustflags(Path::new("/t/x.ld"));
        for want in [
            "-Crelocation-model=static",
            "-Cpanic=abort",
            "-Clink-arg=-nostartfiles",
            "-Clink-arg=-static",
            "-Clink-arg=-Wl,-T,/t/x.ld",
        ] {
            assert!(f.iter().any(|x| x == want), "missing {want}");
        }
        assert!(f.iter().all(|x| !x.contains('\x1f') && !x.contains(' ')));
        assert_eq!(encode_rustflags(&f).split('\x1f').count(), f.len());
    }

    #[test]
    fn script_is_written_once_and_named_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_linker_script(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), LINKER_SCRIPT);
        assert_eq!(write_linker_script(dir.path()).unwrap(), p);
        assert!(p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("septem-guest-"));
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
