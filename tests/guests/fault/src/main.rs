//! Faults on purpose; the mode is the first argument:
//! `null` (read address 0), `write_text` (write to its own code), `exec_data` (call
//! into a data buffer), `exec_heap` (call into the heap), `stack_overflow` (unbounded
//! recursion), `ud2` (invalid opcode). The monitor must report the fault; if the guest
//! survives, it says so and exits 1.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use septem_libos::{env, println};

septem_libos::main!(main);

/// `ret` instructions, in a writable, non-executable data segment.
static mut DATA_CODE: [u8; 16] = [0xc3; 16];

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth; 128];
    core::hint::black_box(&frame);
    recurse(depth + 1).wrapping_add(frame[7])
}

fn call_at(addr: usize) {
    // SAFETY: not safe at all: `addr` is deliberately not executable, and the point
    // is that the CPU refuses to fetch from it.
    let f: extern "C" fn() = unsafe { core::mem::transmute::<usize, extern "C" fn()>(addr) };
    f();
}

fn main() -> i32 {
    let mode = env::args().nth(1).unwrap_or("null");
    println!("fault: mode {mode}");
    match mode {
        "null" => {
            let v: u64;
            // SAFETY: deliberately reads address 0, which is never mapped.
            unsafe { core::arch::asm!("mov {}, qword ptr [{}]", out(reg) v, in(reg) 0usize) };
            println!("fault: read {v} from address 0");
        }
        "write_text" => {
            let target = main as *const () as usize;
            // SAFETY: deliberately writes into the read-only, executable text segment.
            unsafe { core::arch::asm!("mov byte ptr [{}], 0xc3", in(reg) target) };
        }
        "exec_data" => call_at(core::ptr::addr_of!(DATA_CODE) as usize),
        "exec_heap" => {
            let code = vec![0xc3u8; 64];
            call_at(code.as_ptr() as usize);
        }
        "stack_overflow" => {
            let r = recurse(0);
            println!("fault: recursion returned {r}");
        }
        "ud2" => {
            // SAFETY: raises #UD, nothing else.
            unsafe { core::arch::asm!("ud2") };
        }
        other => {
            println!("fault: unknown mode {other:?}");
            return 2;
        }
    }
    println!("fault: survived mode {mode}?!");
    1
}
