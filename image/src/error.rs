//! Why an image was rejected.

use septem_abi::ManifestError;

/// A reason an image cannot be used. Each message names the problem and, where it
/// helps, what to do.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The file does not start with the ELF magic.
    #[error("not an ELF file (no \\x7fELF magic); build images with `septem-build build`")]
    NotElf,
    /// The file ends before a structure it declares.
    #[error("truncated image: {what} extends past the end of the file")]
    Truncated {
        /// Which structure.
        what: &'static str,
    },
    /// Larger than [`crate::MAX_IMAGE_FILE_SIZE`].
    #[error("image is {size} bytes, larger than the {max}-byte limit")]
    TooLarge {
        /// File size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Not ELFCLASS64 little-endian version 1.
    #[error("unsupported ELF format: {0} (Septem images are 64-bit little-endian ELF)")]
    BadFormat(&'static str),
    /// Not x86-64.
    #[error("wrong machine: ELF e_machine is {0}, expected 62 (x86-64)")]
    WrongMachine(u16),
    /// Not `ET_EXEC`.
    #[error("ELF type {0} is not a static executable (ET_EXEC); position-independent or relocatable files are not images")]
    NotExecutable(u16),
    /// Needs a dynamic loader.
    #[error("image is dynamically linked (has {0}); a Septem image must be fully static")]
    Dynamic(&'static str),
    /// Uses TLS.
    #[error("image uses thread-local storage (PT_TLS), which the libOS does not provide")]
    ThreadLocalStorage,
    /// A program header field is unusable.
    #[error("segment #{index}: {reason}")]
    BadSegment {
        /// Program header index.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A segment is writable and executable.
    #[error("segment #{index} at {vaddr:#x} is both writable and executable (W^X is required; use septem-build's linker script)")]
    WritableAndExecutable {
        /// Program header index.
        index: usize,
        /// Its address.
        vaddr: u64,
    },
    /// A segment lies below the image base.
    #[error("segment #{index} at {vaddr:#x} overlaps the reserved low area below {base:#x}")]
    BelowImageBase {
        /// Program header index.
        index: usize,
        /// Its address.
        vaddr: u64,
        /// The image base.
        base: u64,
    },
    /// A segment reaches past [`crate::MAX_IMAGE_END`].
    #[error("segment #{index} ends at {end:#x}, beyond the {max:#x} limit for image addresses")]
    TooHigh {
        /// Program header index.
        index: usize,
        /// Its end.
        end: u64,
        /// Limit.
        max: u64,
    },
    /// Two segments share a page.
    #[error("segments #{first} and #{second} overlap (at page granularity)")]
    Overlap {
        /// Lower one.
        first: usize,
        /// Higher one.
        second: usize,
    },
    /// No or too many `PT_LOAD` segments.
    #[error("image has {0} loadable segments; expected 1 to {max}", max = crate::MAX_SEGMENTS)]
    SegmentCount(usize),
    /// Entry point not in an executable segment.
    #[error("entry point {0:#x} is not inside an executable segment")]
    BadEntry(u64),
    /// No manifest note.
    #[error("no Septem manifest note: this ELF was not linked against septem-libos (build it with `septem-build build`)")]
    NoManifest,
    /// More than one manifest note.
    #[error("more than one Septem manifest note")]
    DuplicateManifest,
    /// A note header is malformed.
    #[error("malformed ELF note: {0}")]
    BadNote(&'static str),
    /// The manifest descriptor is invalid.
    #[error("invalid manifest")]
    BadManifest(#[source] ManifestError),
    /// The manifest was never finalized by the builder.
    #[error(
        "manifest not finalized: the image was linked but not processed by `septem-build build`"
    )]
    NotFinalized,
    /// The image speaks another ABI version.
    #[error("image was built for Septem ABI version {image}, this tool speaks version {ours}; rebuild the image with a matching septem-build")]
    AbiMismatch {
        /// The image's version.
        image: u32,
        /// Ours.
        ours: u32,
    },
}
