//! Shutdown requests from the host.
//!
//! The host asks a guest to stop gracefully with the ABI's shutdown event
//! ([`septem_abi::YIELD_SHUTDOWN`]): SIGTERM to `septem-run`, `runnc kill ID TERM`,
//! containerd's `ctr task kill`, a CRI `StopContainer`. The libOS watches for it in
//! every `Yield` it makes (every sleep and every network wait), so it is seen whenever
//! the app waits for anything.
//!
//! By default a request ends the app at once, the way SIGTERM ends a process that does
//! not handle it: the console is flushed and the guest exits with
//! [`TERMINATED_STATUS`] (128 + 15). An app that wants to finish its work first calls
//! [`handle_shutdown`] and then checks [`shutdown_requested`] (or [`poll_shutdown`])
//! in its loop; `net::server::Server` does this for every server built on it: it stops
//! accepting, answers what it has received, closes its connections and returns `Ok`.

use crate::hypercall;
use core::sync::atomic::{AtomicBool, Ordering};
use septem_abi::YIELD_SHUTDOWN;

/// Exit status of an app ended by a shutdown request it does not handle.
pub const TERMINATED_STATUS: i32 = 128 + 15;

static HANDLED: AtomicBool = AtomicBool::new(false);
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// From now on a shutdown request is recorded for the app ([`shutdown_requested`])
/// instead of ending it.
pub fn handle_shutdown() {
    HANDLED.store(true, Ordering::Relaxed);
}

/// True once the host has asked for a shutdown (as seen by the libOS's last wait; no
/// hypercall).
#[must_use]
pub fn shutdown_requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Asks the host now (one `Yield` that does not sleep) and returns
/// [`shutdown_requested`]: for apps that may go a long time without waiting.
pub fn poll_shutdown() -> bool {
    if !shutdown_requested() {
        let _ = hypercall::yield_until(0, 0);
    }
    shutdown_requested()
}

/// The event bit every `Yield` adds to its wait set: none once the request was seen,
/// so later waits still sleep (the event is level-triggered).
pub(crate) fn wait_bit() -> u64 {
    if shutdown_requested() {
        0
    } else {
        YIELD_SHUTDOWN
    }
}

/// Takes the shutdown event out of a `Yield`'s ready set, recording it (and ending the
/// app when it does not handle shutdown).
pub(crate) fn take_event(ready: u64) -> u64 {
    if ready & YIELD_SHUTDOWN != 0 {
        REQUESTED.store(true, Ordering::Relaxed);
        if !HANDLED.load(Ordering::Relaxed) {
            crate::process::exit(TERMINATED_STATUS);
        }
    }
    ready & !YIELD_SHUTDOWN
}
