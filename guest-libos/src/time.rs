//! Clocks and sleeping.
//!
//! [`Instant`] reads the host's monotonic clock (never going backwards, even if the
//! host's did); [`wall_clock`] the host's real-time clock as a [`Duration`] since the
//! Unix epoch, which [`UtcDateTime`] formats. [`sleep`] gives the CPU back to the host
//! with the `Yield` hypercall until the deadline: it never busy-waits.

use crate::{boot, hypercall};
use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

static LAST_MONOTONIC: AtomicU64 = AtomicU64::new(0);

fn monotonic_ns() -> u64 {
    let read = hypercall::clock_monotonic()
        .ok()
        .or_else(|| boot::boot_info().map(|b| b.boot_monotonic_ns))
        .unwrap_or(0);
    // Never let the guest see time go backwards.
    let prev = LAST_MONOTONIC.fetch_max(read, Ordering::Relaxed);
    prev.max(read)
}

fn nanos(d: Duration) -> Option<u64> {
    u64::try_from(d.as_nanos()).ok()
}

/// A point on the monotonic clock, with nanosecond resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// Now.
    #[must_use]
    pub fn now() -> Instant {
        Instant(monotonic_ns())
    }

    /// The instant `ns` nanoseconds after the monotonic clock's origin.
    #[must_use]
    pub const fn from_nanos(ns: u64) -> Instant {
        Instant(ns)
    }

    /// Nanoseconds since the monotonic clock's origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn duration_since(self, earlier: Instant) -> Duration {
        self.checked_duration_since(earlier).unwrap_or_default()
    }

    /// Time from `earlier` to `self`, `None` if `earlier` is later.
    #[must_use]
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_nanos)
    }

    /// Time since `self`.
    #[must_use]
    pub fn elapsed(self) -> Duration {
        Instant::now().duration_since(self)
    }

    /// `self + d`, `None` on overflow.
    #[must_use]
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        self.0.checked_add(nanos(d)?).map(Instant)
    }

    /// `self - d`, `None` on underflow.
    #[must_use]
    pub fn checked_sub(self, d: Duration) -> Option<Instant> {
        self.0.checked_sub(nanos(d)?).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Panics on overflow, as `std::time::Instant` does.
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d)
            .expect("overflow when adding duration to instant")
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;

    /// Panics on underflow, as `std::time::Instant` does.
    fn sub(self, d: Duration) -> Instant {
        self.checked_sub(d)
            .expect("overflow when subtracting duration from instant")
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    /// Saturates at zero, as `std::time::Instant` does.
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

/// The wall clock: time since the Unix epoch (UTC), as the host sees it.
#[must_use]
pub fn wall_clock() -> Duration {
    let ns = hypercall::clock_wall().ok().or_else(|| {
        let b = boot::boot_info()?;
        let since_boot = monotonic_ns().saturating_sub(b.boot_monotonic_ns);
        Some(b.boot_wall_ns.saturating_add(since_boot))
    });
    Duration::from_nanos(ns.unwrap_or(0))
}

/// How long ago the guest started (the boot clock `BootInfo` carries: when septem-run
/// entered the guest, which is at `start` for a container, not at `create`).
#[must_use]
pub fn since_boot() -> Duration {
    let boot = boot::boot_info().map_or(0, |b| b.boot_monotonic_ns);
    Duration::from_nanos(monotonic_ns().saturating_sub(boot))
}

/// Sleeps for at least `d`.
pub fn sleep(d: Duration) {
    let deadline = Instant::now().checked_add(d).unwrap_or(Instant(u64::MAX));
    sleep_until(deadline);
}

/// Sleeps until the monotonic clock reaches `deadline`.
pub fn sleep_until(deadline: Instant) {
    // The console is not flushed here: a `println!` already was, and `print!` output
    // is meant to wait.
    while Instant::now() < deadline {
        if hypercall::yield_until(deadline.0, 0).is_err() {
            // No way to give up the CPU: better to return early than to spin.
            break;
        }
    }
}

/// A UTC calendar date and time (proleptic Gregorian), for printing the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDateTime {
    /// Year, e.g. 2024.
    pub year: u32,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// Hour, 0 to 23.
    pub hour: u8,
    /// Minute, 0 to 59.
    pub minute: u8,
    /// Second, 0 to 59.
    pub second: u8,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl UtcDateTime {
    /// The date and time `since_epoch` after 1970-01-01T00:00:00Z.
    #[must_use]
    pub fn from_unix(since_epoch: Duration) -> UtcDateTime {
        let secs = since_epoch.as_secs();
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days, for days >= 0.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        UtcDateTime {
            year: u32::try_from(year).unwrap_or(u32::MAX),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            nanos: since_epoch.subsec_nanos(),
        }
    }

    /// Now, from [`wall_clock`].
    #[must_use]
    pub fn now() -> UtcDateTime {
        UtcDateTime::from_unix(wall_clock())
    }
}

impl fmt::Display for UtcDateTime {
    /// RFC 3339 with milliseconds: `2024-05-01T12:34:56.789Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.nanos / 1_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use std::string::ToString;

    #[test]
    fn calendar() {
        let at = |s: u64| UtcDateTime::from_unix(Duration::from_secs(s)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59.000Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00.000Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00.000Z");
        let t = UtcDateTime::from_unix(Duration::new(86_399, 987_654_321));
        assert_eq!(t.to_string(), "1970-01-01T23:59:59.987Z");
    }

    #[test]
    fn instant_arithmetic() {
        let a = Instant::from_nanos(1_000);
        let b = a + Duration::from_nanos(500);
        assert_eq!(b.as_nanos(), 1_500);
        assert_eq!(b - a, Duration::from_nanos(500));
        assert_eq!(a - b, Duration::ZERO);
        assert_eq!(a.checked_duration_since(b), None);
        assert_eq!(a.checked_add(Duration::MAX), None);
        assert_eq!(
            Instant::from_nanos(u64::MAX).checked_add(Duration::from_nanos(1)),
            None
        );
        assert_eq!(a.checked_sub(Duration::from_nanos(1_001)), None);
        assert_eq!(b - Duration::from_nanos(500), a);
    }

    #[test]
    fn clocks_and_sleep_through_the_fake_monitor() {
        testing::install();
        let start = Instant::now();
        let mut prev = start;
        for _ in 0..1000 {
            let now = Instant::now();
            assert!(now >= prev);
            prev = now;
        }
        sleep(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(UtcDateTime::now().year >= 2024);
    }
}
