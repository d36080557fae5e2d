//! The guest entry point and the manifest note.
//!
//! The monitor calls `_start(boot)` with RSP already set (see `abi/src/boot.rs`).
//! `_start` checks the boot information, records it, initializes the heap, runs the
//! app's `main` (named by [`crate::main!`]), flushes the console and exits with the
//! status `main` returned.

use septem_abi::BootInfo;

/// Why `_start` refused the boot information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootCheck {
    /// Usable.
    Ok,
    /// Bad magic or ABI version, but there is a hypercall pointer to abort through.
    AbortWith(&'static str),
    /// Nothing usable: no way to report.
    Halt,
}

/// Decides what `_start` does with `boot`.
#[must_use]
pub fn check_boot_info(boot: Option<&BootInfo>) -> BootCheck {
    let Some(b) = boot else {
        return BootCheck::Halt;
    };
    if b.is_valid() {
        return BootCheck::Ok;
    }
    if b.hypercall == 0 {
        return BootCheck::Halt;
    }
    if b.magic != septem_abi::BOOT_INFO_MAGIC {
        BootCheck::AbortWith("septem-libos: bad BootInfo magic")
    } else {
        BootCheck::AbortWith("septem-libos: the monitor speaks another ABI version")
    }
}

#[cfg(not(test))]
mod start {
    use super::*;
    use crate::{boot, console, heap, hypercall};
    use septem_abi::manifest::ManifestNote;

    /// The manifest note; `septem-build` fills in the devices and finalizes it.
    #[used]
    #[link_section = ".note.septem"]
    static SEPTEM_MANIFEST: ManifestNote = ManifestNote::UNFINALIZED;

    extern "Rust" {
        /// Defined by the app through `septem_libos::main!`.
        fn __septem_main() -> i32;
    }

    /// The image's entry point.
    ///
    /// # Safety
    /// Called once, by the monitor, with a pointer to a `BootInfo` (or garbage, which
    /// it checks as far as it can).
    #[no_mangle]
    pub unsafe extern "sysv64" fn _start(boot_ptr: *const BootInfo) -> ! {
        // SAFETY: the monitor passes a pointer to a BootInfo in guest memory, or null.
        let info = unsafe { boot_ptr.as_ref() };
        match check_boot_info(info) {
            BootCheck::Ok => {}
            BootCheck::Halt => hypercall::halt(),
            BootCheck::AbortWith(msg) => {
                let raw = info.map_or(0, |b| b.hypercall);
                // SAFETY: a non-null hypercall pointer is the best hope to report; if
                // it is garbage the guest faults, which the monitor reports as well.
                let f =
                    unsafe { core::mem::transmute::<usize, septem_abi::HypercallFn>(raw as usize) };
                let mut args = septem_abi::AbortArgs {
                    message: septem_abi::GuestAddr::new(msg.as_ptr() as u64),
                    len: msg.len() as u64,
                    status: crate::process::ABORT_EXIT_STATUS,
                    _pad: 0,
                };
                // SAFETY: `args` is a live AbortArgs.
                let _ = unsafe {
                    f(
                        septem_abi::Hypercall::Abort as u64,
                        core::ptr::addr_of_mut!(args).cast(),
                    )
                };
                hypercall::halt()
            }
        }
        let Some(info) = info else { hypercall::halt() };
        boot::install(info);
        let start = info.heap_start.raw() as *mut u8;
        let end = info.heap_end.raw() as *mut u8;
        // SAFETY: the monitor's contract: [heap_start, heap_end) is page-aligned guest
        // memory, readable and writable, used by nothing else.
        unsafe { heap::HEAP.init(start, end) };
        // SAFETY: `__septem_main` is a plain Rust function the app defines via `main!`.
        let status = unsafe { __septem_main() };
        console::flush();
        hypercall::exit_raw(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use septem_abi::BOOT_INFO_MAGIC;

    #[test]
    fn boot_checks() {
        assert_eq!(check_boot_info(None), BootCheck::Halt);
        let mut b = BootInfo::default();
        assert_eq!(check_boot_info(Some(&b)), BootCheck::Halt);
        b.hypercall = 0x1000;
        assert!(
            matches!(check_boot_info(Some(&b)), BootCheck::AbortWith(m) if m.contains("magic"))
        );
        b.magic = BOOT_INFO_MAGIC;
        assert!(matches!(check_boot_info(Some(&b)), BootCheck::AbortWith(m) if m.contains("ABI")));
        b.abi_version = septem_abi::ABI_VERSION;
        assert_eq!(check_boot_info(Some(&b)), BootCheck::Ok);
    }
}
