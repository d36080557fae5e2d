//! Block devices: whole-sector reads and writes through the `BlockRead`/`BlockWrite`
//! hypercalls, several sectors per call (up to 1 MiB; longer requests are split).
//!
//! ```ignore
//! let disk = septem_libos::block::BlockDevice::open("data")?;
//! let mut buf = [0u8; 4096];
//! disk.read(0, &mut buf)?;          // sectors 0..8
//! disk.write(8, &buf)?;             // sectors 8..16
//! disk.flush()?;
//! ```
//!
//! A device is declared in the app's `[package.metadata.septem]`
//! (`devices = [{ name = "data", kind = "block" }]`) and attached by the monitor with
//! `--block:data=FILE[,ro][,sync]`; its size and read-only flag come from `BootInfo`
//! (no hypercall needed). See docs/storage.md.

use crate::boot;
use core::fmt;
use septem_abi::{
    BlockFlushArgs, BlockIoArgs, BootDevice, DeviceKind, GuestAddr, HcError, Hypercall,
    BLOCK_IO_MAX_BYTES, BLOCK_READ_ONLY, BLOCK_SECTOR_SIZE,
};

/// Bytes per sector.
pub const SECTOR_SIZE: usize = BLOCK_SECTOR_SIZE as usize;

/// Errors of the block API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No device of that name is attached (or it is not a block device).
    NotFound,
    /// The buffer is not a whole number of sectors.
    Unaligned,
    /// The request reaches beyond the end of the device.
    OutOfRange,
    /// The device was attached read-only.
    ReadOnly,
    /// The hypercall failed.
    Device(HcError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("no such block device"),
            Error::Unaligned => f.write_str("buffer is not a whole number of 512-byte sectors"),
            Error::OutOfRange => f.write_str("request beyond the end of the device"),
            Error::ReadOnly => f.write_str("block device is read-only"),
            Error::Device(e) => write!(f, "block device: {e}"),
        }
    }
}

impl core::error::Error for Error {}

impl From<HcError> for Error {
    fn from(e: HcError) -> Self {
        match e {
            HcError::ReadOnly => Error::ReadOnly,
            HcError::NoDevice => Error::NotFound,
            e => Error::Device(e),
        }
    }
}

/// Result of the block API.
pub type Result<T> = core::result::Result<T, Error>;

/// Size and flags of a block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Bytes per sector (512).
    pub sector_size: u32,
    /// Capacity in sectors.
    pub sectors: u64,
    /// Writes are refused.
    pub read_only: bool,
}

impl BlockInfo {
    /// Capacity in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.sectors * u64::from(self.sector_size)
    }
}

/// An attached block device. Cheap to copy: it is an index and the device's info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDevice {
    index: u32,
    name: &'static str,
    info: BlockInfo,
}

/// The attached devices, in manifest order.
fn devices() -> &'static [BootDevice] {
    boot::devices()
}

impl BlockDevice {
    /// The block device called `name` in the image's manifest.
    pub fn open(name: &str) -> Result<BlockDevice> {
        devices()
            .iter()
            .enumerate()
            .find(|(_, d)| d.kind == DeviceKind::Block as u32 && d.name_str() == name)
            .map(|(i, d)| Self::from_boot(i, d))
            .ok_or(Error::NotFound)
    }

    /// The first block device of the manifest, if any.
    #[must_use]
    pub fn first() -> Option<BlockDevice> {
        Self::all().next()
    }

    /// Every attached block device, in manifest order.
    pub fn all() -> impl Iterator<Item = BlockDevice> {
        devices()
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind == DeviceKind::Block as u32)
            .map(|(i, d)| Self::from_boot(i, d))
    }

    fn from_boot(index: usize, d: &'static BootDevice) -> BlockDevice {
        BlockDevice {
            index: index as u32,
            name: d.name_str(),
            info: BlockInfo {
                sector_size: d.block.sector_size,
                sectors: d.block.sectors,
                read_only: d.block.flags & BLOCK_READ_ONLY != 0,
            },
        }
    }

    /// The device's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its index in `BootInfo::devices` (the hypercalls' `device`).
    #[must_use]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Size and flags.
    #[must_use]
    pub fn info(&self) -> BlockInfo {
        self.info
    }

    fn check(&self, sector: u64, len: usize) -> Result<()> {
        if len % SECTOR_SIZE != 0 {
            return Err(Error::Unaligned);
        }
        let end = sector
            .checked_add((len / SECTOR_SIZE) as u64)
            .ok_or(Error::OutOfRange)?;
        if end > self.info.sectors {
            return Err(Error::OutOfRange);
        }
        Ok(())
    }

    /// Reads `buf.len() / 512` sectors starting at `sector` into `buf` (a whole number
    /// of sectors, any alignment), 1 MiB per hypercall.
    pub fn read(&self, sector: u64, buf: &mut [u8]) -> Result<()> {
        self.check(sector, buf.len())?;
        let mut sector = sector;
        for chunk in buf.chunks_mut(BLOCK_IO_MAX_BYTES as usize) {
            let count = (chunk.len() / SECTOR_SIZE) as u32;
            // SAFETY: `chunk` is a live, writable buffer of `count` sectors.
            unsafe {
                raw_io(
                    Hypercall::BlockRead,
                    self.index,
                    sector,
                    count,
                    chunk.as_mut_ptr(),
                )
            }?;
            sector += u64::from(count);
        }
        Ok(())
    }

    /// Writes `data` (a whole number of sectors) starting at `sector`, 1 MiB per
    /// hypercall. Without `,sync` on the monitor's side the data reaches the host's
    /// page cache; see [`BlockDevice::flush`].
    pub fn write(&self, sector: u64, data: &[u8]) -> Result<()> {
        if self.info.read_only {
            return Err(Error::ReadOnly);
        }
        self.check(sector, data.len())?;
        let mut sector = sector;
        for chunk in data.chunks(BLOCK_IO_MAX_BYTES as usize) {
            let count = (chunk.len() / SECTOR_SIZE) as u32;
            // SAFETY: `chunk` is a live buffer of `count` sectors; the monitor only
            // reads it for a write.
            unsafe {
                raw_io(
                    Hypercall::BlockWrite,
                    self.index,
                    sector,
                    count,
                    chunk.as_ptr().cast_mut(),
                )
            }?;
            sector += u64::from(count);
        }
        Ok(())
    }

    /// A barrier: returns once every earlier write has completed (durable on the host
    /// when the device was attached with `,sync`; see docs/storage.md).
    pub fn flush(&self) -> Result<()> {
        let mut args = BlockFlushArgs {
            device: self.index,
            _pad: 0,
        };
        // SAFETY: `args` is a live BlockFlushArgs.
        HcError::check(unsafe { crate::hypercall::hypercall(Hypercall::BlockFlush, &mut args) })?;
        Ok(())
    }

    /// Reads `buf.len()` bytes at byte `offset`, any alignment: whole sectors go
    /// straight into `buf`, a partial first or last sector through a small buffer.
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(Error::OutOfRange)?;
        if end > self.info.size() {
            return Err(Error::OutOfRange);
        }
        let ss = SECTOR_SIZE as u64;
        let mut pos = offset;
        let mut done = 0usize;
        let mut bounce = [0u8; SECTOR_SIZE];
        while done < buf.len() {
            let within = (pos % ss) as usize;
            let left = buf.len() - done;
            if within == 0 && left >= SECTOR_SIZE {
                let whole = left - left % SECTOR_SIZE;
                self.read(pos / ss, &mut buf[done..done + whole])?;
                done += whole;
                pos += whole as u64;
            } else {
                self.read(pos / ss, &mut bounce)?;
                let n = (SECTOR_SIZE - within).min(left);
                buf[done..done + n].copy_from_slice(&bounce[within..within + n]);
                done += n;
                pos += n as u64;
            }
        }
        Ok(())
    }
}

/// One raw `BlockRead`/`BlockWrite` call, unchecked on the guest side (tests use it to
/// probe the monitor's checks). Returns the sectors moved.
///
/// # Safety
/// `data` must be valid for `count * 512` bytes of writes (`BlockRead`) or reads
/// (`BlockWrite`), or the monitor must be trusted to refuse the request.
pub unsafe fn raw_io(
    call: Hypercall,
    device: u32,
    sector: u64,
    count: u32,
    data: *mut u8,
) -> core::result::Result<u32, HcError> {
    let mut args = BlockIoArgs {
        device,
        count,
        sector,
        data: GuestAddr::new(data as u64),
        done: 0,
        _pad: 0,
    };
    // SAFETY: `args` is a live BlockIoArgs; the buffer is the caller's contract.
    let r = unsafe { crate::hypercall::hypercall(call, &mut args) };
    HcError::check(r).map(|n| n as u32)
}
