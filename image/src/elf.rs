//! Bounds-checked reading of raw ELF64 structures. Every accessor returns `None`
//! instead of reading past the end.

pub(crate) const PT_LOAD: u32 = 1;
pub(crate) const PT_DYNAMIC: u32 = 2;
pub(crate) const PT_INTERP: u32 = 3;
pub(crate) const PT_NOTE: u32 = 4;
pub(crate) const PT_TLS: u32 = 7;
pub(crate) const PF_X: u32 = 1;
pub(crate) const PF_W: u32 = 2;
pub(crate) const PF_R: u32 = 4;
pub(crate) const SHT_SYMTAB: u32 = 2;
pub(crate) const ET_EXEC: u16 = 2;
pub(crate) const EM_X86_64: u16 = 62;
pub(crate) const EHDR_SIZE: usize = 64;
pub(crate) const PHDR_SIZE: usize = 56;
pub(crate) const SHDR_SIZE: usize = 64;
pub(crate) const SYM_SIZE: usize = 24;

/// Little-endian field reads at checked offsets.
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl<'a> Bytes<'a> {
    pub(crate) fn slice(self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let len = usize::try_from(len).ok()?;
        self.0.get(start..start.checked_add(len)?)
    }

    fn array<const N: usize>(self, at: usize) -> Option<[u8; N]> {
        self.0.get(at..at.checked_add(N)?)?.try_into().ok()
    }

    pub(crate) fn u8(self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }

    pub(crate) fn u16(self, at: usize) -> Option<u16> {
        self.array(at).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(self, at: usize) -> Option<u32> {
        self.array(at).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(self, at: usize) -> Option<u64> {
        self.array(at).map(u64::from_le_bytes)
    }
}

/// The ELF header fields we use.
pub(crate) struct Header {
    pub(crate) e_type: u16,
    pub(crate) machine: u16,
    pub(crate) entry: u64,
    pub(crate) phoff: u64,
    pub(crate) shoff: u64,
    pub(crate) phentsize: u16,
    pub(crate) phnum: u16,
    pub(crate) shentsize: u16,
    pub(crate) shnum: u16,
}

impl Header {
    pub(crate) fn read(b: Bytes<'_>) -> Option<Header> {
        Some(Header {
            e_type: b.u16(16)?,
            machine: b.u16(18)?,
            entry: b.u64(24)?,
            phoff: b.u64(32)?,
            shoff: b.u64(40)?,
            phentsize: b.u16(54)?,
            phnum: b.u16(56)?,
            shentsize: b.u16(58)?,
            shnum: b.u16(60)?,
        })
    }
}

/// One program header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProgramHeader {
    pub(crate) p_type: u32,
    pub(crate) flags: u32,
    pub(crate) offset: u64,
    pub(crate) vaddr: u64,
    pub(crate) filesz: u64,
    pub(crate) memsz: u64,
}

impl ProgramHeader {
    pub(crate) fn read(raw: &[u8]) -> Option<ProgramHeader> {
        let b = Bytes(raw);
        Some(ProgramHeader {
            p_type: b.u32(0)?,
            flags: b.u32(4)?,
            offset: b.u64(8)?,
            vaddr: b.u64(16)?,
            filesz: b.u64(32)?,
            memsz: b.u64(40)?,
        })
    }
}

/// One section header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SectionHeader {
    pub(crate) sh_type: u32,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) link: u32,
}

impl SectionHeader {
    pub(crate) fn read(raw: &[u8]) -> Option<SectionHeader> {
        let b = Bytes(raw);
        Some(SectionHeader {
            sh_type: b.u32(4)?,
            offset: b.u64(24)?,
            size: b.u64(32)?,
            link: b.u32(40)?,
        })
    }
}

/// The `count` fixed-size entries of a table at `offset`, or `None` when it does not fit.
pub(crate) fn table(
    b: Bytes<'_>,
    offset: u64,
    entsize: u16,
    count: u16,
    min: usize,
) -> Option<Vec<&[u8]>> {
    if count == 0 {
        return Some(Vec::new());
    }
    let entsize = usize::from(entsize);
    if entsize < min {
        return None;
    }
    let total = entsize.checked_mul(usize::from(count))?;
    let raw = b.slice(offset, total as u64)?;
    Some(raw.chunks_exact(entsize).collect())
}
