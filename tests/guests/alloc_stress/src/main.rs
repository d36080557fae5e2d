//! Heap stress. Default mode: allocates, checks and frees many blocks of varied sizes
//! and alignments, then prints `alloc_stress OK …`. Mode `exhaust`: allocates 1 MiB
//! blocks until the heap runs out, which must panic cleanly (status 101).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use septem_libos::{env, heap_stats, println};

septem_libos::main!(main);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn fill_byte(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(31).wrapping_add(i) & 0xff) as u8
}

fn stress() -> i32 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(usize, Vec<u8>)> = Vec::new();
    let (mut allocations, mut bytes) = (0u64, 0u64);
    for round in 0..20_000usize {
        let r = rng.next();
        if live.len() > 200 || (r % 3 == 0 && !live.is_empty()) {
            let i = (r as usize / 3) % live.len();
            let (seed, block) = live.swap_remove(i);
            for (j, b) in block.iter().enumerate() {
                if *b != fill_byte(seed, j) {
                    println!("alloc_stress FAILED: block {seed} corrupted at byte {j}");
                    return 1;
                }
            }
            continue;
        }
        let size = match r % 10 {
            0..=5 => (r >> 8) as usize % 64 + 1,
            6..=8 => (r >> 8) as usize % 4096 + 1,
            _ => (r >> 8) as usize % (256 * 1024) + 1,
        };
        let block: Vec<u8> = (0..size).map(|j| fill_byte(round, j)).collect();
        allocations += 1;
        bytes += size as u64;
        live.push((round, block));
    }
    // Aligned boxes too.
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let pages: Vec<Box<Page>> = (0..16).map(|i| Box::new(Page([i as u8; 4096]))).collect();
    for (i, p) in pages.iter().enumerate() {
        if (&**p as *const Page as usize) % 4096 != 0 || p.0.iter().any(|&b| b != i as u8) {
            println!("alloc_stress FAILED: page {i} misaligned or corrupted");
            return 1;
        }
    }
    drop(pages);
    drop(live);
    if !mem_functions() {
        println!("alloc_stress FAILED: memmove/memcmp/bcmp gave a wrong result");
        return 1;
    }
    let s = heap_stats();
    println!(
        "alloc_stress OK: {allocations} allocations, {bytes} bytes, peak {} bytes, heap {} bytes, in use at end {}",
        s.peak, s.size, s.in_use
    );
    0
}

/// Exercises the libOS's memmove (overlapping copies), bcmp (slice equality) and
/// memcmp (slice ordering) on heap buffers.
fn mem_functions() -> bool {
    let original: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let mut v = original.clone();
    v.copy_within(0..4000, 13);
    let forward_ok = core::hint::black_box(&v[13..4013]) == &original[..4000];
    let mut w = original.clone();
    w.copy_within(13..4013, 0);
    let backward_ok = core::hint::black_box(&w[..4000]) == &original[13..4013];
    let mut bigger = original.clone();
    bigger[3000] = bigger[3000].wrapping_add(1);
    let order_ok = core::hint::black_box(&original[..]) < &bigger[..]
        && core::hint::black_box(&bigger[..]) > &original[..]
        && original[..] != bigger[..];
    forward_ok && backward_ok && order_ok
}

fn exhaust() -> i32 {
    println!(
        "alloc_stress: exhausting the heap ({} bytes)",
        heap_stats().size
    );
    let mut hoard: Vec<Box<[u8]>> = Vec::new();
    loop {
        let mut block = Vec::with_capacity(1 << 20);
        block.resize(1 << 20, hoard.len() as u8);
        hoard.push(block.into_boxed_slice());
        if hoard.len() % 16 == 0 {
            println!("alloc_stress: {} MiB allocated", hoard.len());
        }
    }
}

fn main() -> i32 {
    match env::args().nth(1) {
        None | Some("stress") => stress(),
        Some("exhaust") => exhaust(),
        Some(other) => {
            println!("alloc_stress: unknown mode {other:?} (stress, exhaust)");
            2
        }
    }
}
