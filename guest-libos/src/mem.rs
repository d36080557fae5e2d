//! The C memory functions the compiler calls (`memcpy`, `memmove`, `memset`,
//! `memcmp`, `bcmp`) and the unwinding symbols precompiled `core` refers to.
//!
//! Copies and fills use `rep movsb`/`rep stosb` (fast on any CPU with ERMSB, and
//! impossible for the compiler to turn back into a call to `memcpy`, which would
//! recurse). Comparison is a word-at-a-time loop; check with `objdump -d` that none of
//! these calls itself. The logic lives in plain functions so host tests can call it;
//! the exported symbols exist only in guest builds.

use core::arch::asm;
use core::ptr::read_unaligned;

/// Copies `n` bytes forward from `src` to `dst`.
///
/// # Safety
/// `src` valid for `n` reads, `dst` for `n` writes; if they overlap, `dst <= src`.
#[inline(always)]
pub unsafe fn copy_forward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: `rep movsb` with DF clear (the ABI guarantees it at every call) copies
    // rcx bytes from [rsi] to [rdi] ascending; the caller vouches for the ranges.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Copies `n` bytes backward (last byte first) from `src` to `dst`.
///
/// # Safety
/// `src` valid for `n` reads, `dst` for `n` writes; if they overlap, `dst >= src`.
#[inline(always)]
pub unsafe fn copy_backward(dst: *mut u8, src: *const u8, n: usize) {
    if n == 0 {
        return;
    }
    // SAFETY: with DF set, `rep movsb` copies rcx bytes descending from [rsi] to [rdi],
    // starting at the last byte; DF is cleared again before returning, as the ABI
    // requires. The caller vouches for the ranges.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack)
        );
    }
}

/// `memmove`: copies `n` bytes, correct for overlapping ranges.
///
/// # Safety
/// `src` valid for `n` reads, `dst` for `n` writes.
#[inline(always)]
pub unsafe fn move_bytes(dst: *mut u8, src: *const u8, n: usize) {
    // Backward only when `dst` starts inside `[src, src + n)`.
    if (dst as usize).wrapping_sub(src as usize) < n {
        // SAFETY: forwarded; overlap with dst > src is what backward copying handles.
        unsafe { copy_backward(dst, src, n) }
    } else {
        // SAFETY: forwarded; no overlap, or dst < src.
        unsafe { copy_forward(dst, src, n) }
    }
}

/// Fills `n` bytes at `dst` with `byte`.
///
/// # Safety
/// `dst` valid for `n` writes.
#[inline(always)]
pub unsafe fn fill(dst: *mut u8, byte: u8, n: usize) {
    // SAFETY: `rep stosb` with DF clear stores al to rcx bytes ascending from [rdi].
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("al") byte,
            options(nostack, preserves_flags)
        );
    }
}

/// `memcmp`: compares `n` bytes as unsigned chars; negative, zero or positive.
///
/// # Safety
/// `a` and `b` valid for `n` reads.
#[inline(always)]
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, so both words are inside the ranges.
        let (x, y) = unsafe {
            (
                read_unaligned(a.add(i).cast::<u64>()),
                read_unaligned(b.add(i).cast::<u64>()),
            )
        };
        if x != y {
            break; // the byte loop below finds the first difference
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[cfg(not(test))]
mod exported {
    use super::*;

    /// C `memcpy`.
    ///
    /// # Safety
    /// As C's.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: C's contract: non-overlapping valid ranges.
        unsafe { copy_forward(dst, src, n) };
        dst
    }

    /// C `memmove`.
    ///
    /// # Safety
    /// As C's.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: C's contract: valid ranges.
        unsafe { move_bytes(dst, src, n) };
        dst
    }

    /// C `memset`.
    ///
    /// # Safety
    /// As C's.
    #[no_mangle]
    pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: C's contract: valid range. C converts `c` to unsigned char.
        unsafe { fill(dst, c as u8, n) };
        dst
    }

    /// C `memcmp`.
    ///
    /// # Safety
    /// As C's.
    #[no_mangle]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: C's contract: valid ranges.
        unsafe { compare(a, b, n) }
    }

    /// C `bcmp`: zero when equal.
    ///
    /// # Safety
    /// As C's.
    #[no_mangle]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: C's contract: valid ranges.
        unsafe { compare(a, b, n) }
    }

    /// Referenced by precompiled `core`'s unwind tables; a `panic = "abort"` guest
    /// never unwinds, so it is never called.
    #[no_mangle]
    pub extern "C" fn rust_eh_personality() {}

    /// Referenced by precompiled `core`'s landing pads; never reached without unwinding.
    #[no_mangle]
    pub extern "C" fn _Unwind_Resume() -> ! {
        crate::hypercall::abort_raw(b"_Unwind_Resume called: unwinding is not supported", 134)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn copy_and_fill() {
        for n in [0, 1, 7, 8, 9, 63, 64, 65, 1000] {
            let src = pattern(n);
            let mut dst = vec![0u8; n];
            // SAFETY: both buffers hold n bytes.
            unsafe { copy_forward(dst.as_mut_ptr(), src.as_ptr(), n) };
            assert_eq!(dst, src);
            // SAFETY: n bytes.
            unsafe { fill(dst.as_mut_ptr(), 0xab, n) };
            assert!(dst.iter().all(|&b| b == 0xab));
        }
    }

    #[test]
    fn memmove_overlaps_both_ways() {
        for n in [1usize, 5, 8, 17, 100] {
            for shift in [0usize, 1, 3, 8, 16] {
                // dst after src (overlapping when shift < n)
                let mut buf = pattern(n + shift);
                let mut want = buf.clone();
                want.copy_within(0..n, shift);
                // SAFETY: both ranges are inside `buf`.
                unsafe { move_bytes(buf.as_mut_ptr().add(shift), buf.as_ptr(), n) };
                assert_eq!(buf, want, "forward overlap n={n} shift={shift}");
                // dst before src
                let mut buf = pattern(n + shift);
                let mut want = buf.clone();
                want.copy_within(shift..shift + n, 0);
                // SAFETY: both ranges are inside `buf`.
                unsafe { move_bytes(buf.as_mut_ptr(), buf.as_ptr().add(shift), n) };
                assert_eq!(buf, want, "backward overlap n={n} shift={shift}");
            }
        }
    }

    #[test]
    fn direction_flag_is_clear_after_backward_copy() {
        let mut buf = pattern(32);
        // SAFETY: inside `buf`.
        unsafe { copy_backward(buf.as_mut_ptr().add(4), buf.as_ptr(), 16) };
        let flags: u64;
        // SAFETY: pushfq/pop only touch the stack slot they create.
        unsafe { asm!("pushfq", "pop {}", out(reg) flags) };
        assert_eq!(flags & (1 << 10), 0);
    }

    #[test]
    fn compare_orders_as_unsigned() {
        let cmp = |a: &[u8], b: &[u8]| {
            assert_eq!(a.len(), b.len());
            // SAFETY: same lengths.
            unsafe { compare(a.as_ptr(), b.as_ptr(), a.len()) }.signum()
        };
        assert_eq!(cmp(b"", b""), 0);
        assert_eq!(cmp(b"abcdefghijk", b"abcdefghijk"), 0);
        assert_eq!(cmp(b"abcdefghijk", b"abcdefghijz"), -1);
        assert_eq!(cmp(b"abcdefgzijk", b"abcdefghijk"), 1);
        assert_eq!(cmp(&[0x80], &[0x7f]), 1, "bytes compare as unsigned");
        let a = pattern(100);
        for i in 0..100 {
            let mut b = a.clone();
            b[i] = b[i].wrapping_add(1);
            let want = if a[i] < b[i] { -1 } else { 1 };
            assert_eq!(cmp(&a, &b), want, "difference at {i}");
        }
    }
}
