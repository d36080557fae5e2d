//! The monitor's exit statuses (documented in docs/exit-status.md; keep both in step).
//!
//! A guest that exits normally gives its own status (0..=255; a libOS panic is 101).
//! The monitor's own outcomes use 120..=127, which guests should avoid.

/// Bad command line: unknown option, malformed value.
pub const USAGE: u8 = 120;
/// The image cannot be read or is not a valid Septem image (or speaks another ABI).
pub const BAD_IMAGE: u8 = 121;
/// The run configuration does not fit the image or the host: memory too small or too
/// large, a declared device not given, an undeclared device given.
pub const BAD_CONFIG: u8 = 122;
/// The host could not set the guest up (mmap, KVM, seccomp installation failed).
pub const HOST_SETUP: u8 = 123;
/// The guest faulted (page fault, invalid opcode, …) and was stopped.
pub const GUEST_FAULT: u8 = 124;
/// The guest executed a syscall the seccomp policy forbids and was stopped.
pub const FORBIDDEN_SYSCALL: u8 = 125;
/// The virtual machine stopped unexpectedly (triple fault, internal KVM error).
pub const VM_FAILURE: u8 = 126;
/// An internal monitor error (a bug: please report it).
pub const INTERNAL: u8 = 127;
