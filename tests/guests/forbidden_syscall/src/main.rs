//! Executes a raw `syscall` instruction (getpid, 39). The monitor must stop the guest
//! and report it; if the syscall returns, the guest says so and exits 1.
#![no_std]
#![no_main]

use septem_libos::println;

septem_libos::main!(main);

fn main() -> i32 {
    println!("forbidden_syscall: executing getpid via the syscall instruction");
    let ret: i64;
    // SAFETY: getpid has no arguments and touches no memory; the instruction clobbers
    // rcx and r11. The point is that it must never reach the host kernel.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") 39i64 => ret,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    println!("forbidden_syscall: NOT STOPPED, syscall returned {ret}");
    1
}
