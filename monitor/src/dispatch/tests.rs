use super::*;
use crate::memory::{Region, RegionKind};
use septem_abi::YIELD_SHUTDOWN;
use std::collections::VecDeque;

#[derive(Default)]
struct FakeHost {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    now: u64,
    waited_until: Option<u64>,
    /// The wait set of the last `wait_until`.
    waited_for: Option<u64>,
    /// What `wait_until` reports ready.
    ready: u64,
    /// Frames sent, with their device.
    tx: Vec<(usize, Vec<u8>)>,
    /// Frames the host accepts before "would block" (None: unlimited).
    tx_room: Option<usize>,
    /// Frames waiting to be received.
    rx: VecDeque<Vec<u8>>,
    /// Fail every net call with this error.
    net_error: Option<HcError>,
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
    fn wait_until(&mut self, deadline_ns: u64, wait_set: u64) -> u64 {
        self.waited_until = Some(deadline_ns);
        self.waited_for = Some(wait_set);
        if self.ready == 0 {
            self.now = self.now.max(deadline_ns);
        }
        self.ready
    }
    fn net_write(&mut self, device: usize, frame: &[u8]) -> Result<bool, HcError> {
        if let Some(e) = self.net_error {
            return Err(e);
        }
        if self.tx_room == Some(self.tx.len()) {
            return Ok(false);
        }
        self.tx.push((device, frame.to_vec()));
        Ok(true)
    }
    fn net_read(&mut self, _device: usize, buf: &mut [u8]) -> Result<Option<usize>, HcError> {
        if let Some(e) = self.net_error {
            return Err(e);
        }
        let Some(frame) = self.rx.pop_front() else {
            return Ok(None);
        };
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(Some(frame.len()))
    }
}

/// Device 1 is a net device (device 0 is something else).
const NET_CFG: DispatchConfig = DispatchConfig {
    trace: false,
    net_devices: 0b10,
    blocks: [BlockLimits::NONE; MAX_DEVICES],
};

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
    for nr in [0u64, 7, 0x12, 0x23, u64::MAX] {
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
    let cfg = DispatchConfig {
        trace: true,
        ..DispatchConfig::default()
    };
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

fn call_cfg<T: Pod>(
    m: &GuestMemory,
    host: &mut FakeHost,
    cfg: DispatchConfig,
    nr: Hypercall,
    args: &T,
) -> (Action, T) {
    m.write_obj(GuestAddr::new(RW), args).unwrap();
    let action = dispatch(m, host, cfg, nr as u64, GuestAddr::new(RW));
    (action, m.read_obj(GuestAddr::new(RW)).unwrap())
}

/// Frame table at RW + 0x100; frames (or buffers) of 64 bytes from RW + 0x800.
const TABLE: u64 = RW + 0x100;
const DATA: u64 = RW + 0x800;

fn frame(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 16 + j) as u8).collect()
}

fn put_table(m: &GuestMemory, frames: &[NetFrame]) {
    for (i, f) in frames.iter().enumerate() {
        m.write_obj(GuestAddr::new(TABLE + 16 * i as u64), f)
            .unwrap();
    }
}

fn table_entry(m: &GuestMemory, i: u64) -> NetFrame {
    m.read_obj(GuestAddr::new(TABLE + 16 * i)).unwrap()
}

/// `n` frames of 60 bytes each, written into guest memory, in the table.
fn outgoing(m: &GuestMemory, n: usize) -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(i, 60)).collect();
    let table: Vec<NetFrame> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let at = DATA + 64 * i as u64;
            m.write_bytes(GuestAddr::new(at), f).unwrap();
            NetFrame {
                data: GuestAddr::new(at),
                len: f.len() as u32,
                _pad: 0,
            }
        })
        .collect();
    put_table(m, &table);
    frames
}

fn write_args(count: u32) -> NetWriteArgs {
    NetWriteArgs {
        device: 1,
        count,
        frames: GuestAddr::new(TABLE),
        ..Default::default()
    }
}

#[test]
fn net_write_sends_a_batch_in_order() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    let frames = outgoing(&m, 3);
    let (a, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetWrite, &write_args(3));
    assert_eq!(a, Action::Resume(3));
    assert_eq!(out.done, 3);
    let sent: Vec<(usize, Vec<u8>)> = frames.into_iter().map(|f| (1, f)).collect();
    assert_eq!(host.tx, sent);
}

#[test]
fn net_write_stops_when_the_host_would_block() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost {
        tx_room: Some(2),
        ..Default::default()
    };
    outgoing(&m, 5);
    let (a, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetWrite, &write_args(5));
    assert_eq!((a, out.done), (Action::Resume(2), 2));
    host.tx_room = Some(2);
    let (a, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetWrite, &write_args(1));
    assert_eq!((a, out.done), (Action::Resume(0), 0));
    // A host error with nothing sent is the call's result.
    host.tx_room = None;
    host.net_error = Some(HcError::Io);
    let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetWrite, &write_args(1));
    assert_eq!(a, Action::Resume(HcError::Io.code()));
}

#[test]
fn net_write_refuses_bad_requests_and_sends_nothing() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    outgoing(&m, 4);
    let ok = write_args(4);
    let cases: Vec<(NetWriteArgs, HcError)> = vec![
        (NetWriteArgs { device: 0, ..ok }, HcError::NoDevice),
        (NetWriteArgs { device: 2, ..ok }, HcError::NoDevice),
        (NetWriteArgs { device: 64, ..ok }, HcError::NoDevice),
        (
            NetWriteArgs {
                device: u32::MAX,
                ..ok
            },
            HcError::NoDevice,
        ),
        (NetWriteArgs { count: 0, ..ok }, HcError::Invalid),
        (NetWriteArgs { count: 65, ..ok }, HcError::Invalid),
        (
            NetWriteArgs {
                count: u32::MAX,
                ..ok
            },
            HcError::Invalid,
        ),
        (NetWriteArgs { _pad: 1, ..ok }, HcError::Invalid),
        (
            NetWriteArgs {
                frames: GuestAddr::new(0xdead_0000_0000),
                ..ok
            },
            HcError::BadAddress,
        ),
        (
            NetWriteArgs {
                frames: GuestAddr::new(u64::MAX - 8),
                ..ok
            },
            HcError::BadAddress,
        ),
        (
            // The table runs off the end of guest memory.
            NetWriteArgs {
                frames: GuestAddr::new(BASE + 0x3000 - 32),
                count: 3,
                ..ok
            },
            HcError::BadAddress,
        ),
        (
            NetWriteArgs {
                frames: GuestAddr::NULL,
                ..ok
            },
            HcError::BadAddress,
        ),
    ];
    for (args, want) in cases {
        let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetWrite, &args);
        assert_eq!(a, Action::Resume(want.code()), "{args:?}");
    }
    // Bad entries anywhere in the table: nothing at all is sent.
    let good = table_entry(&m, 0);
    for (bad, want) in [
        (NetFrame { len: 13, ..good }, HcError::Invalid),
        (NetFrame { len: 9015, ..good }, HcError::Invalid),
        (
            NetFrame {
                len: u32::MAX,
                ..good
            },
            HcError::Invalid,
        ),
        (NetFrame { _pad: 1, ..good }, HcError::Invalid),
        (
            NetFrame {
                data: GuestAddr::new(0xdead_0000_0000),
                ..good
            },
            HcError::BadAddress,
        ),
        (
            NetFrame {
                data: GuestAddr::new(u64::MAX - 20),
                ..good
            },
            HcError::BadAddress,
        ),
        (
            NetFrame {
                data: GuestAddr::new(BASE + 0x3000 - 20),
                len: 40,
                _pad: 0,
            },
            HcError::BadAddress,
        ),
    ] {
        outgoing(&m, 4);
        put_table(&m, &[good, good, good]);
        m.write_obj(GuestAddr::new(TABLE + 48), &bad).unwrap();
        let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetWrite, &ok);
        assert_eq!(a, Action::Resume(want.code()), "{bad:?}");
    }
    assert!(host.tx.is_empty(), "{} frames sent", host.tx.len());
    // Frames may be read from read-only memory (e.g. constant data in the image).
    let ro = NetFrame {
        data: GuestAddr::new(RO),
        len: 64,
        _pad: 0,
    };
    put_table(&m, &[ro]);
    let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetWrite, &write_args(1));
    assert_eq!(a, Action::Resume(1));
}

fn read_args(count: u32) -> NetReadArgs {
    NetReadArgs {
        device: 1,
        count,
        frames: GuestAddr::new(TABLE),
        ..Default::default()
    }
}

/// `n` receive buffers of `cap` bytes, at least 64 bytes apart.
fn buffers(m: &GuestMemory, n: usize, cap: u32) {
    let stride = u64::from(cap.max(64));
    let table: Vec<NetFrame> = (0..n)
        .map(|i| NetFrame {
            data: GuestAddr::new(DATA + stride * i as u64),
            len: cap,
            _pad: 0,
        })
        .collect();
    put_table(m, &table);
}

#[test]
fn net_read_fills_buffers_and_reports_lengths() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    buffers(&m, 4, 64);
    let (a, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetRead, &read_args(4));
    assert_eq!((a, out.done), (Action::Resume(0), 0), "nothing waiting");
    host.rx = [frame(0, 60), frame(1, 14), frame(2, 64)].into();
    let (a, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetRead, &read_args(4));
    assert_eq!((a, out.done), (Action::Resume(3), 3));
    for (i, len) in [(0u64, 60usize), (1, 14), (2, 64)] {
        let e = table_entry(&m, i);
        assert_eq!(e.len as usize, len);
        assert_eq!(
            m.read_bytes(e.data, len as u64).unwrap(),
            &frame(i as usize, len)[..]
        );
    }
    assert_eq!(
        table_entry(&m, 3).len,
        64,
        "unused entries stay as they were"
    );
    // More waiting than buffers: the rest stays queued.
    host.rx = [frame(0, 20), frame(1, 20), frame(2, 20)].into();
    buffers(&m, 2, 64);
    let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetRead, &read_args(2));
    assert_eq!(a, Action::Resume(2));
    assert_eq!(host.rx.len(), 1);
}

#[test]
fn net_read_drops_frames_longer_than_the_buffer() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost {
        rx: [frame(0, 100), frame(1, 30), frame(2, 200)].into(),
        ..Default::default()
    };
    buffers(&m, 2, 64);
    let (a, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetRead, &read_args(2));
    assert_eq!((a, out.done), (Action::Resume(1), 1));
    let e = table_entry(&m, 0);
    assert_eq!(e.len, 30);
    assert_eq!(m.read_bytes(e.data, 30).unwrap(), &frame(1, 30)[..]);
    assert!(host.rx.is_empty());
    // A queue of nothing but oversized frames cannot keep the call busy forever.
    host.rx = (0..1000).map(|i| frame(i, 100)).collect();
    let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetRead, &read_args(1));
    assert_eq!(a, Action::Resume(0));
    assert!(host.rx.len() >= 1000 - 2 * NET_BATCH_MAX as usize);
}

#[test]
fn net_read_refuses_bad_requests_and_consumes_nothing() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost {
        rx: [frame(0, 20)].into(),
        ..Default::default()
    };
    buffers(&m, 4, 64);
    let ok = read_args(4);
    let cases: Vec<(NetReadArgs, HcError)> = vec![
        (NetReadArgs { device: 0, ..ok }, HcError::NoDevice),
        (NetReadArgs { device: 63, ..ok }, HcError::NoDevice),
        (NetReadArgs { device: 1000, ..ok }, HcError::NoDevice),
        (NetReadArgs { count: 0, ..ok }, HcError::Invalid),
        (NetReadArgs { count: 65, ..ok }, HcError::Invalid),
        (
            NetReadArgs {
                count: 1 << 31,
                ..ok
            },
            HcError::Invalid,
        ),
        (NetReadArgs { _pad: 7, ..ok }, HcError::Invalid),
        (
            NetReadArgs {
                frames: GuestAddr::new(0xdead_0000_0000),
                ..ok
            },
            HcError::BadAddress,
        ),
        (
            // The table is readable but not writable: lengths cannot be returned.
            NetReadArgs {
                frames: GuestAddr::new(RO + 0x100),
                ..ok
            },
            HcError::BadAddress,
        ),
    ];
    for (args, want) in cases {
        let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetRead, &args);
        assert_eq!(a, Action::Resume(want.code()), "{args:?}");
    }
    let good = table_entry(&m, 0);
    for (bad, want) in [
        // Receiving into read-only memory (the image's code) is refused.
        (
            NetFrame {
                data: GuestAddr::new(RO),
                ..good
            },
            HcError::BadAddress,
        ),
        (
            NetFrame {
                data: GuestAddr::new(0xdead_0000_0000),
                ..good
            },
            HcError::BadAddress,
        ),
        (
            NetFrame {
                len: u32::MAX,
                ..good
            },
            HcError::BadAddress,
        ),
        (
            NetFrame {
                data: GuestAddr::new(u64::MAX - 8),
                ..good
            },
            HcError::BadAddress,
        ),
        (NetFrame { _pad: 1, ..good }, HcError::Invalid),
    ] {
        buffers(&m, 4, 64);
        m.write_obj(GuestAddr::new(TABLE + 32), &bad).unwrap();
        let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::NetRead, &ok);
        assert_eq!(a, Action::Resume(want.code()), "{bad:?}");
    }
    assert_eq!(host.rx.len(), 1, "a refused call must not consume frames");
    assert_eq!(&buf[0x1800..0x1800 + 20], &[0u8; 20], "nothing written");
}

#[test]
fn yield_waits_on_net_devices_only() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost {
        now: 100,
        ready: 0b10,
        ..Default::default()
    };
    let y = |deadline, wait_set| YieldArgs {
        deadline,
        wait_set,
        ready_set: 0,
    };
    let (a, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::Yield, &y(u64::MAX, 0b10));
    assert_eq!(a, Action::Resume(0));
    assert_eq!(out.ready_set, 0b10);
    assert_eq!(
        (host.waited_until, host.waited_for),
        (Some(u64::MAX), Some(0b10))
    );
    // A passed deadline still reports which devices are ready.
    let (_, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::Yield, &y(5, 0b10));
    assert_eq!(out.ready_set, 0b10);
    // Not waiting on a device: the ready set stays empty whatever the host says.
    let (_, out) = call_cfg(&m, &mut host, NET_CFG, Hypercall::Yield, &y(500, 0));
    assert_eq!(out.ready_set, 0);
    assert_eq!(host.waited_for, Some(0));
    // The shutdown event may be waited for with or without devices.
    for wait_set in [YIELD_SHUTDOWN, YIELD_SHUTDOWN | 0b10] {
        let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::Yield, &y(500, wait_set));
        assert_eq!(a, Action::Resume(0), "{wait_set:#x}");
        assert_eq!(host.waited_for, Some(wait_set));
    }
    for wait_set in [0b01, 0b11, 0b100, 1 << 62, u64::MAX] {
        host.waited_for = None;
        let (a, _) = call_cfg(&m, &mut host, NET_CFG, Hypercall::Yield, &y(500, wait_set));
        assert_eq!(a, Action::Resume(HcError::NoDevice.code()), "{wait_set:#x}");
        assert_eq!(host.waited_for, None, "{wait_set:#x} must not wait");
    }
}

#[test]
fn net_calls_without_net_devices_are_no_device() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    outgoing(&m, 1);
    let (a, _) = call(&m, &mut host, Hypercall::NetWrite, &write_args(1));
    assert_eq!(a, Action::Resume(HcError::NoDevice.code()));
    let (a, _) = call(&m, &mut host, Hypercall::NetRead, &read_args(1));
    assert_eq!(a, Action::Resume(HcError::NoDevice.code()));
}

#[test]
fn trace_shows_net_calls() {
    let mut buf = vec![0u8; 0x3000];
    let m = guest(&mut buf);
    let mut host = FakeHost::default();
    outgoing(&m, 2);
    let cfg = DispatchConfig {
        trace: true,
        ..NET_CFG
    };
    call_cfg(&m, &mut host, cfg, Hypercall::NetWrite, &write_args(2));
    let text = String::from_utf8(host.stderr).unwrap();
    assert!(
        text.contains(&format!(
            "net_write(device=1, count=2, frames={TABLE:#x}, done=2) = 2"
        )),
        "{text}"
    );
}
