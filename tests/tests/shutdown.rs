//! Shutdown requests (ABI `YIELD_SHUTDOWN`): SIGTERM to `septem-run` reaches the guest
//! as an event, on both backends. A guest that does not handle it ends with 143 (as a
//! process killed by SIGTERM); one that does sees it and exits its own way; SIGKILL
//! still stops at once. (The servers' graceful drain is in servers.rs.)

use septem_tests::net::Running;
use septem_tests::{backend_tests, bin, guest, skip_unless_usable, Backend};
use std::process::Command;
use std::time::Duration;

fn start(b: Backend, args: &[&str]) -> Running {
    let image = guest("sleeper");
    let mut cmd = Command::new(bin("septem-run"));
    cmd.args(["--backend", b.name()])
        .arg(image)
        .arg("--")
        .args(args);
    let r = Running::spawn(cmd);
    // Long enough for the guest to be sleeping (boot takes milliseconds).
    std::thread::sleep(Duration::from_millis(500));
    r
}

backend_tests!(sigterm_ends_a_guest_that_does_not_handle_it_with_143, |b| {
    if skip_unless_usable(b) {
        return;
    }
    let mut r = start(b, &[]);
    assert!(r.is_running(), "the sleeper ended early");
    r.signal(libc::SIGTERM);
    let out = r.finish(Duration::from_secs(10));
    assert_eq!(out.status, Some(143), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("sleeping"), "{}", out.stdout);
    assert!(!out.stdout.contains("woke"), "{}", out.stdout);
});

backend_tests!(a_guest_that_handles_shutdown_sees_the_request, |b| {
    if skip_unless_usable(b) {
        return;
    }
    let r = start(b, &["handle"]);
    r.signal(libc::SIGTERM);
    // A second request changes nothing (the event is latched once).
    r.signal(libc::SIGTERM);
    let out = r.finish(Duration::from_secs(10));
    assert_eq!(out.status, Some(7), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("shutdown requested"), "{}", out.stdout);
});

backend_tests!(sigkill_stops_at_once, |b| {
    if skip_unless_usable(b) {
        return;
    }
    let r = start(b, &["handle"]);
    r.signal(libc::SIGKILL);
    let out = r.finish(Duration::from_secs(5));
    assert_eq!(out.status, None, "killed by a signal: no exit code");
});
