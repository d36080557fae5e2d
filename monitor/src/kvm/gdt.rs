//! The GDT: flat 64-bit kernel and user segments and the TSS descriptor.
//!
//! KVM loads the segment registers from `kvm_sregs` directly, so the descriptors here
//! matter when the CPU itself reloads a segment: the kernel CS when an exception enters
//! a ring-0 stub, the TSS when it looks up RSP0/IST and the I/O permission bitmap.

/// Selector of the ring-0 64-bit code segment.
pub const KERNEL_CS: u16 = 0x08;
/// Selector of the ring-0 data segment.
pub const KERNEL_DS: u16 = 0x10;
/// Selector of the ring-3 data segment (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// Selector of the ring-3 64-bit code segment (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// Selector of the TSS (a 16-byte system descriptor).
pub const TSS_SEL: u16 = 0x28;
/// Entries (8 bytes each) in the GDT.
pub const ENTRIES: usize = 7;

/// Code segment type: execute/read, accessed.
pub const TYPE_CODE: u8 = 0xb;
/// Data segment type: read/write, accessed.
pub const TYPE_DATA: u8 = 0x3;
/// System segment type: 64-bit TSS, busy.
pub const TYPE_TSS_BUSY: u8 = 0xb;

const S: u64 = 1 << 44; // code/data (not system)
const PRESENT: u64 = 1 << 47;
const L: u64 = 1 << 53; // 64-bit code
const DB: u64 = 1 << 54; // 32-bit default size (data: big)
const G: u64 = 1 << 55; // 4 KiB limit granularity

fn dpl(level: u8) -> u64 {
    u64::from(level & 3) << 45
}

fn flat_limit() -> u64 {
    0xffff | (0xf << 48)
}

/// A flat 64-bit code descriptor at privilege `level`.
#[must_use]
pub fn code64(level: u8) -> u64 {
    flat_limit() | (u64::from(TYPE_CODE) << 40) | S | dpl(level) | PRESENT | L | G
}

/// A flat data descriptor at privilege `level`.
#[must_use]
pub fn data(level: u8) -> u64 {
    flat_limit() | (u64::from(TYPE_DATA) << 40) | S | dpl(level) | PRESENT | DB | G
}

/// The two halves of a 64-bit TSS descriptor (busy, DPL 0, byte granularity).
#[must_use]
pub fn tss(base: u64, limit: u32) -> [u64; 2] {
    let limit = u64::from(limit);
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (u64::from(TYPE_TSS_BUSY) << 40)
        | PRESENT
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// The whole GDT.
#[must_use]
pub fn build(tss_base: u64, tss_limit: u32) -> [u64; ENTRIES] {
    let [t0, t1] = tss(tss_base, tss_limit);
    [0, code64(0), data(0), data(3), code64(3), t0, t1]
}

/// The GDT as bytes.
#[must_use]
pub fn bytes(tss_base: u64, tss_limit: u32) -> Vec<u8> {
    build(tss_base, tss_limit)
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // The classic flat descriptors (e.g. Linux's GDT_ENTRY_KERNEL_CS/DS) with the
        // accessed bit set.
        assert_eq!(code64(0), 0x00af_9b00_0000_ffff);
        assert_eq!(data(0), 0x00cf_9300_0000_ffff);
        assert_eq!(code64(3), 0x00af_fb00_0000_ffff);
        assert_eq!(data(3), 0x00cf_f300_0000_ffff);
    }

    #[test]
    fn tss_descriptor_splits_base_and_limit() {
        let [lo, hi] = tss(0x1234_5678_9abc_def0, 0x2068);
        assert_eq!(lo & 0xffff, 0x2068);
        assert_eq!((lo >> 16) & 0xff_ffff, 0xbc_def0);
        assert_eq!((lo >> 56) & 0xff, 0x9a);
        assert_eq!((lo >> 40) & 0xf, 0xb, "busy 64-bit TSS");
        assert_eq!((lo >> 44) & 1, 0, "system descriptor");
        assert_eq!((lo >> 47) & 1, 1, "present");
        assert_eq!(hi, 0x1234_5678);
    }

    #[test]
    fn selectors_index_the_table() {
        let g = build(0x3000, 0x2068);
        assert_eq!(g[usize::from(KERNEL_CS >> 3)], code64(0));
        assert_eq!(g[usize::from(KERNEL_DS >> 3)], data(0));
        assert_eq!(g[usize::from(USER_DS >> 3)], data(3));
        assert_eq!(g[usize::from(USER_CS >> 3)], code64(3));
        assert_eq!(g[usize::from(TSS_SEL >> 3)], tss(0x3000, 0x2068)[0]);
        assert_eq!(bytes(0x3000, 0x2068).len(), ENTRIES * 8);
    }
}
