//! Checks the clocks: the monitor's monotonic clock never goes backward over many
//! reads, a 20 ms sleep takes at least 20 ms, the wall clock is after 2020. Prints
//! `clock OK` or the failure (exit 1), then `up <ms> ms at main` (the boot clock's
//! age when `main` began).
#![no_std]
#![no_main]

use core::time::Duration;
use septem_libos::hypercall;
use septem_libos::println;
use septem_libos::time::{self, Instant, UtcDateTime};

septem_libos::main!(main);

const READS: u32 = 2000;
/// 2020-01-01T00:00:00Z.
const Y2020: u64 = 1_577_836_800;

fn main() -> i32 {
    let up_at_main = time::since_boot();
    let mut prev = match hypercall::clock_monotonic() {
        Ok(t) => t,
        Err(e) => {
            println!("clock FAILED: ClockMonotonic returned {e}");
            return 1;
        }
    };
    for i in 0..READS {
        let now = hypercall::clock_monotonic().unwrap_or(0);
        if now < prev {
            println!("clock FAILED: monotonic went back at read {i}: {prev} -> {now}");
            return 1;
        }
        prev = now;
    }
    let before = Instant::now();
    time::sleep(Duration::from_millis(20));
    let slept = before.elapsed();
    if slept < Duration::from_millis(20) {
        println!("clock FAILED: sleep(20ms) took {slept:?}");
        return 1;
    }
    let wall = time::wall_clock();
    if wall.as_secs() < Y2020 {
        println!("clock FAILED: wall clock {wall:?} is before 2020");
        return 1;
    }
    println!(
        "clock OK: {READS} monotonic reads, sleep(20ms) took {slept:?}, wall clock {}",
        UtcDateTime::from_unix(wall)
    );
    println!("up {} ms at main", up_at_main.as_millis());
    0
}
