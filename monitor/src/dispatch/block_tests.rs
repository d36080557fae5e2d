//! The block hypercalls against real files through the real [`SysHost`]: round trips
//! at sector edges, the capacity boundary, wild offsets, lengths and pointers,
//! read-only devices. Every refused request must leave the whole file byte-identical.

use super::*;
use crate::host::{SysHost, NO_BLOCKS};
use crate::memory::{Region, RegionKind};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const BASE: u64 = 0x10_0000;
/// Read-only page, then 2 MiB + 2 pages read-write.
const RO: u64 = BASE;
const RW: u64 = BASE + 0x1000;
const RW_END: u64 = RW + (2 << 20) + 0x2000;
/// The argument struct lives at RW; data buffers from DATA.
const DATA: u64 = RW + 0x1000;

/// Device 0: net (not block). Device 1: 64 KiB read-write. Device 2: read-only.
const SECTORS: u64 = 128;

struct Disk {
    path: PathBuf,
    file: std::fs::File,
    original: Vec<u8>,
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Disk {
    fn new(tag: &str, sectors: u64) -> Disk {
        let path = std::env::temp_dir().join(format!(
            "septem-dispatch-blk-{}-{tag}.img",
            std::process::id()
        ));
        let original: Vec<u8> = (0..sectors * 512).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        Disk {
            path,
            file,
            original,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    #[track_caller]
    fn unchanged(&self) {
        assert!(self.bytes() == self.original, "the disk file changed");
    }
}

struct Setup {
    _buf: Vec<u8>,
    mem: GuestMemory,
    host: SysHost,
    cfg: DispatchConfig,
    rw: Disk,
    ro: Disk,
}

fn setup(tag: &str) -> Setup {
    let mut buf = vec![0u8; (RW_END - BASE) as usize];
    // SAFETY: `buf` is kept alive and unmoved in the Setup (a Vec's heap buffer does
    // not move when the Vec does) while the memory is used.
    let mut mem = unsafe { GuestMemory::new(buf.as_mut_ptr(), BASE, buf.len() as u64) };
    for (start, end, write) in [(RO, RW, false), (RW, RW_END, true)] {
        mem.add_region(Region {
            start,
            end,
            read: true,
            write,
            exec: false,
            kind: RegionKind::Heap,
        })
        .unwrap();
    }
    let rw = Disk::new(&format!("{tag}-rw"), SECTORS);
    let ro = Disk::new(&format!("{tag}-ro"), SECTORS);
    let mut blocks = NO_BLOCKS;
    blocks[1] = rw.file.as_raw_fd();
    blocks[2] = ro.file.as_raw_fd();
    let mut cfg = DispatchConfig {
        net_devices: 0b1,
        ..DispatchConfig::default()
    };
    cfg.blocks[1] = BlockLimits {
        sectors: SECTORS,
        read_only: false,
    };
    cfg.blocks[2] = BlockLimits {
        sectors: SECTORS,
        read_only: true,
    };
    Setup {
        _buf: buf,
        mem,
        host: SysHost::new().with_blocks(blocks),
        cfg,
        rw,
        ro,
    }
}

fn io(device: u32, sector: u64, count: u32, data: u64) -> BlockIoArgs {
    BlockIoArgs {
        device,
        count,
        sector,
        data: GuestAddr::new(data),
        ..BlockIoArgs::default()
    }
}

impl Setup {
    fn call<T: Pod>(&mut self, nr: Hypercall, args: &T) -> (i64, T) {
        self.mem.write_obj(GuestAddr::new(RW), args).unwrap();
        let a = dispatch(
            &self.mem,
            &mut self.host,
            self.cfg,
            nr as u64,
            GuestAddr::new(RW),
        );
        let Action::Resume(v) = a else {
            panic!("{a:?}")
        };
        (v, self.mem.read_obj(GuestAddr::new(RW)).unwrap())
    }

    fn read(&mut self, args: BlockIoArgs) -> i64 {
        self.call(Hypercall::BlockRead, &args).0
    }

    fn write(&mut self, args: BlockIoArgs) -> i64 {
        self.call(Hypercall::BlockWrite, &args).0
    }

    fn guest(&self, addr: u64, len: u64) -> Vec<u8> {
        self.mem
            .read_bytes(GuestAddr::new(addr), len)
            .unwrap()
            .to_vec()
    }

    fn fill(&self, addr: u64, data: &[u8]) {
        self.mem.write_bytes(GuestAddr::new(addr), data).unwrap();
    }
}

#[test]
fn reads_and_writes_round_trip_at_sector_edges() {
    let mut s = setup("round");
    // First sector, several sectors, the last sector.
    for (sector, count) in [(0u64, 1u32), (3, 5), (SECTORS - 1, 1), (0, SECTORS as u32)] {
        let (v, out) = s.call(Hypercall::BlockRead, &io(1, sector, count, DATA));
        assert_eq!((v, out.done), (i64::from(count), count), "{sector}+{count}");
        let at = (sector * 512) as usize;
        let len = count as usize * 512;
        assert_eq!(s.guest(DATA, len as u64), s.rw.original[at..at + len]);
    }
    // Write the last two sectors and sector 0, then read them back from the file.
    let mut expect = s.rw.original.clone();
    let pattern: Vec<u8> = (0..1024).map(|i| (i % 7) as u8 + 1).collect();
    s.fill(DATA, &pattern);
    assert_eq!(s.write(io(1, SECTORS - 2, 2, DATA)), 2);
    expect[(SECTORS as usize - 2) * 512..].copy_from_slice(&pattern);
    assert_eq!(s.write(io(1, 0, 1, DATA + 512)), 1);
    expect[..512].copy_from_slice(&pattern[512..]);
    let (v, _) = s.call(
        Hypercall::BlockFlush,
        &BlockFlushArgs { device: 1, _pad: 0 },
    );
    assert_eq!(v, 0);
    assert!(s.rw.bytes() == expect);
    // The buffer may sit at any alignment and read-only memory is fine for writes.
    assert_eq!(s.write(io(1, 10, 1, RO + 3)), 1);
    assert_eq!(s.read(io(1, 10, 1, DATA + 1)), 1);
    assert_eq!(s.guest(DATA + 1, 512), s.guest(RO + 3, 512));
    s.ro.unchanged();
}

#[test]
fn a_full_megabyte_request_is_one_call() {
    let mut s = setup("mib");
    let big = Disk::new("mib-big", 4096);
    let mut blocks = NO_BLOCKS;
    blocks[1] = big.file.as_raw_fd();
    s.host = SysHost::new().with_blocks(blocks);
    s.cfg.blocks[1].sectors = 4096;
    assert_eq!(s.read(io(1, 4096 - 2048, BLOCK_IO_MAX_SECTORS, DATA)), 2048);
    assert_eq!(s.guest(DATA, 1 << 20), big.original[1 << 20..]);
    assert_eq!(
        s.read(io(1, 0, BLOCK_IO_MAX_SECTORS + 1, DATA)),
        HcError::Invalid.code()
    );
}

#[test]
fn requests_beyond_the_capacity_are_refused_and_touch_nothing() {
    let mut s = setup("bounds");
    s.fill(DATA, &[0xee; 8192]);
    let invalid = HcError::Invalid.code();
    for (sector, count) in [
        (SECTORS, 1u32),               // one past the end
        (SECTORS - 1, 2),              // across the end
        (SECTORS - 3, 16),             // across the end
        (0, SECTORS as u32 + 1),       // larger than the disk
        (0, 0),                        // nothing
        (u64::MAX, 1),                 // wild
        (u64::MAX - 1, 4),             // overflows
        (u64::MAX / 512 + 1, 1),       // byte offset would overflow
        (1 << 40, 1),                  // far away
        (0, u32::MAX),                 // huge count
        (0, BLOCK_IO_MAX_SECTORS + 1), // over 1 MiB
    ] {
        assert_eq!(
            s.read(io(1, sector, count, DATA)),
            invalid,
            "read {sector}+{count}"
        );
        assert_eq!(
            s.write(io(1, sector, count, DATA)),
            invalid,
            "write {sector}+{count}"
        );
    }
    assert_eq!(
        s.guest(DATA, 8192),
        vec![0xee; 8192],
        "failed reads wrote nothing"
    );
    s.rw.unchanged();
    s.ro.unchanged();
}

#[test]
fn wild_buffers_and_bad_devices_are_refused_and_touch_nothing() {
    let mut s = setup("wild");
    let bad = HcError::BadAddress.code();
    for (data, count) in [
        (0u64, 1u32),
        (0x1000, 1),
        (RW_END - 511, 1),
        (RW_END - 512, 2),
        (u64::MAX - 100, 1),
        (u64::MAX - 511, 1),
        (0xdead_0000_0000, 8),
    ] {
        assert_eq!(s.write(io(1, 0, count, data)), bad, "write from {data:#x}");
        assert_eq!(s.read(io(1, 0, count, data)), bad, "read into {data:#x}");
    }
    // Reading into read-only guest memory is refused like unmapped memory.
    let before = s.guest(RO, 512);
    assert_eq!(s.read(io(1, 0, 1, RO)), bad);
    assert_eq!(s.guest(RO, 512), before);
    // Not a block device, no device, non-zero padding.
    for device in [0u32, 3, 15, 16, 64, u32::MAX] {
        assert_eq!(
            s.read(io(device, 0, 1, DATA)),
            HcError::NoDevice.code(),
            "{device}"
        );
        assert_eq!(
            s.write(io(device, 0, 1, DATA)),
            HcError::NoDevice.code(),
            "{device}"
        );
        let (v, _) = s.call(Hypercall::BlockFlush, &BlockFlushArgs { device, _pad: 0 });
        assert_eq!(v, HcError::NoDevice.code(), "{device}");
    }
    let padded = BlockIoArgs {
        _pad: 1,
        ..io(1, 0, 1, DATA)
    };
    assert_eq!(s.write(padded), HcError::Invalid.code());
    let (v, _) = s.call(
        Hypercall::BlockFlush,
        &BlockFlushArgs { device: 1, _pad: 9 },
    );
    assert_eq!(v, HcError::Invalid.code());
    // The argument struct itself outside (or read-only) guest memory.
    for arg in [0u64, RO, RW_END - 8, u64::MAX - 7] {
        let a = dispatch(
            &s.mem,
            &mut s.host,
            s.cfg,
            Hypercall::BlockWrite as u64,
            GuestAddr::new(arg),
        );
        assert_eq!(a, Action::Resume(bad), "arg {arg:#x}");
    }
    s.rw.unchanged();
    s.ro.unchanged();
}

#[test]
fn read_only_devices_refuse_writes() {
    let mut s = setup("ro");
    s.fill(DATA, &[1; 512]);
    assert_eq!(s.write(io(2, 0, 1, DATA)), HcError::ReadOnly.code());
    assert_eq!(
        s.write(io(2, SECTORS - 1, 1, DATA)),
        HcError::ReadOnly.code()
    );
    // Reads and flushes work.
    assert_eq!(s.read(io(2, 5, 2, DATA)), 2);
    assert_eq!(s.guest(DATA, 1024), s.ro.original[5 * 512..7 * 512]);
    let (v, _) = s.call(
        Hypercall::BlockFlush,
        &BlockFlushArgs { device: 2, _pad: 0 },
    );
    assert_eq!(v, 0);
    s.ro.unchanged();
}

#[test]
fn a_host_failure_is_io() {
    let mut s = setup("io");
    // The file shrank under the monitor: reading past its new end fails cleanly.
    s.rw.file.set_len(512).unwrap();
    assert_eq!(s.read(io(1, 4, 1, DATA)), HcError::Io.code());
}

#[test]
fn trace_shows_block_calls() {
    let mut s = setup("trace");
    let mut fake = TraceHost::default();
    s.cfg.trace = true;
    s.mem
        .write_obj(GuestAddr::new(RW), &io(1, 7, 3, DATA))
        .unwrap();
    let mut cfg = s.cfg;
    cfg.blocks[1].read_only = true;
    dispatch(
        &s.mem,
        &mut fake,
        cfg,
        Hypercall::BlockWrite as u64,
        GuestAddr::new(RW),
    );
    let text = String::from_utf8(std::mem::take(&mut fake.stderr)).unwrap();
    assert!(
        text.contains(&format!(
            "block_write(device=1, sector=7, count=3, data={DATA:#x}, done=0) = -7 (read-only device)"
        )),
        "{text}"
    );
}

/// Captures console output (for the trace), no devices.
#[derive(Default)]
struct TraceHost {
    stderr: Vec<u8>,
}

impl Host for TraceHost {
    fn console_write(&mut self, _: Stream, data: &[u8]) -> Result<usize, HcError> {
        self.stderr.extend_from_slice(data);
        Ok(data.len())
    }
    fn monotonic_ns(&mut self) -> u64 {
        0
    }
    fn wall_ns(&mut self) -> u64 {
        0
    }
    fn wait_until(&mut self, _: u64, _: u64) -> u64 {
        0
    }
}
