//! Times N ClockMonotonic hypercalls (N = first argument, default 10000) and prints
//! `hypercall_bench: N calls, X ns/call`.
#![no_std]
#![no_main]

use septem_libos::{env, hypercall, println};

septem_libos::main!(main);

fn main() -> i32 {
    let n: u64 = env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000)
        .max(1);
    let t0 = hypercall::clock_monotonic().unwrap_or(0);
    let mut last = t0;
    for _ in 0..n {
        last = hypercall::clock_monotonic().unwrap_or(last);
    }
    let total = last.saturating_sub(t0);
    println!(
        "hypercall_bench: {n} calls, {} ns/call ({total} ns total)",
        total / n
    );
    0
}
