//! Prints each argument (`arg[i]=…`) and environment entry (`env KEY=VALUE`) on its
//! own line, then `args_env done`.
#![no_std]
#![no_main]

use septem_libos::{env, println};

septem_libos::main!(main);

fn main() {
    for (i, a) in env::args().enumerate() {
        println!("arg[{i}]={a}");
    }
    for (k, v) in env::vars() {
        println!("env {k}={v}");
    }
    println!("args_env done");
}
