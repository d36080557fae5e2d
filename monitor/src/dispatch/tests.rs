use super::*;
use crate::memory::{Region, RegionKind};

#[derive(Default)]
struct FakeHost {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    now: u64,
    waited_until: Option<u64>,
}

impl Host for FakeHost {
    fn console_write(&mut self, stream: Stream, data: &[u8]) -> Result<usize, HcError> {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(data),
            Stream::Stderr => self.stderr.extend_from_slice(data),
        }
        Ok(data.len())
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.now
    }
    fn wall_ns(&mut self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn wait_until(&mut self, deadline_ns: u64, _wait_set: u64) -> u64 {
        self.waited_until = Some(deadline_ns);
        self.now = deadline_ns;
        0
    }
}

const BASE: u64 = 0x10_0000;
const RO: u64 = BASE;
const RW: u64 = BASE + 0x1000;

fn guest(buf: &mut [u8]) -> GuestMemory {
    // SAFETY: every test keeps `buf` alive and unmoved while the memory is used.
    let mut m = unsafe { GuestMemory::new(buf.as_mut_ptr(), BASE, buf.len() as u64) };
    m.add_region(Region {
        start: RO,
        end: RW,
        read: true,
        write: false,
        exec: false,
        kind: RegionKind::Image,
    })
    .unwrap();
    m.add_region(Region {
        start: RW,
        end: BASE + 0x3000,
        read: true,
        write: true,
        exec: false,
        kind: RegionKind::Heap,
    })
    .unwrap();
    m
}

fn call<T: Pod>(m: &GuestMemory, host: &mut FakeHost, nr: Hypercall, args: &T) -> (Action, T) {
    m.write_obj(GuestAddr::new(RW), args).unwrap();
    let action = dispatch(
        m,
        host,
        DispatchConfig::default(),
        nr as u64,
        GuestAddr::new(RW),
    );
    (action, m.read_obj(GuestAddr::new(RW)).unwrap())
}

#[test]
fn console_write_reaches_the_right_stream() {
    let mut buf = vec![0u8; 0x3000];
    buf[0x800..0x805].copy_from_slice(b"hello");
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    let args = ConsoleWriteArgs {
        data: GuestAddr::new(RO + 0x800),
        len: 5,
        stream: CONSOLE_STDOUT,
        ..Default::default()
    };
    let (action, out) = call(&m, &mut host, Hypercall::ConsoleWrite, &args);
    assert_eq!(action, Action::Resume(5));
    assert_eq!(out.written, 5);
    let (_, _) = call(
        &m,
        &mut host,
        Hypercall::ConsoleWrite,
        &ConsoleWriteArgs {
            stream: CONSOLE_STDERR,
            ..args
        },
    );
    assert_eq!(host.stdout, b"hello");
    assert_eq!(host.stderr, b"hello");
}

#[test]
fn console_write_rejects_wild_pointers_and_bad_streams() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    for (data, len) in [
        (0xdead_0000_0000, 4),
        (RO, u64::MAX),
        (RW, 0x10_0000),
        (0, 1),
        (u64::MAX - 1, 4),
    ] {
        let args = ConsoleWriteArgs {
            data: GuestAddr::new(data),
            len,
            stream: CONSOLE_STDOUT,
            ..Default::default()
        };
        let (action, _) = call(&m, &mut host, Hypercall::ConsoleWrite, &args);
        assert_eq!(
            action,
            Action::Resume(HcError::BadAddress.code()),
            "data={data:#x} len={len:#x}"
        );
    }
    let args = ConsoleWriteArgs {
        data: GuestAddr::new(RO),
        len: 1,
        stream: 7,
        ..Default::default()
    };
    assert_eq!(
        call(&m, &mut host, Hypercall::ConsoleWrite, &args).0,
        Action::Resume(HcError::Invalid.code())
    );
    assert!(host.stdout.is_empty());
}

#[test]
fn argument_struct_itself_must_be_in_guest_memory() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    for arg in [0u64, 0x1000, BASE + 0x3000 - 4, u64::MAX - 3] {
        let a = dispatch(
            &m,
            &mut host,
            DispatchConfig::default(),
            Hypercall::ClockMonotonic as u64,
            GuestAddr::new(arg),
        );
        assert_eq!(
            a,
            Action::Resume(HcError::BadAddress.code()),
            "arg={arg:#x}"
        );
    }
    // Results cannot be written into read-only guest memory.
    let a = dispatch(
        &m,
        &mut host,
        DispatchConfig::default(),
        Hypercall::ClockWall as u64,
        GuestAddr::new(RO),
    );
    assert_eq!(a, Action::Resume(HcError::BadAddress.code()));
}

#[test]
fn unknown_numbers_are_unsupported() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    for nr in [0u64, 7, 0x12, 0x20, u64::MAX] {
        let a = dispatch(
            &m,
            &mut host,
            DispatchConfig::default(),
            nr,
            GuestAddr::new(RW),
        );
        assert_eq!(a, Action::Resume(HcError::Unsupported.code()));
    }
}

#[test]
fn clocks_and_yield() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost {
        now: 1000,
        ..Default::default()
    };
    let (_, c) = call(
        &m,
        &mut host,
        Hypercall::ClockMonotonic,
        &ClockMonotonicArgs::default(),
    );
    assert_eq!(c.nanos, 1000);
    let (_, w) = call(
        &m,
        &mut host,
        Hypercall::ClockWall,
        &ClockWallArgs::default(),
    );
    assert_eq!(w.nanos_since_epoch, 1_700_000_000_000_000_000);
    let (a, _) = call(
        &m,
        &mut host,
        Hypercall::Yield,
        &YieldArgs {
            deadline: 5000,
            ..Default::default()
        },
    );
    assert_eq!(a, Action::Resume(0));
    assert_eq!(host.waited_until, Some(5000));
    host.waited_until = None;
    call(
        &m,
        &mut host,
        Hypercall::Yield,
        &YieldArgs {
            deadline: 10,
            ..Default::default()
        },
    );
    assert_eq!(host.waited_until, None, "a past deadline returns at once");
    let (a, _) = call(
        &m,
        &mut host,
        Hypercall::Yield,
        &YieldArgs {
            deadline: 1,
            wait_set: 1,
            ready_set: 0,
        },
    );
    assert_eq!(a, Action::Resume(HcError::NoDevice.code()));
}

#[test]
fn exit_and_abort() {
    let mut buf = vec![0u8; 0x3000];
    buf[0x10..0x14].copy_from_slice(b"boom");
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    assert_eq!(
        call(
            &m,
            &mut host,
            Hypercall::Exit,
            &ExitArgs { status: 7, _pad: 0 }
        )
        .0,
        Action::Exit(7)
    );
    assert_eq!(
        call(
            &m,
            &mut host,
            Hypercall::Exit,
            &ExitArgs {
                status: 256 + 3,
                _pad: 0
            }
        )
        .0,
        Action::Exit(3)
    );
    let abort = AbortArgs {
        message: GuestAddr::new(RO + 0x10),
        len: 4,
        status: 101,
        _pad: 0,
    };
    assert_eq!(
        call(&m, &mut host, Hypercall::Abort, &abort).0,
        Action::Exit(101)
    );
    let text = String::from_utf8(host.stderr.clone()).unwrap();
    assert!(text.contains("guest aborted (status 101): boom"), "{text}");
    let wild = AbortArgs {
        message: GuestAddr::new(0xdead_0000),
        len: u64::MAX,
        status: 3,
        _pad: 0,
    };
    assert_eq!(
        call(&m, &mut host, Hypercall::Abort, &wild).0,
        Action::Exit(3)
    );
    assert!(String::from_utf8(host.stderr)
        .unwrap()
        .contains("not readable"));
}

#[test]
fn trace_names_the_call_and_result() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    let cfg = DispatchConfig { trace: true };
    m.write_obj(GuestAddr::new(RW), &ClockMonotonicArgs::default())
        .unwrap();
    dispatch(
        &m,
        &mut host,
        cfg,
        Hypercall::ClockMonotonic as u64,
        GuestAddr::new(RW),
    );
    dispatch(&m, &mut host, cfg, 99, GuestAddr::new(RW));
    let text = String::from_utf8(host.stderr).unwrap();
    assert!(text.contains("clock_monotonic(nanos=0) = 0"), "{text}");
    assert!(
        text.contains("unknown#0x63") && text.contains("unsupported hypercall"),
        "{text}"
    );
}
