//! A fake monitor for host unit tests: a `BootInfo` whose hypercall entry point is a
//! host function that records console writes and serves clocks from `std::time`.

use septem_abi::{
    BootInfo, BootStr, ClockMonotonicArgs, ClockWallArgs, ConsoleWriteArgs, GuestAddr, HcError,
    Hypercall, YieldArgs, BOOT_INFO_MAGIC,
};
use std::boxed::Box;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::vec::Vec;

type Console = Vec<(u32, Vec<u8>)>;

static CONSOLE: Mutex<Console> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The fake's arguments and environment.
pub(crate) const ARGS: [&[u8]; 4] = [b"image", b"one", b"bad\xff", b"three"];
pub(crate) const ENV: [&[u8]; 5] = [b"HOME=/", b"NOEQUALS", b"EMPTY=", b"=nokey", b"A=b=c"];

fn mono_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1_000_000_000
}

unsafe extern "sysv64" fn fake_hypercall(nr: u64, arg: *mut u8) -> i64 {
    let Ok(hc) = Hypercall::try_from(nr) else {
        return HcError::Unsupported.code();
    };
    match hc {
        Hypercall::ConsoleWrite => {
            // SAFETY: the libOS passes a pointer to the struct `nr` expects (and valid data).
            let a = unsafe { &mut *arg.cast::<ConsoleWriteArgs>() };
            // SAFETY: the libOS passes a pointer to the struct `nr` expects (and valid data).
            let data =
                unsafe { std::slice::from_raw_parts(a.data.raw() as *const u8, a.len as usize) };
            CONSOLE.lock().unwrap().push((a.stream, data.to_vec()));
            a.written = a.len;
            0
        }
        Hypercall::ClockMonotonic => {
            // SAFETY: the libOS passes a pointer to the struct `nr` expects (and valid data).
            unsafe { (*arg.cast::<ClockMonotonicArgs>()).nanos = mono_ns() };
            0
        }
        Hypercall::ClockWall => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            // SAFETY: the libOS passes a pointer to the struct `nr` expects (and valid data).
            unsafe { (*arg.cast::<ClockWallArgs>()).nanos_since_epoch = now.as_nanos() as u64 };
            0
        }
        Hypercall::Yield => {
            // SAFETY: the libOS passes a pointer to the struct `nr` expects (and valid data).
            let a = unsafe { &mut *arg.cast::<YieldArgs>() };
            let now = mono_ns();
            if a.deadline > now {
                std::thread::sleep(Duration::from_nanos(a.deadline - now));
            }
            0
        }
        Hypercall::Exit | Hypercall::Abort => HcError::Invalid.code(),
    }
}

fn table(items: &[&'static [u8]]) -> GuestAddr {
    let v: Vec<BootStr> = items
        .iter()
        .map(|s| BootStr {
            addr: GuestAddr::new(s.as_ptr() as u64),
            len: s.len() as u64,
        })
        .collect();
    GuestAddr::new(Box::leak(v.into_boxed_slice()).as_ptr() as u64)
}

/// Installs the fake boot information (once per test process).
pub(crate) fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let info = BootInfo {
            magic: BOOT_INFO_MAGIC,
            abi_version: septem_abi::ABI_VERSION,
            hypercall: fake_hypercall as *const () as usize as u64,
            argc: ARGS.len() as u64,
            argv: table(&ARGS),
            envc: ENV.len() as u64,
            envp: table(&ENV),
            boot_monotonic_ns: mono_ns(),
            ..BootInfo::default()
        };
        assert!(crate::boot::install(&info));
    });
}

/// Serializes tests that use the shared console, after installing the fake.
pub(crate) fn lock() -> MutexGuard<'static, ()> {
    install();
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    crate::console::flush();
    take_console();
    guard
}

/// Takes what the guest wrote so far.
pub(crate) fn take_console() -> Console {
    std::mem::take(&mut *CONSOLE.lock().unwrap())
}
