//! The validated image.

use crate::elf::{self, Bytes, Header, ProgramHeader, PHDR_SIZE};
use crate::symbols::{Symbol, SymbolName, SymbolTable};
use crate::{note, ImageError};
use septem_abi::{Manifest, ABI_VERSION, IMAGE_BASE, PAGE_SIZE};
use std::fmt;

/// Largest image file accepted.
pub const MAX_IMAGE_FILE_SIZE: usize = 256 << 20;
/// No image segment may reach past this address (1 GiB): guest memory above it is heap
/// and stack, and the KVM backend's page tables cover images within it.
pub const MAX_IMAGE_END: u64 = 1 << 30;
/// Most `PT_LOAD` segments accepted.
pub const MAX_SEGMENTS: usize = 16;

/// Read/write/execute permissions of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Perms {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |on: bool, ch: char| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x')
        )
    }
}

/// A loadable segment: `file_size` bytes from `file_offset` go to `vaddr`, the rest of
/// `mem_size` is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest address (page-aligned).
    pub vaddr: u64,
    /// Bytes in memory.
    pub mem_size: u64,
    /// Where the initialized bytes start in the file.
    pub file_offset: u64,
    /// Initialized bytes (`<= mem_size`).
    pub file_size: u64,
    /// Permissions.
    pub perms: Perms,
}

impl Segment {
    /// One past the last byte, rounded up to a page.
    #[must_use]
    pub fn page_end(&self) -> u64 {
        // Cannot overflow: parse checked `vaddr + mem_size <= MAX_IMAGE_END`.
        (self.vaddr + self.mem_size).div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// The initialized bytes of this segment within the image file it was parsed from.
    #[must_use]
    pub fn data<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        Bytes(file)
            .slice(self.file_offset, self.file_size)
            .unwrap_or(&[])
    }
}

/// A structurally valid Septem image.
#[derive(Clone, Debug)]
pub struct Image {
    /// Entry point (inside an executable segment).
    pub entry: u64,
    /// Loadable segments, sorted by address, non-overlapping at page granularity.
    pub segments: Vec<Segment>,
    /// The manifest (valid, but maybe unfinalized or of another ABI version; see
    /// [`Image::check_runnable`]).
    pub manifest: Manifest,
    /// File offset of the manifest descriptor.
    pub manifest_offset: usize,
    /// Size of the file.
    pub file_size: usize,
    symbols: SymbolTable,
}

impl Image {
    /// Parses and validates an image. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Image, ImageError> {
        if bytes.len() > MAX_IMAGE_FILE_SIZE {
            return Err(ImageError::TooLarge {
                size: bytes.len(),
                max: MAX_IMAGE_FILE_SIZE,
            });
        }
        if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ImageError::NotElf);
        }
        let b = Bytes(bytes);
        check_ident(b)?;
        let header = Header::read(b).ok_or(ImageError::Truncated {
            what: "the ELF header",
        })?;
        if header.machine != elf::EM_X86_64 {
            return Err(ImageError::WrongMachine(header.machine));
        }
        if header.e_type != elf::ET_EXEC {
            return Err(ImageError::NotExecutable(header.e_type));
        }
        let phdrs = program_headers(b, &header)?;
        let segments = load_segments(bytes, &phdrs)?;
        check_entry(header.entry, &segments)?;
        let (manifest_offset, manifest_len) = note::find_manifest(bytes, &phdrs)?;
        let desc = bytes
            .get(manifest_offset..manifest_offset + manifest_len)
            .ok_or(ImageError::Truncated {
                what: "the manifest",
            })?;
        let manifest = Manifest::from_bytes(desc).map_err(ImageError::BadManifest)?;
        Ok(Image {
            entry: header.entry,
            segments,
            manifest,
            manifest_offset,
            file_size: bytes.len(),
            symbols: SymbolTable::read(bytes, &header),
        })
    }

    /// Checks what running needs beyond structure: finalized by the builder, same ABI.
    pub fn check_runnable(&self) -> Result<(), ImageError> {
        if self.manifest.header.abi_version != ABI_VERSION {
            return Err(ImageError::AbiMismatch {
                image: self.manifest.header.abi_version,
                ours: ABI_VERSION,
            });
        }
        if !self.manifest.is_finalized() {
            return Err(ImageError::NotFinalized);
        }
        Ok(())
    }

    /// Lowest address of the image (its first segment).
    #[must_use]
    pub fn start(&self) -> u64 {
        self.segments.first().map_or(IMAGE_BASE, |s| s.vaddr)
    }

    /// One past the image's last page.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.segments.last().map_or(IMAGE_BASE, Segment::page_end)
    }

    /// Function symbols, sorted by address (none when the image is stripped).
    pub fn symbols(&self) -> impl ExactSizeIterator<Item = Symbol<'_>> + '_ {
        self.symbols.iter()
    }

    /// Number of function symbols.
    #[must_use]
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// The function containing `addr` and the offset into it, if the image has symbols.
    /// Allocates nothing (the name demangles when displayed), so it may run sealed.
    #[must_use]
    pub fn symbolize(&self, addr: u64) -> Option<(SymbolName<'_>, u64)> {
        self.symbols.lookup(addr).map(|(s, off)| (s.name, off))
    }
}

fn check_ident(b: Bytes<'_>) -> Result<(), ImageError> {
    let class = b.u8(4).ok_or(ImageError::Truncated {
        what: "the ELF header",
    })?;
    let data = b.u8(5).ok_or(ImageError::Truncated {
        what: "the ELF header",
    })?;
    let version = b.u8(6).ok_or(ImageError::Truncated {
        what: "the ELF header",
    })?;
    if class != 2 {
        return Err(ImageError::BadFormat("not ELFCLASS64"));
    }
    if data != 1 {
        return Err(ImageError::BadFormat("not little-endian"));
    }
    if version != 1 {
        return Err(ImageError::BadFormat("unknown ELF version"));
    }
    if b.0.len() < elf::EHDR_SIZE {
        return Err(ImageError::Truncated {
            what: "the ELF header",
        });
    }
    Ok(())
}

fn program_headers(b: Bytes<'_>, header: &Header) -> Result<Vec<ProgramHeader>, ImageError> {
    let raw = elf::table(b, header.phoff, header.phentsize, header.phnum, PHDR_SIZE).ok_or(
        ImageError::Truncated {
            what: "the program header table",
        },
    )?;
    let phdrs: Vec<ProgramHeader> = raw.iter().filter_map(|r| ProgramHeader::read(r)).collect();
    for ph in &phdrs {
        match ph.p_type {
            elf::PT_INTERP => return Err(ImageError::Dynamic("PT_INTERP")),
            elf::PT_DYNAMIC => return Err(ImageError::Dynamic("PT_DYNAMIC")),
            elf::PT_TLS => return Err(ImageError::ThreadLocalStorage),
            _ => {}
        }
    }
    Ok(phdrs)
}

fn load_segments(bytes: &[u8], phdrs: &[ProgramHeader]) -> Result<Vec<Segment>, ImageError> {
    let mut segments: Vec<(usize, Segment)> = Vec::new();
    for (index, ph) in phdrs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.p_type == elf::PT_LOAD)
    {
        segments.push((index, check_segment(bytes, index, ph)?));
    }
    if segments.is_empty() || segments.len() > MAX_SEGMENTS {
        return Err(ImageError::SegmentCount(segments.len()));
    }
    segments.sort_by_key(|(_, s)| s.vaddr);
    for pair in segments.windows(2) {
        let ((first, a), (second, b)) = (pair[0], pair[1]);
        if a.page_end() > b.vaddr {
            return Err(ImageError::Overlap { first, second });
        }
    }
    Ok(segments.into_iter().map(|(_, s)| s).collect())
}

fn check_segment(bytes: &[u8], index: usize, ph: &ProgramHeader) -> Result<Segment, ImageError> {
    let bad = |reason| ImageError::BadSegment { index, reason };
    let perms = Perms {
        read: ph.flags & elf::PF_R != 0,
        write: ph.flags & elf::PF_W != 0,
        exec: ph.flags & elf::PF_X != 0,
    };
    if perms.write && perms.exec {
        return Err(ImageError::WritableAndExecutable {
            index,
            vaddr: ph.vaddr,
        });
    }
    if !(perms.read || perms.write || perms.exec) {
        return Err(bad("segment has no permissions"));
    }
    if ph.filesz > ph.memsz {
        return Err(bad("file size is larger than memory size"));
    }
    if ph.memsz == 0 {
        return Err(bad("empty loadable segment"));
    }
    if ph.vaddr < IMAGE_BASE {
        return Err(ImageError::BelowImageBase {
            index,
            vaddr: ph.vaddr,
            base: IMAGE_BASE,
        });
    }
    if ph.vaddr % PAGE_SIZE != 0 {
        return Err(bad(
            "address is not page-aligned (use septem-build's linker script)",
        ));
    }
    let end = ph
        .vaddr
        .checked_add(ph.memsz)
        .ok_or(bad("address range overflows"))?;
    if end > MAX_IMAGE_END {
        return Err(ImageError::TooHigh {
            index,
            end,
            max: MAX_IMAGE_END,
        });
    }
    if Bytes(bytes).slice(ph.offset, ph.filesz).is_none() {
        return Err(ImageError::Truncated {
            what: "a loadable segment",
        });
    }
    Ok(Segment {
        vaddr: ph.vaddr,
        mem_size: ph.memsz,
        file_offset: ph.offset,
        file_size: ph.filesz,
        perms,
    })
}

fn check_entry(entry: u64, segments: &[Segment]) -> Result<(), ImageError> {
    let inside = segments
        .iter()
        .any(|s| s.perms.exec && entry >= s.vaddr && entry < s.vaddr + s.mem_size);
    if inside {
        Ok(())
    } else {
        Err(ImageError::BadEntry(entry))
    }
}
