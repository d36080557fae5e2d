//! Block devices on the host side: opening a disk image file for `--block:NAME=FILE`
//! (before sealing, before the KVM backend forks) and its `BootDevice`.
//!
//! The whole file is the disk: its size must be a non-zero multiple of
//! [`BLOCK_SECTOR_SIZE`]. A host block device node (a loop device, a volume: what
//! Kubernetes hands a runtime for a `volumeMode: Block` volume) is a disk too, its size
//! from the `BLKGETSIZE64` ioctl. It is opened `O_RDWR` (or `O_RDONLY` with `,ro`), `O_DSYNC`
//! with `,sync`, always `O_CLOEXEC`. The sealed monitor touches it only with
//! `pread64`/`pwrite64` (see [`crate::host`]), at most [`BLOCK_IO_MAX`] bytes each.

use crate::seccomp::policy::BLOCK_IO_MAX;
use crate::RunError;
use septem_abi::{
    BlockConfig, BootDevice, DeviceKind, BLOCK_IO_MAX_BYTES, BLOCK_READ_ONLY, BLOCK_SECTOR_SIZE,
};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// The ABI's largest request must pass the policy's bound on one syscall.
const _: () = assert!(BLOCK_IO_MAX_BYTES as u64 <= BLOCK_IO_MAX);

/// An opened disk image.
#[derive(Debug)]
pub struct BlockFile {
    /// The close-on-exec fd.
    pub fd: OwnedFd,
    /// Capacity in sectors (never 0).
    pub sectors: u64,
    /// Opened read-only (`,ro`).
    pub read_only: bool,
}

fn config(what: String) -> RunError {
    RunError::Config(what)
}

/// Opens `path` as a block device (see the module docs). A missing file, a directory
/// or other non-regular file, an empty file or a size that is not a multiple of 512
/// are configuration errors that say how to fix them; a file the user may not write
/// without `ro` suggests `,ro`.
pub fn open_block(
    name: &str,
    path: &str,
    read_only: bool,
    sync: bool,
) -> Result<BlockFile, RunError> {
    let opt = format!("--block:{name}={path}");
    let c = CString::new(Path::new(path).as_os_str().as_bytes())
        .map_err(|_| config(format!("{opt}: the file name contains a NUL byte")))?;
    let mut flags = libc::O_CLOEXEC | libc::O_NOCTTY;
    flags |= if read_only {
        libc::O_RDONLY
    } else {
        libc::O_RDWR
    };
    if sync {
        flags |= libc::O_DSYNC;
    }
    // SAFETY: `c` is a valid NUL-terminated path; the fd is owned below.
    let raw = unsafe { libc::open(c.as_ptr(), flags) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => config(format!(
                "{opt}: no such file; create a disk image with `septem-build disk DIR -o {path}` or an empty one with `truncate -s 64M {path}`"
            )),
            Some(libc::EISDIR) => config(format!(
                "{opt}: is a directory; make a disk image of it with `septem-build disk {path} -o IMAGE.img`"
            )),
            Some(libc::EACCES | libc::EPERM | libc::EROFS) if !read_only => config(format!(
                "{opt}: the file cannot be opened for writing ({e}); attach it read-only with --block:{name}={path},ro"
            )),
            Some(libc::ENXIO | libc::ENODEV | libc::ETXTBSY) => config(format!(
                "{opt}: cannot be used as a disk image ({e})"
            )),
            _ => RunError::HostSetup {
                what: format!("{opt}: cannot open the disk image"),
                source: e,
            },
        });
    }
    // SAFETY: `raw` is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `stat` is plain data, written by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(RunError::HostSetup {
            what: format!("{opt}: cannot stat the disk image"),
            source: io::Error::last_os_error(),
        });
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(config(format!(
            "{opt}: is a directory; make a disk image of it with `septem-build disk {path} -o IMAGE.img`"
        )));
    }
    let size = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => st.st_size as u64,
        libc::S_IFBLK => block_device_size(&fd).map_err(|source| RunError::HostSetup {
            what: format!("{opt}: cannot read the block device's size"),
            source,
        })?,
        _ => {
            return Err(config(format!(
                "{opt}: not a regular file or a block device node; a block device must be a disk image file or a host block device"
            )))
        }
    };
    let sector = u64::from(BLOCK_SECTOR_SIZE);
    if size == 0 {
        return Err(config(format!(
            "{opt}: the file is empty; give it a size with `truncate -s 64M {path}` or make a disk image with `septem-build disk DIR -o {path}`"
        )));
    }
    if size % sector != 0 {
        let up = size.div_ceil(sector) * sector;
        return Err(config(format!(
            "{opt}: the file is {size} bytes, not a multiple of the {sector}-byte sector size; pad it with `truncate -s {up} {path}`"
        )));
    }
    Ok(BlockFile {
        fd,
        sectors: size / sector,
        read_only,
    })
}

/// `BLKGETSIZE64` (`_IOR(0x12, 114, size_t)`): a block device's size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// The size in bytes of the block device open on `fd`.
fn block_device_size(fd: &OwnedFd) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`;
    // `fd` is open.
    if unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// A `BootDevice` for a block device named `name`.
#[must_use]
pub fn block_boot_device(name: &str, file: &BlockFile) -> BootDevice {
    let mut boot = BootDevice {
        kind: DeviceKind::Block as u32,
        block: BlockConfig {
            sector_size: BLOCK_SECTOR_SIZE,
            flags: if file.read_only { BLOCK_READ_ONLY } else { 0 },
            sectors: file.sectors,
            _reserved: [0; 2],
        },
        ..BootDevice::default()
    };
    let n = name.len().min(boot.name.len() - 1);
    boot.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    boot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit_status;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("septem-block-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn err(path: &str, ro: bool) -> String {
        let e = open_block("disk", path, ro, false).unwrap_err();
        assert_eq!(e.exit_status(), exit_status::BAD_CONFIG, "{e}");
        e.to_string()
    }

    #[test]
    fn opens_a_good_image() {
        let d = dir("good");
        let p = d.0.join("a.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let f = open_block("disk", p.to_str().unwrap(), false, true).unwrap();
        assert_eq!((f.sectors, f.read_only), (8, false));
        let b = block_boot_device("disk", &f);
        assert_eq!(b.name_str(), "disk");
        assert_eq!(b.kind, DeviceKind::Block as u32);
        assert_eq!(
            (b.block.sector_size, b.block.sectors, b.block.flags),
            (512, 8, 0)
        );
        let f = open_block("disk", p.to_str().unwrap(), true, false).unwrap();
        assert_eq!(block_boot_device("disk", &f).block.flags, BLOCK_READ_ONLY);
        // SAFETY: reading the fd's flags.
        let fl = unsafe { libc::fcntl(f.fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(fl & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn refuses_bad_files_with_a_fix() {
        let d = dir("bad");
        let missing = d.0.join("missing.img");
        let m = missing.to_str().unwrap();
        assert!(
            err(m, false).contains("no such file; create a disk image with `septem-build disk DIR")
        );
        assert!(err(d.0.to_str().unwrap(), true).contains("is a directory"));
        let empty = d.0.join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        assert!(err(empty.to_str().unwrap(), false).contains("the file is empty"));
        let odd = d.0.join("odd.img");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let e = err(odd.to_str().unwrap(), false);
        assert!(e.contains("1000 bytes, not a multiple of the 512-byte sector size; pad it with `truncate -s 1024 "), "{e}");
        assert!(err("/dev/null", true).contains("not a regular file"));
    }

    /// A loop device over a 4 KiB file opens as an 8-sector disk (root and a free loop
    /// device needed: `losetup`).
    #[test]
    fn opens_a_block_device_node() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: attaching a loop device needs root");
            return;
        }
        let d = dir("loop");
        let p = d.0.join("backing.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&p)
            .output();
        let dev = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            other => {
                eprintln!("SKIPPED: no loop device ({other:?})");
                return;
            }
        };
        let opened = open_block("disk", &dev, true, false);
        let _ = std::process::Command::new("losetup")
            .args(["-d", &dev])
            .status();
        let f = opened.unwrap();
        assert_eq!((f.sectors, f.read_only), (8, true));
    }

    #[test]
    fn a_read_only_file_suggests_ro() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("SKIPPED: root can write read-only files");
            return;
        }
        let d = dir("ro");
        let p = d.0.join("ro.img");
        std::fs::write(&p, vec![0u8; 512]).unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&p, perm).unwrap();
        let e = err(p.to_str().unwrap(), false);
        assert!(e.contains(",ro"), "{e}");
        assert!(open_block("disk", p.to_str().unwrap(), true, false).is_ok());
    }
}
