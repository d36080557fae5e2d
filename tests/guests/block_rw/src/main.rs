//! Block devices end to end: `disk` (read-write, initial byte at offset `o` is
//! `o * 7 % 251`) and `ro` (read-only). Reads at sector edges and across hypercall
//! chunks, writes that the host test checks in the file afterwards, and requests the
//! monitor must refuse (across the end, huge counts, wild pointers, read-only writes).
//! Prints `block_rw: OK` and exits 0, or prints what was WRONG and exits 1.
#![no_std]
#![no_main]

use septem_libos::abi::{HcError, Hypercall};
use septem_libos::block::{raw_io, BlockDevice, Error};
use septem_libos::prelude::*;

septem_libos::main!(main);

fn init(o: u64) -> u8 {
    (o * 7 % 251) as u8
}

struct Checks {
    failed: u32,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool) {
        if !ok {
            self.failed += 1;
            println!("block_rw: WRONG: {what}");
        }
    }

    fn refused(&mut self, what: &str, got: Result<u32, HcError>, want: HcError) {
        let ok = got == Err(want);
        if !ok {
            println!("block_rw: WRONG: {what}: got {got:?}, want {want:?}");
            self.failed += 1;
        } else {
            println!("block_rw: refused {what}: {want}");
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn main() -> i32 {
    let mut c = Checks { failed: 0 };
    let disk = match BlockDevice::open("disk") {
        Ok(d) => d,
        Err(e) => {
            println!("block_rw: open disk: {e}");
            return 1;
        }
    };
    let ro = BlockDevice::open("ro").expect("ro device");
    c.check(
        "open missing",
        BlockDevice::open("nope") == Err(Error::NotFound),
    );
    let n = disk.info().sectors;
    for d in [disk, ro] {
        let i = d.info();
        println!(
            "block_rw: {} index={} sectors={} sector_size={} read_only={}",
            d.name(),
            d.index(),
            i.sectors,
            i.sector_size,
            i.read_only
        );
    }

    // Reads at the edges and across 1 MiB chunks.
    let expect =
        |from: u64, len: usize| -> Vec<u8> { (0..len as u64).map(|k| init(from + k)).collect() };
    let mut one = vec![0u8; 512];
    for s in [0, 1, n / 2, n - 1] {
        disk.read(s, &mut one).unwrap();
        c.check("read sector", one == expect(s * 512, 512));
    }
    let mut big = vec![0u8; 3 << 19]; // 1.5 MiB: two hypercalls
    disk.read(1, &mut big).unwrap();
    c.check("read 1.5 MiB", big == expect(512, big.len()));
    let mut odd = vec![0u8; 3000];
    disk.read_bytes(1000, &mut odd).unwrap();
    c.check("read_bytes unaligned", odd == expect(1000, 3000));
    disk.read_bytes(n * 512 - 7, &mut odd[..7]).unwrap();
    c.check(
        "read_bytes at the end",
        odd[..7] == expect(n * 512 - 7, 7)[..],
    );

    // Writes the host checks afterwards.
    disk.write(0, &[0xa0; 512]).unwrap();
    disk.write(5, &[0xb0; 3 * 512]).unwrap();
    disk.write(n - 1, &[0xc0; 512]).unwrap();
    let region: Vec<u8> = (0..(3u32 << 19)).map(|i| (i % 256) as u8 ^ 0x5a).collect();
    disk.write(2048, &region).unwrap();
    disk.flush().unwrap();
    disk.read(n - 1, &mut one).unwrap();
    c.check("last sector written", one == [0xc0; 512]);
    let mut back = vec![0u8; region.len()];
    disk.read(2048, &mut back).unwrap();
    c.check("1.5 MiB written", back == region);
    let mut three = vec![0u8; 5 * 512];
    disk.read(4, &mut three).unwrap();
    c.check(
        "sectors 5..8 written, 4 and 8 untouched",
        three[..512] == expect(4 * 512, 512)[..]
            && three[512..2048] == [0xb0; 1536]
            && three[2048..] == expect(8 * 512, 512)[..],
    );

    // The libOS refuses before asking the monitor.
    c.check(
        "unaligned buffer",
        disk.read(0, &mut odd) == Err(Error::Unaligned),
    );
    c.check(
        "read past the end",
        disk.read(n - 1, &mut [0; 1024]) == Err(Error::OutOfRange),
    );
    c.check("write on ro", ro.write(0, &one) == Err(Error::ReadOnly));

    // The monitor refuses raw requests.
    let buf = big.as_mut_ptr();
    let dev = disk.index();
    let rd = Hypercall::BlockRead;
    let wr = Hypercall::BlockWrite;
    // SAFETY (all raw calls below): `buf` is a live 1.5 MiB buffer; counts beyond it and
    // wild pointers are exactly what the monitor must refuse without touching memory.
    unsafe {
        c.refused(
            "read across the end",
            raw_io(rd, dev, n - 1, 2, buf),
            HcError::Invalid,
        );
        c.refused(
            "write across the end",
            raw_io(wr, dev, n - 3, 8, buf),
            HcError::Invalid,
        );
        c.refused(
            "read one past the end",
            raw_io(rd, dev, n, 1, buf),
            HcError::Invalid,
        );
        c.refused(
            "read at sector u64::MAX",
            raw_io(rd, dev, u64::MAX, 1, buf),
            HcError::Invalid,
        );
        c.refused(
            "read of 0 sectors",
            raw_io(rd, dev, 0, 0, buf),
            HcError::Invalid,
        );
        c.refused(
            "read of 2049 sectors",
            raw_io(rd, dev, 0, 2049, buf),
            HcError::Invalid,
        );
        c.refused(
            "read of u32::MAX sectors",
            raw_io(rd, dev, 0, u32::MAX, buf),
            HcError::Invalid,
        );
        c.refused(
            "read into a wild pointer",
            raw_io(rd, dev, 0, 1, 0xdead_0000_0000 as *mut u8),
            HcError::BadAddress,
        );
        c.refused(
            "read into null",
            raw_io(rd, dev, 0, 1, core::ptr::null_mut()),
            HcError::BadAddress,
        );
        let text = main as *const () as *mut u8;
        c.refused(
            "read into the image's code",
            raw_io(rd, dev, 0, 1, text),
            HcError::BadAddress,
        );
        c.refused(
            "write from a wild pointer",
            raw_io(wr, dev, 0, 1, 0xdead_0000_0000 as *mut u8),
            HcError::BadAddress,
        );
        c.refused(
            "write to the ro device",
            raw_io(wr, ro.index(), 0, 1, buf),
            HcError::ReadOnly,
        );
        c.refused(
            "read from device 9",
            raw_io(rd, 9, 0, 1, buf),
            HcError::NoDevice,
        );
    }
    // The code the monitor refused to overwrite is intact (we are still running it),
    // and a write from read-only memory (the code) is fine.
    // SAFETY: the monitor only reads the buffer for a write.
    let r = unsafe { raw_io(wr, dev, 20, 1, main as *const () as *mut u8) };
    c.check("write from read-only memory", r == Ok(1));

    let mut all = vec![0u8; (ro.info().sectors * 512) as usize];
    ro.read(0, &mut all).unwrap();
    println!("block_rw: ro fnv {:016x}", fnv(&all));
    if c.failed == 0 {
        println!("block_rw: OK");
        0
    } else {
        println!("block_rw: {} checks failed", c.failed);
        1
    }
}
