//! The one bounds-checked guest-memory API.
//!
//! Every access the monitor makes to guest memory on the guest's behalf goes through
//! [`GuestMemory`]: an address and a length are checked (overflow included) against the
//! regions the guest may use, with the access kind each region allows, before any host
//! pointer is formed. Both backends use it: under seccomp guest addresses are host
//! addresses; under KVM they are offsets into the mapping that backs guest RAM.

use septem_abi::GuestAddr;

/// Most regions one guest has (image segments + boot area + heap + stack).
pub const MAX_REGIONS: usize = 24;

/// How the monitor wants to touch guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read guest bytes.
    Read,
    /// Write guest bytes.
    Write,
}

/// What a region holds (for reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// A loadable segment of the image.
    Image,
    /// `BootInfo`, argument and environment tables.
    Boot,
    /// The guest heap.
    Heap,
    /// The guest stack.
    Stack,
}

/// A range of guest addresses `[start, end)` the guest may use, with its permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address (page-aligned).
    pub start: u64,
    /// One past the last address (page-aligned).
    pub end: u64,
    /// Readable by the guest.
    pub read: bool,
    /// Writable by the guest.
    pub write: bool,
    /// Executable by the guest.
    pub exec: bool,
    /// What it is.
    pub kind: RegionKind,
}

impl Region {
    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }
}

/// A rejected guest-memory access.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// `addr + len` overflows.
    #[error("guest range {addr:#x}+{len:#x} overflows")]
    Overflow {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// Some byte of the range is not in a region allowing the access.
    #[error("guest range {addr:#x}+{len:#x} is not {access:?}-accessible guest memory")]
    OutOfBounds {
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
        /// Wanted access.
        access: Access,
    },
    /// A region is malformed, overlaps another, lies outside the backing memory, or
    /// there are too many.
    #[error("bad guest memory region {start:#x}..{end:#x}")]
    BadRegion {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
}

/// Plain-old-data types that may be copied to and from guest memory byte for byte.
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or a primitive), contain no padding the guest
/// could observe uninitialized, no pointers or references, and be valid for every bit
/// pattern.
pub unsafe trait Pod: Copy + Default {}

// SAFETY: each of these is `#[repr(C)]` with only integer fields (GuestAddr is a
// transparent u64), explicit padding fields, and no invalid bit patterns.
unsafe impl Pod for septem_abi::ConsoleWriteArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::ClockMonotonicArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::ClockWallArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::YieldArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::ExitArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::AbortArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::BootInfo {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::BootStr {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::BootDevice {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::NetWriteArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::NetReadArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::NetFrame {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::BlockIoArgs {}
// SAFETY: as above.
unsafe impl Pod for septem_abi::BlockFlushArgs {}
// SAFETY: primitive integer.
unsafe impl Pod for u64 {}

/// Guest memory: a host mapping plus the regions the guest may use.
#[derive(Debug)]
pub struct GuestMemory {
    host: *mut u8,
    guest_base: u64,
    size: u64,
    regions: [Option<Region>; MAX_REGIONS],
}

impl GuestMemory {
    /// Wraps `size` bytes of host memory at `host` that back guest addresses
    /// `[guest_base, guest_base + size)`. No region is accessible until added.
    ///
    /// # Safety
    /// `host..host + size` must be a mapping readable and writable by the monitor for
    /// as long as this value (and anything borrowed from it) lives, or at least every
    /// part of it that a region added later covers, with that region's access.
    pub unsafe fn new(host: *mut u8, guest_base: u64, size: u64) -> Self {
        GuestMemory {
            host,
            guest_base,
            size,
            regions: [None; MAX_REGIONS],
        }
    }

    /// The guest address range backed by this memory.
    #[must_use]
    pub fn guest_range(&self) -> (u64, u64) {
        (self.guest_base, self.guest_base + self.size)
    }

    /// The regions, in insertion order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().flatten()
    }

    /// Makes a region accessible. It must lie inside the backing memory and not
    /// overlap another region.
    pub fn add_region(&mut self, region: Region) -> Result<(), MemError> {
        let bad = MemError::BadRegion {
            start: region.start,
            end: region.end,
        };
        let (lo, hi) = self.guest_range();
        if region.start >= region.end || region.start < lo || region.end > hi {
            return Err(bad);
        }
        if self
            .regions()
            .any(|r| region.start < r.end && r.start < region.end)
        {
            return Err(bad);
        }
        let slot = self.regions.iter_mut().find(|r| r.is_none()).ok_or(bad)?;
        *slot = Some(region);
        Ok(())
    }

    /// Checks that every byte of `[addr, addr + len)` lies in regions allowing `access`
    /// and returns the offset of `addr` into the host mapping. A zero-length range is
    /// accepted anywhere inside a region or at its end.
    pub fn check(&self, addr: GuestAddr, len: u64, access: Access) -> Result<usize, MemError> {
        let start = addr.raw();
        let end = start
            .checked_add(len)
            .ok_or(MemError::Overflow { addr: start, len })?;
        let oob = MemError::OutOfBounds {
            addr: start,
            len,
            access,
        };
        let mut cursor = start;
        loop {
            let region = self
                .regions()
                .find(|r| {
                    r.allows(access)
                        && r.start <= cursor
                        && (cursor < r.end || (len == 0 && cursor == r.end))
                })
                .ok_or(oob)?;
            if end <= region.end {
                break;
            }
            cursor = region.end;
        }
        usize::try_from(start - self.guest_base).map_err(|_| oob)
    }

    /// Borrows guest bytes for reading.
    pub fn read_bytes(&self, addr: GuestAddr, len: u64) -> Result<&[u8], MemError> {
        let offset = self.check(addr, len, Access::Read)?;
        // SAFETY: `check` proved `[offset, offset + len)` lies inside a readable region,
        // which `add_region` proved lies inside the host mapping `new`'s contract covers.
        Ok(unsafe { std::slice::from_raw_parts(self.host.add(offset), len as usize) })
    }

    /// Borrows guest bytes for writing in place (e.g. a `read(2)` straight into a guest
    /// buffer), after checking every byte lies in regions allowing [`Access::Write`].
    /// Read-only and executable-only regions are refused like unmapped ones.
    ///
    /// # Safety
    /// No other reference into `[addr, addr + len)` obtained from this `GuestMemory`
    /// (`read_bytes`, another `slice_mut`) may be alive while the returned slice is.
    /// The guest itself does not run meanwhile: under both backends it is stopped in
    /// the hypercall that the monitor is serving.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, addr: GuestAddr, len: u64) -> Result<&mut [u8], MemError> {
        let offset = self.check(addr, len, Access::Write)?;
        // SAFETY: `check` proved `[offset, offset + len)` lies inside a writable region,
        // which `add_region` proved lies inside the host mapping `new`'s contract keeps
        // mapped and writable by the monitor; the caller guarantees the slice is unique.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.host.add(offset), len as usize) })
    }

    /// Copies bytes into guest memory.
    pub fn write_bytes(&self, addr: GuestAddr, data: &[u8]) -> Result<(), MemError> {
        let offset = self.check(addr, data.len() as u64, Access::Write)?;
        // SAFETY: `check` proved the destination lies inside a writable region of the
        // host mapping; `data` is monitor memory, which never overlaps guest memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.host.add(offset), data.len()) };
        Ok(())
    }

    /// Copies a plain-old-data value out of guest memory (any alignment).
    pub fn read_obj<T: Pod>(&self, addr: GuestAddr) -> Result<T, MemError> {
        let offset = self.check(addr, size_of::<T>() as u64, Access::Read)?;
        // SAFETY: the range is readable guest memory (checked); `T: Pod` is valid for any
        // bit pattern; `read_unaligned` has no alignment requirement.
        Ok(unsafe { self.host.add(offset).cast::<T>().read_unaligned() })
    }

    /// Copies a plain-old-data value into guest memory (any alignment).
    pub fn write_obj<T: Pod>(&self, addr: GuestAddr, value: &T) -> Result<(), MemError> {
        let offset = self.check(addr, size_of::<T>() as u64, Access::Write)?;
        // SAFETY: the range is writable guest memory (checked); `write_unaligned` has no
        // alignment requirement.
        unsafe { self.host.add(offset).cast::<T>().write_unaligned(*value) };
        Ok(())
    }

    /// Set-up only (before the guest runs): the host bytes for `[addr, addr + len)`,
    /// checked against the backing memory but not against regions, so the loader can
    /// fill read-only and executable segments.
    pub fn setup_slice_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8], MemError> {
        let (lo, hi) = self.guest_range();
        let end = addr
            .checked_add(len)
            .ok_or(MemError::Overflow { addr, len })?;
        if addr < lo || end > hi {
            return Err(MemError::OutOfBounds {
                addr,
                len,
                access: Access::Write,
            });
        }
        let offset = (addr - lo) as usize;
        // SAFETY: inside the host mapping (checked above), which `new`'s contract keeps
        // mapped and writable by the monitor during set-up; `&mut self` makes it unique.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.host.add(offset), len as usize) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(buf: &mut [u8]) -> GuestMemory {
        // SAFETY: `buf` outlives the returned value in every test below.
        let mut m = unsafe { GuestMemory::new(buf.as_mut_ptr(), 0x1000, buf.len() as u64) };
        let ro = Region {
            start: 0x1000,
            end: 0x2000,
            read: true,
            write: false,
            exec: true,
            kind: RegionKind::Image,
        };
        let rw = Region {
            start: 0x2000,
            end: 0x3000,
            read: true,
            write: true,
            exec: false,
            kind: RegionKind::Heap,
        };
        let rw2 = Region {
            start: 0x3000,
            end: 0x4000,
            read: true,
            write: true,
            exec: false,
            kind: RegionKind::Heap,
        };
        m.add_region(ro).unwrap();
        m.add_region(rw).unwrap();
        m.add_region(rw2).unwrap();
        m
    }

    #[test]
    fn reads_and_writes_inside_regions() {
        let mut buf = vec![0u8; 0x4000];
        let m = mem(&mut buf);
        m.write_obj(GuestAddr::new(0x2ffc), &0x1122_3344_5566_7788u64)
            .unwrap();
        assert_eq!(
            m.read_obj::<u64>(GuestAddr::new(0x2ffc)).unwrap(),
            0x1122_3344_5566_7788
        );
        assert_eq!(m.read_bytes(GuestAddr::new(0x1ff8), 16).unwrap().len(), 16);
        // `m` holds a raw pointer, not a borrow: the buffer is readable directly.
        assert_eq!(buf[0x1ffc], 0x88);
    }

    #[test]
    fn rejects_writes_to_read_only_and_outside() {
        let mut buf = vec![0u8; 0x5000];
        let m = mem(&mut buf);
        assert!(matches!(
            m.write_bytes(GuestAddr::new(0x1000), &[1]),
            Err(MemError::OutOfBounds { .. })
        ));
        assert!(m.read_bytes(GuestAddr::new(0x4000), 1).is_err());
        assert!(m.read_bytes(GuestAddr::new(0x3fff), 2).is_err());
        assert!(m.read_bytes(GuestAddr::new(0xfff), 1).is_err());
        assert!(m.read_bytes(GuestAddr::new(0), 0).is_err());
        assert!(matches!(
            m.read_bytes(GuestAddr::new(u64::MAX), 2),
            Err(MemError::Overflow { .. })
        ));
        assert!(m
            .read_bytes(GuestAddr::new(0x2000), u64::MAX - 0x2000)
            .is_err());
    }

    #[test]
    fn rejects_bad_regions() {
        let mut buf = vec![0u8; 0x4000];
        let mut m = mem(&mut buf);
        let r = Region {
            start: 0x3800,
            end: 0x4800,
            read: true,
            write: true,
            exec: false,
            kind: RegionKind::Stack,
        };
        assert!(m.add_region(r).is_err(), "overlap");
        let r = Region {
            start: 0x5000,
            end: 0x6000,
            ..r
        };
        assert!(m.add_region(r).is_err(), "outside backing memory");
    }

    #[test]
    fn slice_mut_needs_write_access() {
        let mut buf = vec![0u8; 0x3000];
        let m = mem(&mut buf);
        // SAFETY: no other borrow of guest memory is alive in this test.
        let s = unsafe { m.slice_mut(GuestAddr::new(0x2ff0), 0x20) }.unwrap();
        s.fill(7);
        assert_eq!(
            m.read_bytes(GuestAddr::new(0x3000), 0x10).unwrap(),
            &[7; 16]
        );
        for (addr, len) in [
            (0x1000, 1),
            (0x1ff8, 16),
            (0x3ff8, 16),
            (0, 0),
            (u64::MAX, 2),
        ] {
            // SAFETY: as above.
            let refused = unsafe { m.slice_mut(GuestAddr::new(addr), len) }.is_err();
            assert!(refused, "{addr:#x}+{len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn check_never_escapes_regions(addr in 0u64..0x6000, len in 0u64..0x6000) {
            let mut buf = vec![0u8; 0x4000];
            let m = mem(&mut buf);
            if let Ok(off) = m.check(GuestAddr::new(addr), len, Access::Read) {
                proptest::prop_assert!(addr >= 0x1000 && addr + len <= 0x4000);
                proptest::prop_assert_eq!(off as u64, addr - 0x1000);
            }
        }
    }
}
