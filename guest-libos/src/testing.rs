//! A fake monitor for host unit tests: a `BootInfo` whose hypercall entry point is a
//! host function that records console writes and serves clocks from `std::time`.
//!
//! It also attaches one net device (`service`, 10.0.0.2/24, gateway 10.0.0.1, DNS
//! 10.0.0.53) whose other end is [`WIRE`]: frames the guest sends land in
//! `from_guest`, frames pushed to `to_guest` are what it receives, and `Yield` with the
//! device's bit wakes when `to_guest` is non-empty.

use septem_abi::{
    BootDevice, BootInfo, BootStr, ClockMonotonicArgs, ClockWallArgs, ConsoleWriteArgs, DeviceKind,
    GuestAddr, HcError, Hypercall, NetConfig, NetFrame, NetReadArgs, NetWriteArgs, YieldArgs,
    BOOT_INFO_MAGIC, NET_BATCH_MAX, NET_HAS_ADDRESS, NET_HAS_DNS, NET_HAS_GATEWAY,
};
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::vec::Vec;

type Console = Vec<(u32, Vec<u8>)>;

static CONSOLE: Mutex<Console> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The fake's arguments and environment.
pub(crate) const ARGS: [&[u8]; 4] = [b"image", b"one", b"bad\xff", b"three"];
pub(crate) const ENV: [&[u8]; 5] = [b"HOME=/", b"NOEQUALS", b"EMPTY=", b"=nokey", b"A=b=c"];

/// The fake net device's MAC address.
pub(crate) const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The other end of the fake net device.
#[derive(Default)]
pub(crate) struct Wire {
    /// Frames for the guest to receive.
    pub to_guest: VecDeque<Vec<u8>>,
    /// Frames the guest sent.
    pub from_guest: VecDeque<Vec<u8>>,
    /// NetRead / NetWrite calls made.
    pub reads: u64,
    pub writes: u64,
}

pub(crate) static WIRE: Mutex<Wire> = Mutex::new(Wire {
    to_guest: VecDeque::new(),
    from_guest: VecDeque::new(),
    reads: 0,
    writes: 0,
});
/// Notified when frames are pushed in either direction.
pub(crate) static WIRE_CHANGED: Condvar = Condvar::new();

fn net_frames<'a>(table: GuestAddr, count: u32) -> Option<&'a mut [NetFrame]> {
    if count == 0 || count > NET_BATCH_MAX {
        return None;
    }
    // SAFETY: the libOS passes a table of `count` NetFrame entries.
    Some(unsafe { std::slice::from_raw_parts_mut(table.raw() as *mut NetFrame, count as usize) })
}

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
            // Device 0 and the shutdown event (which this fake host never raises).
            if a.wait_set & !(1 | septem_abi::YIELD_SHUTDOWN) != 0 {
                return HcError::NoDevice.code();
            }
            let mut wire = WIRE.lock().unwrap();
            loop {
                if a.wait_set & 1 != 0 && !wire.to_guest.is_empty() {
                    a.ready_set = 1;
                    return 0;
                }
                let now = mono_ns();
                if a.deadline <= now {
                    a.ready_set = 0;
                    return 0;
                }
                let wait = Duration::from_nanos(a.deadline - now).min(Duration::from_secs(1));
                wire = WIRE_CHANGED.wait_timeout(wire, wait).unwrap().0;
            }
        }
        Hypercall::NetWrite => {
            // SAFETY: the libOS passes a pointer to the struct `nr` expects (and valid data).
            let a = unsafe { &mut *arg.cast::<NetWriteArgs>() };
            if a.device != 0 {
                return HcError::NoDevice.code();
            }
            let Some(frames) = net_frames(a.frames, a.count) else {
                return HcError::Invalid.code();
            };
            let mut wire = WIRE.lock().unwrap();
            wire.writes += 1;
            for f in frames.iter() {
                // SAFETY: each entry describes a frame the libOS owns.
                let data = unsafe {
                    std::slice::from_raw_parts(f.data.raw() as *const u8, f.len as usize)
                };
                wire.from_guest.push_back(data.to_vec());
            }
            a.done = a.count;
            WIRE_CHANGED.notify_all();
            0
        }
        Hypercall::NetRead => {
            // SAFETY: the libOS passes a pointer to the struct `nr` expects (and valid data).
            let a = unsafe { &mut *arg.cast::<NetReadArgs>() };
            if a.device != 0 {
                return HcError::NoDevice.code();
            }
            let Some(frames) = net_frames(a.frames, a.count) else {
                return HcError::Invalid.code();
            };
            let mut wire = WIRE.lock().unwrap();
            wire.reads += 1;
            let mut n = 0;
            while n < frames.len() {
                let Some(frame) = wire.to_guest.pop_front() else {
                    break;
                };
                let e = &mut frames[n];
                if frame.len() > e.len as usize {
                    continue;
                }
                // SAFETY: each entry describes a writable buffer of `len` bytes.
                let buf =
                    unsafe { std::slice::from_raw_parts_mut(e.data.raw() as *mut u8, frame.len()) };
                buf.copy_from_slice(&frame);
                e.len = frame.len() as u32;
                n += 1;
            }
            a.done = n as u32;
            0
        }
        Hypercall::Exit | Hypercall::Abort => HcError::Invalid.code(),
        Hypercall::BlockRead | Hypercall::BlockWrite | Hypercall::BlockFlush => {
            HcError::NoDevice.code()
        }
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

fn net_device() -> BootDevice {
    let mut name = [0u8; 32];
    name[..7].copy_from_slice(b"service");
    BootDevice {
        kind: DeviceKind::Net as u32,
        name,
        net: NetConfig {
            mac: GUEST_MAC,
            mtu: 1500,
            ipv4: [10, 0, 0, 2],
            prefix_len: 24,
            gateway: [10, 0, 0, 1],
            dns: [10, 0, 0, 53],
            flags: NET_HAS_ADDRESS | NET_HAS_GATEWAY | NET_HAS_DNS,
            ..NetConfig::default()
        },
        ..BootDevice::default()
    }
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
            device_count: 1,
            devices: GuestAddr::new(Box::leak(Box::new(net_device())) as *const _ as u64),
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
