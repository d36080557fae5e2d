//! Making a persistent tap, as `ip tuntap add dev NAME mode tap` does: open
//! `/dev/net/tun`, `TUNSETIFF` (IFF_TAP | IFF_NO_PI) with the name, `TUNSETPERSIST 1`,
//! close. The device lives on, unattached, until it is deleted; septem-run attaches to
//! it by name later. The tap is made in the calling thread's network namespace.

use super::Error;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

/// `struct ifreq` as TUNSETIFF reads it: the name, then `ifr_flags` (a short) at the
/// start of the 24-byte union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

const _: () = {
    assert!(std::mem::size_of::<IfReqFlags>() == std::mem::size_of::<libc::ifreq>());
    assert!(std::mem::offset_of!(IfReqFlags, flags) == libc::IFNAMSIZ);
    assert!(std::mem::offset_of!(libc::ifreq, ifr_ifru) == libc::IFNAMSIZ);
};

/// The error of `step` while creating tap `name`.
fn failed(name: &str, step: &str) -> impl FnOnce(io::Error) -> Error {
    let what = format!("creating tap {name}: {step}");
    move |source| Error::Setup { what, source }
}

/// Creates the persistent tap `name`. A failing step is named in the error.
pub(super) fn create_persistent(name: &str) -> Result<(), Error> {
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _rest: [0; 22],
    };
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(failed(name, "checking the name")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a valid interface name",
        )));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(failed(name, "opening /dev/net/tun"))?;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its size and
    // layout (asserted above) and lives for the call.
    let rc = unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETIFF,
            std::ptr::from_mut(&mut req),
        )
    };
    if rc < 0 {
        return Err(failed(name, "TUNSETIFF")(io::Error::last_os_error()));
    }
    // SAFETY: TUNSETPERSIST takes its argument by value (non-zero: persist); no memory
    // is passed.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(failed(name, "TUNSETPERSIST")(io::Error::last_os_error()));
    }
    Ok(())
}
