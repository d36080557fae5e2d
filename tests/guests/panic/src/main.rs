//! Panics with a known message; the monitor reports it and exits with 101.
#![no_std]
#![no_main]

septem_libos::main!(main);

fn main() {
    septem_libos::println!("panic: about to panic");
    let answer = core::hint::black_box(42);
    panic!("test guest panicked on purpose (answer {answer})");
}
