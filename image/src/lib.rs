//! `septem-image`: parses and validates Septem unikernel images.
//!
//! An image is a static, non-PIE ELF64 x86-64 executable linked at or above
//! [`septem_abi::IMAGE_BASE`], whose loadable segments are page-aligned and never both
//! writable and executable, carrying exactly one manifest note (see
//! [`septem_abi::manifest`]). Both the monitor (before loading) and the builder
//! (`inspect`, manifest patching) use this crate, so the rules live in one place.
//!
//! Parsing never panics and never reads out of bounds, whatever the bytes: every offset
//! and size is checked with overflow-checked arithmetic (see the property tests).

mod elf;
mod error;
mod image;
mod note;
pub mod size;
mod symbols;

pub use error::ImageError;
pub use image::{Image, Perms, Segment, MAX_IMAGE_END, MAX_IMAGE_FILE_SIZE, MAX_SEGMENTS};
pub use note::write_manifest;
pub use symbols::{Symbol, SymbolName};
