//! The IDT: 64-bit interrupt gates to the ring-0 exception stubs.
//!
//! Gates have DPL 0, so a guest `int n` is a #GP (reported as such) rather than a way
//! into a stub. #DF, NMI and #MC run on IST1, the others on RSP0 (every exception comes
//! from CPL3, so the CPU always switches to a known-good stack).

use super::gdt::KERNEL_CS;

/// Exception vectors with a stub (0..=31).
pub const VECTORS: usize = 32;
/// Vectors the CPU pushes an error code for.
pub const ERROR_CODE_VECTORS: [u8; 8] = [8, 10, 11, 12, 13, 14, 17, 21];

const INTERRUPT_GATE: u64 = 0xe;

/// True when the CPU pushes an error code for `vector`.
#[must_use]
pub fn has_error_code(vector: u8) -> bool {
    ERROR_CODE_VECTORS.contains(&vector) || vector == 29 || vector == 30
}

/// The IST slot for `vector` (0 = none).
#[must_use]
pub fn ist_for(vector: u8) -> u8 {
    match vector {
        2 | 8 | 18 => 1, // NMI, #DF, #MC
        _ => 0,
    }
}

/// A 64-bit interrupt gate to `handler` through `selector`, DPL 0.
#[must_use]
pub fn gate(handler: u64, selector: u16, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(selector) << 16)
        | (u64::from(ist & 7) << 32)
        | (INTERRUPT_GATE << 40)
        | (1 << 47)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// The IDT as bytes: gates for vectors 0..32 to `stub(vector)`, the rest not present
/// (256 entries; a non-present gate is a #GP, itself reported).
#[must_use]
pub fn bytes(stub: impl Fn(u8) -> u64) -> Vec<u8> {
    let mut out = vec![0u8; 256 * 16];
    for v in 0..VECTORS as u8 {
        let [lo, hi] = gate(stub(v), KERNEL_CS, ist_for(v));
        let at = usize::from(v) * 16;
        out[at..at + 8].copy_from_slice(&lo.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&hi.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_encoding() {
        let [lo, hi] = gate(0x1122_3344_5566_7788, 0x08, 1);
        assert_eq!(lo & 0xffff, 0x7788);
        assert_eq!((lo >> 16) & 0xffff, 0x08);
        assert_eq!((lo >> 32) & 7, 1);
        assert_eq!((lo >> 40) & 0xf, 0xe);
        assert_eq!((lo >> 45) & 3, 0, "DPL 0");
        assert_eq!((lo >> 47) & 1, 1, "present");
        assert_eq!(lo >> 48, 0x5566);
        assert_eq!(hi, 0x1122_3344);
    }

    #[test]
    fn table_layout() {
        let t = bytes(|v| 0x6000 + u64::from(v) * 16);
        assert_eq!(t.len(), 4096);
        let lo = u64::from_le_bytes(t[14 * 16..14 * 16 + 8].try_into().unwrap());
        assert_eq!(lo & 0xffff, 0x6000 + 14 * 16);
        let df = u64::from_le_bytes(t[8 * 16..8 * 16 + 8].try_into().unwrap());
        assert_eq!((df >> 32) & 7, 1, "#DF on IST1");
        assert!(t[32 * 16..].iter().all(|&b| b == 0));
        assert!(has_error_code(14) && has_error_code(8) && !has_error_code(6));
    }
}
