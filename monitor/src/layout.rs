//! Guest memory layout, the same for both backends.
//!
//! ```text
//! 0 ............ IMAGE_BASE   reserved: never guest-accessible (KVM puts its page
//!                             tables, descriptor tables and trampolines here)
//! image_start .. image_end    the image's segments, each with its own permissions
//! boot_start ... boot_end     BootInfo, argv/env tables and strings (rw-)
//! heap_start ... heap_end     heap (rw-)
//! stack_guard .. +PAGE        guard page (no access)
//! stack_bottom . stack_top    stack (rw-), stack_top = end of guest memory
//! ```

use crate::memory::{Region, RegionKind};
use septem_abi::{IMAGE_BASE, PAGE_SIZE};
use septem_image::Image;

/// Guest stack size.
pub const STACK_SIZE: u64 = 1 << 20;
/// Smallest heap a guest gets.
pub const MIN_HEAP: u64 = 1 << 20;
/// Default guest memory when neither `--mem` nor the image's manifest says.
pub const DEFAULT_MEM: u64 = 64 << 20;
/// Largest guest memory accepted (also bounded by the host's memory).
pub const MAX_MEM: u64 = 64 << 30;

/// Why a layout cannot be made.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// Not enough memory for image, boot area, minimum heap and stack.
    #[error("guest memory of {given} bytes is too small: this image needs at least {need} bytes ({need_mib} MiB); raise --mem")]
    TooSmall {
        /// Requested.
        given: u64,
        /// Needed.
        need: u64,
        /// Needed, in MiB rounded up.
        need_mib: u64,
    },
    /// More than [`MAX_MEM`] or the host's memory.
    #[error(
        "guest memory of {given} bytes is too large: the limit is {max} bytes ({why}); lower --mem"
    )]
    TooLarge {
        /// Requested.
        given: u64,
        /// Limit.
        max: u64,
        /// Which limit.
        why: &'static str,
    },
}

/// Where everything goes. All bounds are page-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Total guest memory; guest addresses are `[0, mem_size)`.
    pub mem_size: u64,
    /// First image page.
    pub image_start: u64,
    /// One past the last image page.
    pub image_end: u64,
    /// Boot area start (= `image_end`).
    pub boot_start: u64,
    /// Boot area end.
    pub boot_end: u64,
    /// Heap start (= `boot_end`).
    pub heap_start: u64,
    /// Heap end (= `stack_guard`).
    pub heap_end: u64,
    /// The guard page below the stack.
    pub stack_guard: u64,
    /// Lowest stack address.
    pub stack_bottom: u64,
    /// One past the highest stack address (= `mem_size`).
    pub stack_top: u64,
}

fn page_up(v: u64) -> Option<u64> {
    Some(v.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

impl Layout {
    /// Lays out `image` in `mem_size` bytes with a boot area of `boot_bytes`.
    /// `host_limit` is the most memory the host can give (e.g. its total RAM).
    pub fn compute(
        image: &Image,
        mem_size: u64,
        boot_bytes: u64,
        host_limit: u64,
    ) -> Result<Layout, LayoutError> {
        let max = MAX_MEM.min(host_limit);
        if mem_size > max {
            let why = if max == MAX_MEM {
                "Septem's maximum"
            } else {
                "the host's total memory"
            };
            return Err(LayoutError::TooLarge {
                given: mem_size,
                max,
                why,
            });
        }
        let image_start = image.start();
        let image_end = image.end();
        let boot_end = page_up(image_end.saturating_add(boot_bytes)).unwrap_or(u64::MAX);
        let need = boot_end.saturating_add(MIN_HEAP + PAGE_SIZE + STACK_SIZE);
        let mem = mem_size & !(PAGE_SIZE - 1);
        if mem < need {
            return Err(LayoutError::TooSmall {
                given: mem_size,
                need,
                need_mib: need.div_ceil(1 << 20),
            });
        }
        let stack_bottom = mem - STACK_SIZE;
        let stack_guard = stack_bottom - PAGE_SIZE;
        debug_assert!(image_start >= IMAGE_BASE);
        Ok(Layout {
            mem_size: mem,
            image_start,
            image_end,
            boot_start: image_end,
            boot_end,
            heap_start: boot_end,
            heap_end: stack_guard,
            stack_guard,
            stack_bottom,
            stack_top: mem,
        })
    }

    /// The regions the guest may use: each image segment with its permissions (rounded
    /// out to pages), the boot area, the heap and the stack. The guard page and every
    /// gap between segments are absent.
    #[must_use]
    pub fn regions(&self, image: &Image) -> Vec<Region> {
        let mut out: Vec<Region> = image
            .segments
            .iter()
            .map(|s| Region {
                start: s.vaddr,
                end: s.page_end(),
                read: s.perms.read,
                write: s.perms.write,
                exec: s.perms.exec,
                kind: RegionKind::Image,
            })
            .collect();
        let rw = |start, end, kind| Region {
            start,
            end,
            read: true,
            write: true,
            exec: false,
            kind,
        };
        if self.boot_end > self.boot_start {
            out.push(rw(self.boot_start, self.boot_end, RegionKind::Boot));
        }
        out.push(rw(self.heap_start, self.heap_end, RegionKind::Heap));
        out.push(rw(self.stack_bottom, self.stack_top, RegionKind::Stack));
        out
    }
}

/// The host's total memory in bytes (`MemTotal` of `/proc/meminfo`, read with one
/// `sysinfo` call instead of having the kernel format all of meminfo), `u64::MAX` if
/// unknown.
#[must_use]
pub fn host_memory_limit() -> u64 {
    // SAFETY: `sysinfo` only writes the struct it is given; all-zero is a valid value.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable `struct sysinfo`.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return u64::MAX;
    }
    info.totalram
        .saturating_mul(u64::from(info.mem_unit.max(1)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_memory_limit_is_meminfo_memtotal() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        assert_eq!(super::host_memory_limit(), kib * 1024);
    }
}
