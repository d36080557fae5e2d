//! `septem-build`: turns an app crate into a Septem unikernel image.
//!
//! - [`flags`]: the guest linker script and the compiler flags a guest is built with;
//! - [`metadata`]: the app's `[package.metadata.septem]` (devices, memory) → manifest;
//! - [`guest`]: [`build_guest`] runs cargo for the guest target, then finalizes the
//!   image's manifest note and writes the `.septem` image;
//! - [`inspect`]: a readable (or JSON) report about an image;
//! - [`runner`]: finds (or builds) `septem-run` to run an image;
//! - [`disk`]: block device images from folders (tar archives, `docs/storage.md`);
//! - [`oci`]: packages images as OCI images, pushes and pulls them (`docs/oci.md`).

pub mod disk;
pub mod flags;
pub mod guest;
pub mod inspect;
pub mod metadata;
pub mod oci;
pub mod runner;

pub use guest::{build_guest, BuildError, BuildOptions, BuiltImage, Profile};
pub use inspect::{inspect_file, InspectError, InspectReport};
pub use metadata::{AppManifest, MetadataError, SeptemMetadata};
