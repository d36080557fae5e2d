//! Function symbols from `.symtab`, for naming fault addresses. Optional: an image
//! without symbols (or with a malformed table) simply has none.

use crate::elf::Header;
use crate::elf::{table, Bytes, SectionHeader, SHDR_SIZE, SHT_SYMTAB, SYM_SIZE};

const STT_FUNC: u8 = 2;
/// Upper bound on symbols kept, so a hostile table cannot make us allocate without end.
const MAX_SYMBOLS: usize = 1 << 20;
/// Longest name kept.
const MAX_NAME: usize = 4096;

/// A function symbol: `[addr, addr + size)` is `name`, demangled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Demangled name (without the Rust hash suffix).
    pub name: String,
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Reads the function symbols, sorted by address. Never fails: a bad table yields none.
pub(crate) fn read_symbols(bytes: &[u8], header: &Header) -> Vec<Symbol> {
    read(bytes, header).unwrap_or_default()
}

fn read(bytes: &[u8], header: &Header) -> Option<Vec<Symbol>> {
    let b = Bytes(bytes);
    let sections = table(b, header.shoff, header.shentsize, header.shnum, SHDR_SIZE)?;
    let shdrs: Vec<SectionHeader> = sections
        .iter()
        .filter_map(|raw| SectionHeader::read(raw))
        .collect();
    let symtab = shdrs.iter().find(|s| s.sh_type == SHT_SYMTAB)?;
    let strtab = shdrs.get(usize::try_from(symtab.link).ok()?)?;
    let syms = b.slice(symtab.offset, symtab.size)?;
    let strings = b.slice(strtab.offset, strtab.size)?;
    let mut out = Vec::new();
    for raw in syms.chunks_exact(SYM_SIZE).take(MAX_SYMBOLS) {
        let s = Bytes(raw);
        let (name_off, info, value, size) = (s.u32(0)?, s.u8(4)?, s.u64(8)?, s.u64(16)?);
        if info & 0xf != STT_FUNC || size == 0 || value == 0 {
            continue;
        }
        let Some(name) = c_str(strings, name_off as usize) else {
            continue;
        };
        out.push(Symbol {
            name: format!("{:#}", rustc_demangle::demangle(name)),
            addr: value,
            size,
        });
    }
    out.sort_by_key(|s| s.addr);
    Some(out)
}

fn c_str(strings: &[u8], at: usize) -> Option<&str> {
    let tail = strings.get(at..)?;
    let end = tail.iter().take(MAX_NAME).position(|&c| c == 0)?;
    std::str::from_utf8(&tail[..end]).ok()
}

/// The symbol containing `addr` and the offset into it.
pub(crate) fn lookup(symbols: &[Symbol], addr: u64) -> Option<(&Symbol, u64)> {
    let idx = symbols.partition_point(|s| s.addr <= addr).checked_sub(1)?;
    let sym = &symbols[idx];
    let offset = addr - sym.addr;
    (offset < sym.size).then_some((sym, offset))
}
