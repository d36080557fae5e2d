//! The 64-bit TSS and its I/O permission bitmap.
//!
//! Under `kvm_pvm` (and on hardware with IOPL 0) a CPL3 `out` is allowed only when the
//! port's bit in the bitmap is clear: the bitmap opens exactly the hypercall port, so
//! the guest cannot reach the fault port or any other.

/// Size of the TSS proper.
pub const TSS_SIZE: usize = 104;
/// Bytes of bitmap for all 65536 ports.
pub const BITMAP_SIZE: usize = 8192;
/// The bitmap plus the required all-ones terminator byte.
pub const TOTAL_SIZE: usize = TSS_SIZE + BITMAP_SIZE + 1;
/// The TSS segment limit (inclusive): covers the bitmap and the terminator.
pub const LIMIT: u32 = (TOTAL_SIZE - 1) as u32;

/// Builds the TSS: `rsp0`, `ist1`, and a bitmap that opens exactly `open_ports`.
#[must_use]
pub fn bytes(rsp0: u64, ist1: u64, open_ports: &[u16]) -> Vec<u8> {
    let mut t = vec![0u8; TOTAL_SIZE];
    t[4..12].copy_from_slice(&rsp0.to_le_bytes());
    t[36..44].copy_from_slice(&ist1.to_le_bytes());
    t[102..104].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    for b in &mut t[TSS_SIZE..] {
        *b = 0xff;
    }
    for &port in open_ports {
        let p = usize::from(port);
        t[TSS_SIZE + p / 8] &= !(1 << (p % 8));
    }
    t
}

/// True when `tss` (as built by [`bytes`]) lets CPL3 use `port` (one byte wide).
#[must_use]
pub fn port_open(tss: &[u8], port: u16) -> bool {
    let base = usize::from(u16::from_le_bytes([tss[102], tss[103]]));
    let p = usize::from(port);
    tss.get(base + p / 8)
        .is_some_and(|b| b & (1 << (p % 8)) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_exactly_the_given_ports() {
        let t = bytes(0xc000, 0xd000, &[0x500]);
        assert_eq!(t.len(), TOTAL_SIZE);
        assert_eq!(u64::from_le_bytes(t[4..12].try_into().unwrap()), 0xc000);
        assert_eq!(u64::from_le_bytes(t[36..44].try_into().unwrap()), 0xd000);
        let open: Vec<u16> = (0..=u16::MAX).filter(|&p| port_open(&t, p)).collect();
        assert_eq!(open, vec![0x500]);
        assert_eq!(*t.last().unwrap(), 0xff, "terminator");
        assert_eq!(LIMIT as usize, TSS_SIZE + BITMAP_SIZE);
    }
}
