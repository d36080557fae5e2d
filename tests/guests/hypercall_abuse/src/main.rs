//! Feeds the monitor bad hypercalls through the raw API and checks each returns the
//! right error: out-of-range pointers and lengths → BadAddress, bad stream → Invalid,
//! unknown numbers → Unsupported, waiting on a device that does not exist → NoDevice. Prints one line per check
//! and `hypercall_abuse OK`, or `hypercall_abuse FAILED` (exit 1).
#![no_std]
#![no_main]

use septem_libos::abi::{
    ClockMonotonicArgs, ConsoleWriteArgs, GuestAddr, HcError, Hypercall, YieldArgs, CONSOLE_STDOUT,
};
use septem_libos::hypercall::{hypercall, raw_hypercall};
use septem_libos::println;

septem_libos::main!(main);

const WILD: u64 = 0xdead_0000_0000;

fn console(data: u64, len: u64, stream: u32, pad: u32) -> i64 {
    let mut a = ConsoleWriteArgs {
        data: GuestAddr::new(data),
        len,
        stream,
        _pad: pad,
        written: 0,
    };
    // SAFETY: `a` is a live ConsoleWriteArgs; its contents are what is being tested.
    unsafe { hypercall(Hypercall::ConsoleWrite, &mut a) }
}

fn main() -> i32 {
    let msg = b"hypercall_abuse: a valid console write\n";
    let ok_ptr = msg.as_ptr() as u64;
    let mut clock = ClockMonotonicArgs::default();
    let clock_ptr = core::ptr::addr_of_mut!(clock).cast::<u8>();
    let mut yield_args = YieldArgs {
        deadline: 0,
        wait_set: 1,
        ready_set: 0,
    };
    let checks: [(&str, i64, Result<u64, HcError>); 10] = [
        (
            "valid console write",
            console(ok_ptr, msg.len() as u64, CONSOLE_STDOUT, 0),
            Ok(0),
        ),
        (
            "console data out of range",
            console(WILD, 16, CONSOLE_STDOUT, 0),
            Err(HcError::BadAddress),
        ),
        (
            "console huge length",
            console(ok_ptr, 1 << 40, CONSOLE_STDOUT, 0),
            Err(HcError::BadAddress),
        ),
        (
            "console length wraps",
            console(ok_ptr, u64::MAX, CONSOLE_STDOUT, 0),
            Err(HcError::BadAddress),
        ),
        (
            "console null data",
            console(0, 8, CONSOLE_STDOUT, 0),
            Err(HcError::BadAddress),
        ),
        (
            "console bad stream",
            console(ok_ptr, 4, 7, 0),
            Err(HcError::Invalid),
        ),
        // SAFETY: the argument pointer is deliberately wild; the monitor must refuse it.
        (
            "argument pointer out of range",
            unsafe { raw_hypercall(Hypercall::ClockMonotonic as u64, WILD as *mut u8) },
            Err(HcError::BadAddress),
        ),
        // SAFETY: valid pointer, unknown number.
        (
            "unknown hypercall 0x77",
            unsafe { raw_hypercall(0x77, clock_ptr) },
            Err(HcError::Unsupported),
        ),
        // SAFETY: valid pointer, number 0 is not defined.
        (
            "unknown hypercall 0",
            unsafe { raw_hypercall(0, clock_ptr) },
            Err(HcError::Unsupported),
        ),
        // SAFETY: a live YieldArgs; wait_set bit 0 names device 0, which does not exist.
        (
            "yield with a wait set",
            unsafe { hypercall(Hypercall::Yield, &mut yield_args) },
            Err(HcError::NoDevice),
        ),
    ];
    let mut failed = 0;
    for (name, got, want) in checks {
        let got_decoded = HcError::check(got).map(|_| 0);
        let pass = got_decoded == want;
        if !pass {
            failed += 1;
        }
        println!(
            "check {name}: got {got} ({got_decoded:?}), want {want:?}: {}",
            if pass { "ok" } else { "FAIL" }
        );
    }
    if failed == 0 {
        println!("hypercall_abuse OK");
        0
    } else {
        println!("hypercall_abuse FAILED: {failed} checks");
        1
    }
}
