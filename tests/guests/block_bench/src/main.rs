//! Block I/O throughput through the libOS block API: sequential write and read of
//! SEQ_MIB MiB in 1 MiB requests, then RAND_OPS random 4 KiB reads and writes (aligned,
//! spread over the same area). Arguments: `SEQ_MIB RAND_OPS` (default 256 20000).
//! Prints one line per test: `block_bench NAME BYTES NS MB/s IOPS`.
#![no_std]
#![no_main]

use septem_libos::block::BlockDevice;
use septem_libos::prelude::*;
use septem_libos::{env, time::Instant};

septem_libos::main!(main);

fn report(name: &str, bytes: u64, ops: u64, start: Instant) {
    let ns = start.elapsed().as_nanos().max(1) as u64;
    let mbs = bytes as f64 * 1000.0 / ns as f64;
    let iops = ops as f64 * 1e9 / ns as f64;
    println!("block_bench {name} {bytes} {ns} {mbs:.1} {iops:.0}");
}

fn main() -> i32 {
    let mut args = env::args().skip(1);
    let seq_mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let ops: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let disk = BlockDevice::open("disk").expect("block device 'disk'");
    let sectors = disk.info().sectors;
    let seq_mib = seq_mib.min(sectors / 2048);
    if seq_mib == 0 {
        println!("block_bench: the disk is smaller than 1 MiB");
        return 1;
    }
    let mut buf: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 255) as u8).collect();

    let t = Instant::now();
    for i in 0..seq_mib {
        disk.write(i * 2048, &buf).expect("write");
    }
    disk.flush().expect("flush");
    report("seq_write", seq_mib << 20, seq_mib, t);

    let t = Instant::now();
    for i in 0..seq_mib {
        disk.read(i * 2048, &mut buf).expect("read");
    }
    report("seq_read", seq_mib << 20, seq_mib, t);

    // Random 4 KiB: xorshift over the 4 KiB blocks of the area written above.
    let blocks = seq_mib * 256;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % blocks) * 8
    };
    let page = &mut buf[..4096];
    let t = Instant::now();
    for _ in 0..ops {
        disk.read(next(), page).expect("read");
    }
    report("rand_read_4k", ops * 4096, ops, t);
    let t = Instant::now();
    for _ in 0..ops {
        disk.write(next(), page).expect("write");
    }
    disk.flush().expect("flush");
    report("rand_write_4k", ops * 4096, ops, t);
    0
}
