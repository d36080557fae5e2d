//! Guest page tables, as pure functions: mappings in, page-table bytes out.
//!
//! Guest-virtual = guest-physical (identity). Four-level paging with 4 KiB pages where
//! permissions change inside a 2 MiB chunk (the monitor area, the image, the guard page,
//! any region boundary) and 2 MiB pages where a whole chunk has one permission. Upper
//! levels grant everything (present, writable, user, executable) so the leaf alone
//! decides; leaves carry exactly the mapping's permissions: U/S for guest pages,
//! R/W only when writable, NX unless executable. Anything not in a mapping is not
//! present: page 0, gaps between segments, the stack guard page, memory past the end.
//! Accessed (and, on writable leaves, dirty) bits are preset so the CPU never has to
//! write them.

use septem_abi::PAGE_SIZE;

/// Present.
pub const P: u64 = 1 << 0;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User-accessible.
pub const US: u64 = 1 << 2;
/// Accessed.
pub const A: u64 = 1 << 5;
/// Dirty.
pub const D: u64 = 1 << 6;
/// Page size (a 2 MiB leaf in a page directory).
pub const PS: u64 = 1 << 7;
/// No-execute (needs EFER.NXE).
pub const NX: u64 = 1 << 63;
/// The physical-address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const ENTRIES: u64 = 512;
const CHUNK: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Largest guest memory the tables can describe with one PML4 entry.
pub const MAX_MEM: u64 = 512 * GIB;

/// A page-aligned range `[start, end)` with the permissions the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Accessible at CPL3.
    pub user: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl Mapping {
    fn same_perms(&self, other: &Mapping) -> bool {
        (self.user, self.write, self.exec) == (other.user, other.write, other.exec)
    }

    fn leaf_bits(&self) -> u64 {
        let mut bits = P | A;
        if self.user {
            bits |= US;
        }
        if self.write {
            bits |= RW | D;
        }
        if !self.exec {
            bits |= NX;
        }
        bits
    }
}

/// Why page tables cannot be built.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum PagingError {
    /// A mapping is empty, unaligned, past the memory end, or overlaps another.
    #[error("bad guest mapping {start:#x}..{end:#x}")]
    BadMapping {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// Memory larger than one PML4 entry covers.
    #[error("guest memory of {0:#x} bytes is too large for the page tables")]
    TooLarge(u64),
    /// The tables do not fit in the space given.
    #[error("guest page tables need {need:#x} bytes, only {room:#x} available")]
    NoRoom {
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        room: u64,
    },
}

/// Built page tables: `bytes` go at guest-physical `base`; CR3 = `base`.
#[derive(Clone, Debug)]
pub struct PageTables {
    /// Guest-physical address of the PML4 (and of `bytes[0]`).
    pub base: u64,
    /// The tables, page after page.
    pub bytes: Vec<u8>,
}

struct Builder {
    base: u64,
    bytes: Vec<u8>,
}

impl Builder {
    fn alloc(&mut self) -> u64 {
        let at = self.base + self.bytes.len() as u64;
        self.bytes.resize(self.bytes.len() + PAGE_SIZE as usize, 0);
        at
    }

    fn set(&mut self, table: u64, index: u64, entry: u64) {
        let off = (table - self.base + index * 8) as usize;
        self.bytes[off..off + 8].copy_from_slice(&entry.to_le_bytes());
    }
}

/// Builds identity-mapping page tables for `mem_size` bytes of guest memory showing
/// exactly `maps` (any order; page-aligned, non-overlapping, inside memory). The tables
/// occupy `[base, limit)`, which must not be inside any mapping.
pub fn build(
    mem_size: u64,
    maps: &[Mapping],
    base: u64,
    limit: u64,
) -> Result<PageTables, PagingError> {
    if mem_size > MAX_MEM {
        return Err(PagingError::TooLarge(mem_size));
    }
    let mut sorted: Vec<Mapping> = maps.to_vec();
    sorted.sort_by_key(|m| m.start);
    let aligned = |v: u64| v % PAGE_SIZE == 0;
    let mut prev_end = 0;
    for m in &sorted {
        let bad = PagingError::BadMapping {
            start: m.start,
            end: m.end,
        };
        if m.start >= m.end || !aligned(m.start) || !aligned(m.end) || m.end > mem_size {
            return Err(bad);
        }
        if m.start < prev_end || (m.start < limit && base < m.end) {
            return Err(bad);
        }
        prev_end = m.end;
    }

    let mut b = Builder {
        base,
        bytes: Vec::new(),
    };
    let pml4 = b.alloc();
    let pdpt = b.alloc();
    b.set(pml4, 0, pdpt | P | RW | US | A);
    let gibs = mem_size.div_ceil(GIB);
    let mut next = 0usize; // first mapping that may intersect the current chunk
    for g in 0..gibs {
        let pd = b.alloc();
        b.set(pdpt, g, pd | P | RW | US | A);
        for i in 0..ENTRIES {
            let cs = g * GIB + i * CHUNK;
            let ce = cs + CHUNK;
            if cs >= mem_size {
                break;
            }
            while next < sorted.len() && sorted[next].end <= cs {
                next += 1;
            }
            let inside: Vec<&Mapping> =
                sorted[next..].iter().take_while(|m| m.start < ce).collect();
            match inside.as_slice() {
                [] => {}
                [m] if m.start <= cs && m.end >= ce => b.set(pd, i, cs | PS | m.leaf_bits()),
                _ => {
                    let pt = b.alloc();
                    b.set(pd, i, pt | P | RW | US | A);
                    for m in &inside {
                        let lo = m.start.max(cs);
                        let hi = m.end.min(ce);
                        for page in (lo..hi).step_by(PAGE_SIZE as usize) {
                            b.set(pt, (page - cs) / PAGE_SIZE, page | m.leaf_bits());
                        }
                    }
                }
            }
        }
    }
    let need = b.bytes.len() as u64;
    let room = limit.saturating_sub(base);
    if need > room {
        return Err(PagingError::NoRoom { need, room });
    }
    Ok(PageTables {
        base,
        bytes: b.bytes,
    })
}

/// Merges adjacent mappings with equal permissions (fewer boundaries, more 2 MiB pages).
#[must_use]
pub fn coalesce(maps: &[Mapping]) -> Vec<Mapping> {
    let mut sorted: Vec<Mapping> = maps.to_vec();
    sorted.sort_by_key(|m| m.start);
    let mut out: Vec<Mapping> = Vec::with_capacity(sorted.len());
    for m in sorted {
        match out.last_mut() {
            Some(last) if last.end == m.start && last.same_perms(&m) => last.end = m.end,
            _ => out.push(m),
        }
    }
    out
}

/// Effective permissions of a translated address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Accessible at CPL3 (U/S set at every level).
    pub user: bool,
    /// Writable (R/W set at every level).
    pub write: bool,
    /// Executable (NX clear at every level).
    pub exec: bool,
}

/// Walks `tables` like the CPU does for `addr`; `None` when not present. For tests and
/// diagnostics.
#[must_use]
pub fn translate(tables: &PageTables, addr: u64) -> Option<(u64, Perms)> {
    let read = |table: u64, index: u64| -> Option<u64> {
        let off = usize::try_from(table.checked_sub(tables.base)? + index * 8).ok()?;
        let raw = tables.bytes.get(off..off + 8)?;
        Some(u64::from_le_bytes(raw.try_into().ok()?))
    };
    let mut perms = Perms {
        user: true,
        write: true,
        exec: true,
    };
    let mut table = tables.base;
    for (level, shift) in [(4, 39u32), (3, 30), (2, 21), (1, 12)] {
        let entry = read(table, (addr >> shift) & (ENTRIES - 1))?;
        if entry & P == 0 {
            return None;
        }
        perms.user &= entry & US != 0;
        perms.write &= entry & RW != 0;
        perms.exec &= entry & NX == 0;
        let frame = entry & ADDR_MASK;
        if level == 1 || (level == 2 && entry & PS != 0) {
            let page_mask = (1u64 << shift) - 1;
            return Some(((frame & !page_mask) | (addr & page_mask), perms));
        }
        table = frame;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn m(start: u64, end: u64, user: bool, write: bool, exec: bool) -> Mapping {
        Mapping {
            start,
            end,
            user,
            write,
            exec,
        }
    }

    /// A typical guest: monitor pages, text/rodata/data, a gap, boot+heap, guard, stack.
    fn typical(mem: u64) -> Vec<Mapping> {
        let mut v = vec![
            m(0x1000, 0x2000, false, true, false),
            m(0x8000, 0x9000, true, false, true),
            m(MIB, MIB + 0x5000, true, false, true), // text
            m(MIB + 0x5000, MIB + 0x7000, true, false, false), // rodata
            m(MIB + 0x8000, MIB + 0xa000, true, true, false), // data (after a gap)
            m(MIB + 0xa000, mem - MIB - 0x1000, true, true, false), // boot + heap
            m(mem - MIB, mem, true, true, false),    // stack
        ];
        v.reverse(); // order must not matter
        v
    }

    fn expect(maps: &[Mapping], mem: u64, t: &PageTables, addr: u64) {
        let want = maps.iter().find(|m| m.start <= addr && addr < m.end);
        let got = translate(t, addr);
        match (want, got) {
            (None, None) => {}
            (Some(w), Some((pa, p))) => {
                assert_eq!(pa, addr, "identity at {addr:#x}");
                assert_eq!(
                    (p.user, p.write, p.exec),
                    (w.user, w.write, w.exec),
                    "perms at {addr:#x}"
                );
            }
            _ => panic!("{addr:#x} (mem {mem:#x}): want {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn permissions_are_mirrored_page_by_page() {
        for mem in [8 * MIB, 64 * MIB + 0x3000, 3 * GIB + 0x5000] {
            let maps = typical(mem);
            let t = build(mem, &maps, 0x10000, MIB).unwrap();
            // Every page of the low 4 MiB and the top 4 MiB, plus every 2 MiB chunk.
            for addr in (0..4 * MIB).step_by(PAGE_SIZE as usize) {
                expect(&maps, mem, &t, addr);
            }
            for addr in (mem - 4 * MIB..mem + 8 * MIB).step_by(PAGE_SIZE as usize) {
                expect(&maps, mem, &t, addr);
            }
            for addr in (0..mem).step_by(CHUNK as usize) {
                expect(&maps, mem, &t, addr + 0x1234);
            }
        }
    }

    #[test]
    fn specific_holes_and_bits() {
        let mem = 64 * MIB;
        let maps = typical(mem);
        let t = build(mem, &maps, 0x10000, MIB).unwrap();
        assert_eq!(translate(&t, 0), None, "page 0 unmapped");
        assert_eq!(translate(&t, 0x10000), None, "page tables unmapped");
        assert_eq!(translate(&t, MIB + 0x7000), None, "gap unmapped");
        assert_eq!(translate(&t, mem - MIB - 1), None, "guard page unmapped");
        assert_eq!(translate(&t, mem), None, "nothing past the end");
        let data = translate(&t, MIB + 0x8000).unwrap().1;
        assert!(data.user && data.write && !data.exec, "data is RW+NX");
        let text = translate(&t, MIB).unwrap().1;
        assert!(text.user && !text.write && text.exec, "text is R-X");
        let gdt = translate(&t, 0x1000).unwrap().1;
        assert!(!gdt.user, "monitor pages are supervisor-only");
        // The heap's middle uses 2 MiB pages.
        let pd = t.base + 2 * PAGE_SIZE;
        let e = u64::from_le_bytes(
            t.bytes[(pd - t.base) as usize + 16..][..8]
                .try_into()
                .unwrap(),
        );
        assert!(e & PS != 0 && e & US != 0 && e & NX != 0);
    }

    #[test]
    fn rejects_bad_mappings_and_reports_size() {
        let bad = [m(0x1000, 0x1800, true, true, false)];
        assert!(build(8 * MIB, &bad, 0x10000, MIB).is_err());
        let overlap = [
            m(0x1000, 0x3000, true, true, false),
            m(0x2000, 0x4000, true, true, false),
        ];
        assert!(build(8 * MIB, &overlap, 0x10000, MIB).is_err());
        let on_tables = [m(0x10000, 0x11000, true, true, false)];
        assert!(build(8 * MIB, &on_tables, 0x10000, MIB).is_err());
        let past_end = [m(0x1000, 9 * MIB, true, true, false)];
        assert!(build(8 * MIB, &past_end, 0x10000, MIB).is_err());
        assert!(matches!(
            build(64 * GIB, &typical(64 * GIB), 0x10000, 0x20000),
            Err(PagingError::NoRoom { .. })
        ));
        // 64 GiB fits in the real space: 2 + 64 PDs + a few PTs.
        let t = build(64 * GIB, &typical(64 * GIB), 0x10000, MIB).unwrap();
        assert!(t.bytes.len() < 80 * PAGE_SIZE as usize);
    }

    #[test]
    fn coalesce_merges_equal_neighbours() {
        let v = coalesce(&[
            m(0x3000, 0x4000, true, true, false),
            m(0x1000, 0x2000, true, true, false),
            m(0x2000, 0x3000, true, true, false),
            m(0x4000, 0x5000, true, false, false),
        ]);
        assert_eq!(
            v,
            vec![
                m(0x1000, 0x4000, true, true, false),
                m(0x4000, 0x5000, true, false, false)
            ]
        );
    }
}
