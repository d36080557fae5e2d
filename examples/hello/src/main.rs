//! Hello, unikernel: greets its first argument, shows an environment variable, the
//! wall clock, a heap allocation and a sleep, and exits with `--exit N` (default 0).
//!
//! ```text
//! cargo run --release -p septem-build -- run examples/hello -- world --exit 3
//! ```
#![no_std]
#![no_main]

use core::time::Duration;
use septem_libos::prelude::*;
use septem_libos::time::{self, Instant, UtcDateTime};
use septem_libos::{env, heap_stats};

septem_libos::main!(main);

fn main() -> i32 {
    let started = Instant::now();
    let mut name = "unikernel";
    let mut status = 0;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg {
            "--exit" => match args.next().map(str::parse::<i32>) {
                Some(Ok(n)) => status = n,
                _ => {
                    eprintln!("hello: --exit needs a number");
                    return 2;
                }
            },
            other => name = other,
        }
    }

    println!("Hello, {name}!");
    let greeting = env::var("GREETING").or_else(|| env::var("USER"));
    match greeting {
        Some(g) => println!("GREETING/USER: {g}"),
        None => println!("(set GREETING=... to see the environment at work)"),
    }
    println!("It is {} (UTC).", UtcDateTime::now());

    let squares: Vec<u64> = (1..=1000u64).map(|i| i * i).collect();
    let words: Vec<String> = ["one", "image", "seven", "syscalls"]
        .iter()
        .map(|w| w.to_uppercase())
        .collect();
    println!(
        "Heap: {} squares summing to {}, words {:?}, {} bytes in use.",
        squares.len(),
        squares.iter().sum::<u64>(),
        words,
        heap_stats().in_use
    );

    let before = Instant::now();
    time::sleep(Duration::from_millis(5));
    println!(
        "Slept {:?}; up for {:?}.",
        before.elapsed(),
        started.elapsed()
    );
    if status != 0 {
        println!("Exiting with status {status}.");
    }
    status
}
