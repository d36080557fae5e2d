//! Function symbols from `.symtab`, for naming fault addresses. Optional: an image
//! without symbols (or with a malformed table) simply has none.
//!
//! Parsing keeps the raw (mangled) names: one copy of the string table plus an address
//! range and a name span per function, no per-symbol allocation. Names are demangled
//! only when displayed ([`SymbolName`]), which allocates nothing, so a sealed monitor
//! can name a fault address from a signal handler.

use crate::elf::Header;
use crate::elf::{table, Bytes, SectionHeader, SHDR_SIZE, SHT_SYMTAB, SYM_SIZE};
use std::fmt;

const STT_FUNC: u8 = 2;
/// Upper bound on symbols kept, so a hostile table cannot make us allocate without end.
const MAX_SYMBOLS: usize = 1 << 20;
/// Longest name kept.
const MAX_NAME: usize = 4096;

/// A function symbol: `[addr, addr + size)` is `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The name (displays demangled).
    pub name: SymbolName<'a>,
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A symbol's name as stored in the image. `Display` demangles Rust names (legacy and
/// v0, without the hash suffix) straight into the formatter, without allocating; other
/// names print as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolName<'a>(&'a str);

impl<'a> SymbolName<'a> {
    /// The name as stored (mangled).
    #[must_use]
    pub fn raw(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for SymbolName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", rustc_demangle::demangle(self.0))
    }
}

/// One function: its address range and where its name is in [`SymbolTable::strings`].
#[derive(Clone, Copy)]
struct Entry {
    addr: u64,
    size: u64,
    /// Offset of the name in the string table (its UTF-8 was checked at parse time).
    name_off: u32,
    /// Length of the name (at most [`MAX_NAME`]).
    name_len: u16,
}

/// The function symbols of an image, sorted by address.
#[derive(Clone, Default)]
pub(crate) struct SymbolTable {
    entries: Vec<Entry>,
    /// A copy of the image's `.strtab`.
    strings: Box<[u8]>,
}

impl fmt::Debug for SymbolTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymbolTable")
            .field("functions", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl SymbolTable {
    /// Reads the function symbols. Never fails: a bad table yields none.
    pub(crate) fn read(bytes: &[u8], header: &Header) -> SymbolTable {
        read(bytes, header).unwrap_or_default()
    }

    /// Number of function symbols.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn symbol(&self, e: &Entry) -> Symbol<'_> {
        let start = e.name_off as usize;
        let name = self
            .strings
            .get(start..start + usize::from(e.name_len))
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("");
        Symbol {
            name: SymbolName(name),
            addr: e.addr,
            size: e.size,
        }
    }

    /// The symbols, sorted by address.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = Symbol<'_>> + '_ {
        self.entries.iter().map(|e| self.symbol(e))
    }

    /// The symbol containing `addr` and the offset into it. Allocates nothing.
    pub(crate) fn lookup(&self, addr: u64) -> Option<(Symbol<'_>, u64)> {
        let idx = self
            .entries
            .partition_point(|e| e.addr <= addr)
            .checked_sub(1)?;
        let e = &self.entries[idx];
        let offset = addr - e.addr;
        (offset < e.size).then(|| (self.symbol(e), offset))
    }
}

fn read(bytes: &[u8], header: &Header) -> Option<SymbolTable> {
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
    let mut entries = Vec::new();
    for raw in syms.chunks_exact(SYM_SIZE).take(MAX_SYMBOLS) {
        let s = Bytes(raw);
        let (name_off, info, value, size) = (s.u32(0)?, s.u8(4)?, s.u64(8)?, s.u64(16)?);
        if info & 0xf != STT_FUNC || size == 0 || value == 0 {
            continue;
        }
        // `c_str` caps names below MAX_NAME (4096) bytes, so the length fits a u16.
        let Some(name_len) =
            c_str(strings, name_off as usize).and_then(|name| u16::try_from(name.len()).ok())
        else {
            continue;
        };
        entries.push(Entry {
            addr: value,
            size,
            name_off,
            name_len,
        });
    }
    if entries.is_empty() {
        return None;
    }
    entries.sort_by_key(|e| e.addr);
    Some(SymbolTable {
        entries,
        strings: strings.into(),
    })
}

fn c_str(strings: &[u8], at: usize) -> Option<&str> {
    let tail = strings.get(at..)?;
    let end = tail.iter().take(MAX_NAME).position(|&c| c == 0)?;
    std::str::from_utf8(&tail[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(names: &[u8], entries: &[(u64, u64, u32, u16)]) -> SymbolTable {
        SymbolTable {
            entries: entries
                .iter()
                .map(|&(addr, size, name_off, name_len)| Entry {
                    addr,
                    size,
                    name_off,
                    name_len,
                })
                .collect(),
            strings: names.into(),
        }
    }

    #[test]
    fn lookup_finds_the_containing_function_and_demangles_on_display() {
        let names = b"\0_ZN10test_fault4main17h0123456789abcdefE\0plain\0";
        let t = table(names, &[(0x1000, 0x10, 1, 40), (0x2000, 0x20, 42, 5)]);
        let (sym, off) = t.lookup(0x1004).unwrap();
        assert_eq!(off, 4);
        assert_eq!(sym.name.to_string(), "test_fault::main");
        assert_eq!(sym.name.raw(), "_ZN10test_fault4main17h0123456789abcdefE");
        let (sym, off) = t.lookup(0x201f).unwrap();
        assert_eq!((sym.name.to_string().as_str(), off), ("plain", 0x1f));
        assert!(t.lookup(0x1010).is_none(), "past the end of a function");
        assert!(t.lookup(0xfff).is_none(), "before the first function");
        assert!(t.lookup(0x2020).is_none());
        assert_eq!(t.iter().len(), 2);
    }
}
