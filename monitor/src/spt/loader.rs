//! Maps guest memory at its guest addresses in this process and loads the image.
//!
//! `[IMAGE_BASE, mem_size)` is reserved with `MAP_FIXED_NOREPLACE` (never clobbering a
//! mapping of the monitor), made writable to copy the segments and the boot area in,
//! then every page gets its final protection: each segment its own (W^X), boot area,
//! heap and stack read-write, the stack guard page and any gap none. The guest cannot
//! change them: `mprotect`/`mmap` are not in the policy.

use crate::boot::{write_boot_area, BootParams};
use crate::layout::Layout;
use crate::memory::{GuestMemory, Region};
use crate::RunError;
use septem_abi::{GuestAddr, IMAGE_BASE};
use septem_image::Image;
use std::io;

/// Guest memory loaded and protected, ready to run.
#[derive(Debug)]
pub struct Loaded {
    /// The bounds-checked view of guest memory (host address == guest address).
    pub mem: GuestMemory,
    /// Where `BootInfo` is.
    pub boot_info: GuestAddr,
}

fn setup_error(what: String, source: io::Error) -> RunError {
    RunError::HostSetup { what, source }
}

fn prot(read: bool, write: bool, exec: bool) -> libc::c_int {
    let mut p = libc::PROT_NONE;
    if read {
        p |= libc::PROT_READ;
    }
    if write {
        p |= libc::PROT_WRITE;
    }
    if exec {
        p |= libc::PROT_EXEC;
    }
    p
}

/// `mprotect` over guest addresses `[start, end)` (page-aligned).
fn protect(start: u64, end: u64, prot: libc::c_int) -> Result<(), RunError> {
    // SAFETY: `[start, end)` lies inside the guest mapping made by `reserve`, which no
    // Rust reference points into while protections change.
    let rc = unsafe { libc::mprotect(start as *mut libc::c_void, (end - start) as usize, prot) };
    if rc != 0 {
        return Err(setup_error(
            format!("cannot set the protection of guest memory {start:#x}..{end:#x}"),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Reserves `[IMAGE_BASE, end)` at exactly that address, read-write.
fn reserve(end: u64) -> Result<(), RunError> {
    let len = (end - IMAGE_BASE) as usize;
    let flags =
        libc::MAP_FIXED_NOREPLACE | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the range is new.
    let got = unsafe {
        libc::mmap(
            IMAGE_BASE as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            flags,
            -1,
            0,
        )
    };
    if got == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        let what = if e.raw_os_error() == Some(libc::EEXIST) {
            format!(
                "cannot map guest memory at {IMAGE_BASE:#x}..{end:#x}: the range is already in use in this process (lower --mem?)"
            )
        } else {
            format!("cannot map {len} bytes of guest memory at {IMAGE_BASE:#x}")
        };
        return Err(setup_error(what, e));
    }
    if got as u64 != IMAGE_BASE {
        // A kernel older than 4.17 ignores MAP_FIXED_NOREPLACE and may map elsewhere.
        // SAFETY: unmapping the mapping we just made, which nothing references.
        unsafe { libc::munmap(got, len) };
        return Err(setup_error(
            format!("cannot map guest memory at {IMAGE_BASE:#x}"),
            io::Error::other(
                "the kernel placed it elsewhere (MAP_FIXED_NOREPLACE needs Linux 4.17 or later)",
            ),
        ));
    }
    protect(IMAGE_BASE, end, libc::PROT_READ | libc::PROT_WRITE)
}

/// Loads `image` (from `image_bytes`) with `layout`, writes the boot area, and applies
/// the final protections.
pub fn load(
    image_bytes: &[u8],
    image: &Image,
    layout: &Layout,
    boot: &BootParams<'_>,
) -> Result<Loaded, RunError> {
    let end = layout.mem_size;
    reserve(end)?;
    // SAFETY: `[IMAGE_BASE, end)` was just mapped read-write at exactly that address
    // and stays mapped for the life of the process (it is never unmapped); guest
    // regions only ever get protections that include what the region allows.
    let mut mem = unsafe { GuestMemory::new(IMAGE_BASE as *mut u8, IMAGE_BASE, end - IMAGE_BASE) };
    let regions = layout.regions(image);
    let bad_region = |r: &Region| {
        setup_error(
            format!("bad guest region {:#x}..{:#x}", r.start, r.end),
            io::Error::other("internal layout error"),
        )
    };
    for r in &regions {
        mem.add_region(*r).map_err(|_| bad_region(r))?;
    }
    for seg in &image.segments {
        let data = seg.data(image_bytes);
        let dst = mem.setup_slice_mut(seg.vaddr, seg.mem_size).map_err(|_| {
            setup_error(
                format!("segment at {:#x} does not fit guest memory", seg.vaddr),
                io::Error::other("internal layout error"),
            )
        })?;
        let (init, bss) = dst.split_at_mut(data.len());
        init.copy_from_slice(data);
        bss.fill(0);
    }
    let boot_info = write_boot_area(&mem, layout, boot).map_err(|e| {
        setup_error(
            "cannot write the boot area".to_string(),
            io::Error::other(e.to_string()),
        )
    })?;
    // Final protections: nothing by default, then each region its own.
    protect(IMAGE_BASE, end, libc::PROT_NONE)?;
    for r in &regions {
        protect(r.start, r.end, prot(r.read, r.write, r.exec))?;
    }
    tracing::debug!(
        mem_size = layout.mem_size,
        regions = regions.len(),
        boot_info = boot_info.raw(),
        "guest memory loaded"
    );
    Ok(Loaded { mem, boot_info })
}
