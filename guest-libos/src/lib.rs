//! `septem-libos`: the library OS Septem guests link against.
//!
//! An app is an ordinary `#![no_std] #![no_main]` binary crate that names its entry
//! function with [`main!`]:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use septem_libos::println;
//!
//! septem_libos::main!(main);
//!
//! fn main() -> i32 {
//!     println!("hello from a unikernel");
//!     0
//! }
//! ```
//!
//! `septem-build` compiles it for `x86_64-unknown-linux-gnu` with the guest linker
//! script; the monitor calls [`entry`]'s `_start` with a [`septem_abi::BootInfo`].
//!
//! Everything here is single-threaded: a guest has one CPU and no threads. The crate is
//! `no_std` except under `cfg(test)`, where its logic unit-tests on the host; the items
//! that only make sense in a guest (`_start`, the panic handler, the global allocator,
//! the C memory functions) are compiled out of tests.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod block;
pub mod boot;
pub mod console;
pub mod entry;
pub mod env;
pub mod fs;
pub mod heap;
pub mod hypercall;
pub mod lifecycle;
pub mod mem;
pub mod net;
pub mod panic;
pub mod process;
mod sync;
pub mod time;

pub use septem_abi as abi;

pub use heap::{heap_stats, HeapStats};
pub use process::{abort, exit, Termination};

/// The usual imports for an app: `alloc`'s collections and the print macros.
pub mod prelude {
    pub use crate::{eprint, eprintln, print, println};
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}

/// Names the app's entry function: `septem_libos::main!(main);`.
///
/// The function takes no arguments and returns anything that implements
/// [`Termination`]: `()` (status 0), `i32` or `u8` (that status), or
/// `Result<T, E: Display>` (`Err` prints `Error: {e}` on stderr and exits with 1).
/// Arguments and environment come from [`env::args`] and [`env::var`].
#[macro_export]
macro_rules! main {
    ($main:path) => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub fn __septem_main() -> i32 {
            $crate::Termination::report($main())
        }
    };
}

/// Prints to the console's standard output (buffered; see [`console`]).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to standard output and flushes it.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::_println(::core::format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::console::_println(::core::format_args!($($arg)*))
    };
}

/// Prints to standard error (flushed at the end of the call).
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::console::_eprint(::core::format_args!($($arg)*), false)
    };
}

/// Prints a line to standard error.
#[macro_export]
macro_rules! eprintln {
    () => {
        $crate::console::_eprint(::core::format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::console::_eprint(::core::format_args!($($arg)*), true)
    };
}

#[cfg(test)]
pub(crate) mod testing;
