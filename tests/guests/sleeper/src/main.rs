//! Prints `sleeping`, sleeps 30 s and prints `woke`. With the argument `handle`, it
//! handles shutdown requests itself: it wakes every 10 ms, and on a request prints
//! `shutdown requested` and exits 7. Without it, a request ends it with the libOS's
//! default status (143).
#![no_std]
#![no_main]

use core::time::Duration;
use septem_libos::{env, lifecycle, println, time};

septem_libos::main!(main);

fn main() -> i32 {
    let handle = env::args().any(|a| a == "handle");
    if handle {
        lifecycle::handle_shutdown();
    }
    println!("sleeping");
    let start = time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        time::sleep(Duration::from_millis(10));
        if handle && lifecycle::shutdown_requested() {
            println!("shutdown requested");
            return 7;
        }
    }
    println!("woke");
    0
}
