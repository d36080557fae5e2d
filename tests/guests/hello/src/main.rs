//! Prints one fixed line and exits 0.
#![no_std]
#![no_main]

septem_libos::main!(main);

fn main() {
    septem_libos::println!("Hello from a Septem guest!");
}
