//! Exiting: [`exit`], [`abort`] and what `main` may return ([`Termination`]).

use crate::{console, hypercall};
use core::fmt;

/// The status [`abort`] exits with (128 + SIGABRT, as a host process would show).
pub const ABORT_EXIT_STATUS: i32 = 134;

/// Flushes the console and exits with `code` (the monitor exits with `code & 0xff`).
pub fn exit(code: i32) -> ! {
    console::flush();
    hypercall::exit_raw(code)
}

/// Flushes the console and aborts: the monitor prints `message` on its standard
/// error and exits with [`ABORT_EXIT_STATUS`].
pub fn abort(message: &str) -> ! {
    console::flush();
    hypercall::abort_raw(message.as_bytes(), ABORT_EXIT_STATUS)
}

/// What an app's `main` may return; [`crate::main!`] turns it into the exit status.
pub trait Termination {
    /// The exit status.
    fn report(self) -> i32;
}

impl Termination for () {
    fn report(self) -> i32 {
        0
    }
}

impl Termination for i32 {
    fn report(self) -> i32 {
        self
    }
}

impl Termination for u8 {
    fn report(self) -> i32 {
        i32::from(self)
    }
}

impl<T: Termination, E: fmt::Display> Termination for Result<T, E> {
    fn report(self) -> i32 {
        match self {
            Ok(v) => v.report(),
            Err(e) => {
                crate::eprintln!("Error: {e}");
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn termination_values() {
        assert_eq!(().report(), 0);
        assert_eq!(7i32.report(), 7);
        assert_eq!(255u8.report(), 255);
        assert_eq!(Ok::<i32, &str>(3).report(), 3);
        let _g = testing::lock();
        assert_eq!(Err::<(), &str>("boom").report(), 1);
        assert_eq!(
            testing::take_console(),
            [(septem_abi::CONSOLE_STDERR, b"Error: boom\n".to_vec())]
        );
    }
}
