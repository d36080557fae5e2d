//! Exits with the status given as its first argument (default 0).
#![no_std]
#![no_main]

use septem_libos::{env, eprintln, println};

septem_libos::main!(main);

fn main() -> i32 {
    let arg = env::args().nth(1).unwrap_or("0");
    match arg.parse::<i32>() {
        Ok(code) => {
            println!("exit_code: exiting with {code}");
            code
        }
        Err(_) => {
            eprintln!("exit_code: not a number: {arg:?}");
            2
        }
    }
}
