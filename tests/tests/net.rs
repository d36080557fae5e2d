//! Net devices end to end: option and attach errors, and Ethernet frames
//! round-tripping between a tap and the `net_echo` guest on both backends, inside a
//! network namespace each test creates and deletes. Tests needing root, taps or
//! namespaces skip with a printed reason.

use septem_tests::net::{skip_unless_net, NetNs, PacketSocket, Running};
use septem_tests::{backend_tests, bin, guest, run_guest, septem_run, Backend};
use std::time::{Duration, Instant};

const USAGE: i32 = 120;
const BAD_CONFIG: i32 = 122;

const ETHERTYPE: u16 = 0x88b5;
const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x00, 0x07, 0x02];
const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x00, 0x07, 0x01];

fn net_echo() -> String {
    guest("net_echo").to_str().unwrap().to_string()
}

backend_tests!(a_declared_net_device_must_be_given, |b| {
    run_guest(b, &guest("net_echo"), &[], &[])
        .expect_status(BAD_CONFIG)
        .stderr_has("image declares net device 'service' but no --net:service=TAP is given; add --net:service=TAP");
});

backend_tests!(a_missing_tap_is_named_with_the_fix, |b| {
    run_guest(b, &guest("net_echo"), &["--net:service=septem-nx7"], &[])
        .expect_status(BAD_CONFIG)
        .stderr_has(
            "tap 'septem-nx7' does not exist; create it with: ip tuntap add dev septem-nx7 mode tap && ip link set septem-nx7 up",
        );
});

#[test]
fn an_undeclared_net_device_is_refused() {
    septem_run(&[
        "--backend",
        "seccomp",
        "--net:service=tap0",
        "--net:other=tap1",
        &net_echo(),
    ])
    .expect_status(BAD_CONFIG)
    .stderr_has(
        "--net:other=tap1: the image declares no net device 'other' (it declares: net 'service')",
    );
}

#[test]
fn bad_net_settings_are_usage_errors() {
    let image = net_echo();
    for (opts, wanted) in [
        (
            &["--net-mac:service=01:00:5e:00:00:01"][..],
            "is a multicast (or broadcast) address",
        ),
        (&["--net-mac:service=00:00:00:00:00:00"], "is all zeros"),
        (&["--net-mac:service=02:00:0a"], "is not a MAC address"),
        (&["--net-ip:service=10.0.7.2"], "needs a prefix length"),
        (
            &["--net-ip:service=10.0.7.2/33"],
            "not a number from 0 to 32",
        ),
        (&["--net-ip:service=10.0.7/24"], "not an IPv4 address"),
        (&["--net-gw:service=10.0.7.1.1"], "gateway '10.0.7.1.1'"),
        (
            &["--dns", "224.0.0.1"],
            "name server 224.0.0.1 is not a unicast address",
        ),
        (
            &["--net-ip:other=10.0.0.2/8"],
            "no --net:other=TAP is given",
        ),
    ] {
        let mut args = vec!["--backend", "seccomp", "--net:service=tap0"];
        args.extend_from_slice(opts);
        args.push(&image);
        septem_run(&args).expect_status(USAGE).stderr_has(wanted);
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A test frame of `len` bytes for the guest, numbered `i`.
fn numbered(i: usize, len: usize) -> Vec<u8> {
    let mut payload = format!("n={i} ").into_bytes();
    payload.extend(
        (0..)
            .map(|j: usize| (i + j) as u8)
            .take(len - 14 - payload.len()),
    );
    frame(GUEST_MAC, HOST_MAC, &payload)
}

/// Waits for the guest's broadcast hello.
fn wait_hello(sock: &PacketSocket) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(f) = sock.recv(Duration::from_millis(500)) {
            if f[..6] == [0xff; 6]
                && f[6..12] == GUEST_MAC
                && f[14..].starts_with(b"septem net_echo hello")
            {
                return;
            }
        }
    }
    panic!("no hello from the guest within 20 s");
}

/// Sends frames of `sizes` to the guest in one burst, collects the echoes (`wanted` of
/// them), then tells the guest to quit. Returns the echoed frames.
fn exchange(sizes: &[usize], wanted: usize) -> Vec<Vec<u8>> {
    let sock = PacketSocket::open("tap0", ETHERTYPE).expect("packet socket on tap0");
    wait_hello(&sock);
    for (i, &len) in sizes.iter().enumerate() {
        sock.send(&numbered(i, len)).expect("send");
    }
    let mut echoes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while echoes.len() < wanted && Instant::now() < deadline {
        if let Some(f) = sock.recv(Duration::from_millis(200)) {
            if f[..6] == HOST_MAC {
                echoes.push(f);
            }
        }
    }
    // Anything more (there should be nothing) would show up here.
    if let Some(f) = sock.recv(Duration::from_millis(300)) {
        if f[..6] == HOST_MAC {
            echoes.push(f);
        }
    }
    sock.send(&frame(
        GUEST_MAC,
        HOST_MAC,
        &[b"quit".as_slice(), &[0; 42]].concat(),
    ))
    .expect("send quit");
    echoes
}

/// The echo of `sent`: addresses swapped, the rest unchanged.
fn echo_of(sent: &[u8]) -> Vec<u8> {
    let mut e = sent.to_vec();
    e[..6].copy_from_slice(&HOST_MAC);
    e[6..12].copy_from_slice(&GUEST_MAC);
    e
}

fn run_echo(b: Backend, ns: &NetNs, extra: &[&str]) -> Running {
    let image = net_echo();
    let mut args = vec![
        "--backend",
        b.name(),
        "--net:service=tap0",
        "--net-mac:service=02:00:0a:00:07:02",
    ];
    args.extend_from_slice(extra);
    args.push(&image);
    Running::spawn(ns.command(&bin("septem-run"), &args))
}

backend_tests!(frames_round_trip_through_a_tap, |b| {
    if skip_unless_net() {
        return;
    }
    let ns = NetNs::new();
    ns.add_tap("tap0", 1500, true);
    let guest = run_echo(
        b,
        &ns,
        &[
            "--net-ip:service=10.0.7.2/24",
            "--net-gw:service=10.0.7.1",
            "--dns",
            "10.0.7.53",
        ],
    );
    // A burst larger than one batch (the guest reads 8 frames per call), smallest to
    // full-MTU frames.
    let sizes: Vec<usize> = (0..40)
        .map(|i| [60, 14 + 6, 1514, 600, 99][i % 5])
        .collect();
    let wanted = sizes.len();
    let echoes = ns.on_thread(move || exchange(&sizes, wanted));
    let out = guest.finish(Duration::from_secs(60));
    let report = format!("--- stdout\n{}\n--- stderr\n{}", out.stdout, out.stderr);
    assert_eq!(out.status, Some(0), "{report}");
    let sizes: Vec<usize> = (0..40)
        .map(|i| [60, 14 + 6, 1514, 600, 99][i % 5])
        .collect();
    let expected: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| echo_of(&numbered(i, len)))
        .collect();
    assert_eq!(echoes.len(), expected.len(), "{report}");
    assert!(
        echoes == expected,
        "echoes differ from the frames sent\n{report}"
    );
    for line in [
        "device 0: kind 1 name service mac 02:00:0a:00:07:02 mtu 1500",
        "device 0: address 10.0.7.2/24",
        "device 0: gateway 10.0.7.1",
        "device 0: dns 10.0.7.53",
        "check wild frame pointer: ok",
        "check device without net: ok",
        "check empty batch: ok",
        "check runt frame: ok",
        "quit after echoing 40 frames",
    ] {
        assert!(out.stdout.contains(line), "stdout lacks {line:?}\n{report}");
    }
});

backend_tests!(frames_longer_than_the_guest_buffer_are_dropped, |b| {
    if skip_unless_net() {
        return;
    }
    let ns = NetNs::new();
    // A jumbo MTU: the guest's 2048-byte buffers are shorter than the longest frame,
    // so the monitor bounces reads and drops what does not fit.
    ns.add_tap("tap0", 9000, true);
    let guest = run_echo(b, &ns, &[]);
    let sizes = [100, 3000, 200, 9014, 60];
    let echoes = ns.on_thread(move || exchange(&sizes, 3));
    let out = guest.finish(Duration::from_secs(60));
    let report = format!("--- stdout\n{}\n--- stderr\n{}", out.stdout, out.stderr);
    assert_eq!(out.status, Some(0), "{report}");
    assert!(out.stdout.contains("mtu 9000"), "{report}");
    let expected: Vec<Vec<u8>> = [(0, 100), (2, 200), (4, 60)]
        .iter()
        .map(|&(i, len)| echo_of(&numbered(i, len)))
        .collect();
    assert!(echoes == expected, "got {} echoes\n{report}", echoes.len());
    assert!(
        out.stdout.contains("quit after echoing 3 frames"),
        "{report}"
    );
});

backend_tests!(a_busy_tap_is_refused, |b| {
    if skip_unless_net() {
        return;
    }
    let ns = NetNs::new();
    ns.add_tap("tap0", 1500, true);
    let first = run_echo(b, &ns, &[]);
    let image = net_echo();
    let second = ns.command(
        &bin("septem-run"),
        &["--backend", b.name(), "--net:service=tap0", &image],
    );
    let out = ns.on_thread(move || {
        let sock = PacketSocket::open("tap0", ETHERTYPE).expect("packet socket on tap0");
        // The first guest is attached once it says hello.
        wait_hello(&sock);
        let out = Running::spawn(second).finish(Duration::from_secs(30));
        sock.send(&frame(
            GUEST_MAC,
            HOST_MAC,
            &[b"quit".as_slice(), &[0; 42]].concat(),
        ))
        .expect("send quit");
        out
    });
    assert_eq!(out.status, Some(BAD_CONFIG), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "tap 'tap0' is busy: another process (another septem-run?) is attached to it"
        ),
        "{}",
        out.stderr
    );
    let first = first.finish(Duration::from_secs(60));
    assert_eq!(first.status, Some(0), "{}\n{}", first.stdout, first.stderr);
});

#[test]
fn a_non_tap_interface_is_refused() {
    if skip_unless_net() {
        return;
    }
    let ns = NetNs::new();
    let image = net_echo();
    let out = Running::spawn(ns.command(
        &bin("septem-run"),
        &["--backend", "seccomp", "--net:service=lo", &image],
    ))
    .finish(Duration::from_secs(30));
    assert_eq!(out.status, Some(BAD_CONFIG), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("'lo' exists but is not a single-queue tap device"),
        "{}",
        out.stderr
    );
}
