//! The seccomp backend ("spt", after Solo5's sandboxed process tender): the guest runs
//! in the monitor's own process, at its link address, sealed by the seccomp policy.
//!
//! Steps of [`SptBackend::run`], in the sealing order of DESIGN.md:
//! 1. map guest memory at its guest addresses, load the segments and the boot area,
//!    protect every page (W^X) — [`loader`];
//! 2. compile the filter; keep the image (symbols), layout and guest memory in
//!    [`STATE`] for the hypercall entry and the signal handlers;
//! 3. alternate signal stack, SIGSYS reporter, SIGPIPE ignored, fault reporters;
//! 4. seal; jump onto the guest's stack ([`entry::enter_guest`]). From then on the
//!    guest owns the thread: it ends the process through a hypercall or a report.

pub mod entry;
pub mod loader;
pub mod signals;

use crate::backend::{Backend, BackendKind, GuestSpec};
use crate::boot::{self, BootParams};
use crate::dispatch::DispatchConfig;
use crate::layout::Layout;
use crate::memory::GuestMemory;
use crate::seccomp::{self, SealFds};
use crate::{gate, host, RunError};
use septem_abi::HypercallFn;
use septem_image::Image;
use std::io;
use std::sync::OnceLock;

/// What the hypercall entry and the fault handlers need after sealing.
#[derive(Debug)]
pub(crate) struct SptState {
    pub(crate) mem: GuestMemory,
    pub(crate) image: &'static Image,
    pub(crate) layout: Layout,
    pub(crate) config: DispatchConfig,
    /// Console, clocks and the taps (copied for each hypercall).
    pub(crate) host: host::SysHost,
}

// SAFETY: `SptState` holds a raw pointer to guest memory (in `GuestMemory`). The
// monitor runs the guest on its one thread; the state is written once before sealing
// and only read afterwards (from the hypercall entry and signal handlers on that same
// thread), so sharing it through a `static` introduces no data race.
unsafe impl Sync for SptState {}
// SAFETY: as above; the guest mapping is process-wide and lives as long as the process.
unsafe impl Send for SptState {}

/// Set once before sealing; `OnceLock::get` is a lock-free atomic load.
pub(crate) static STATE: OnceLock<SptState> = OnceLock::new();

/// The seccomp backend.
#[derive(Debug, Default)]
pub struct SptBackend;

impl SptBackend {
    /// A seccomp backend.
    #[must_use]
    pub fn new() -> Self {
        SptBackend
    }
}

fn setup(what: &str) -> impl FnOnce(io::Error) -> RunError + '_ {
    move |source| RunError::HostSetup {
        what: what.to_string(),
        source,
    }
}

impl Backend for SptBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Seccomp
    }

    fn run(self: Box<Self>, guest: GuestSpec) -> Result<u8, RunError> {
        let GuestSpec {
            image_bytes,
            image,
            layout,
            args,
            env,
            dispatch,
            devices,
            start_fifo,
        } = guest;
        let boot_devices = devices.boot_table();
        // Type-checked against the ABI's entry signature.
        let hypercall: HypercallFn = entry::septem_spt_hypercall_entry;
        let boot = BootParams {
            args: &args,
            env: &env,
            devices: &boot_devices,
            hypercall: hypercall as usize as u64,
            backend: septem_abi::boot::backend::SECCOMP,
            monotonic_ns: host::monotonic_ns(),
            wall_ns: host::wall_ns(),
        };
        let loaded = loader::load(&image_bytes, &image, &layout, &boot)?;
        if let Some(fifo) = &start_fifo {
            gate::wait(fifo)
                .map_err(|e| setup("waiting at the start gate")(io::Error::other(e)))?;
            boot::restamp_clocks(
                &loaded.mem,
                loaded.boot_info,
                host::monotonic_ns(),
                host::wall_ns(),
            )
            .map_err(|e| setup("restamping the boot clocks")(io::Error::other(e)))?;
        }
        // Everything that allocates or frees happens before sealing.
        drop((image_bytes, args, env, boot_devices));
        let signal = host::shutdown_signal_fd()
            .map_err(setup("cannot turn SIGTERM into the guest's shutdown event"))?;
        let fds = SealFds {
            tap: devices.tap_fds(),
            block: devices.block_fds(),
            signal: Some(signal),
            ..SealFds::console_only()
        };
        let program = seccomp::compile(BackendKind::Seccomp, &fds)
            .map_err(|e| setup("cannot build the seccomp filter")(io::Error::other(e)))?;
        let sys_host = devices.sys_host().with_shutdown_signal(signal);
        // The tap and block fds must stay open for the guest's life: the process ends with
        // exit_group, so they are simply never closed.
        std::mem::forget(devices);
        let image: &'static Image = Box::leak(Box::new(image));
        let entry = image.entry;
        let stack_ptr = layout.stack_top - 8;
        let boot_info = loaded.boot_info.raw();
        STATE
            .set(SptState {
                mem: loaded.mem,
                image,
                layout,
                config: dispatch,
                host: sys_host,
            })
            .map_err(|_| setup("cannot run a second guest")(io::Error::other("already running")))?;
        seccomp::prepare_signals(BackendKind::Seccomp, Some(image))
            .map_err(setup("cannot install the signal handlers"))?;
        signals::install_fault_handlers().map_err(setup("cannot install the fault handlers"))?;
        tracing::debug!(
            entry,
            stack_ptr,
            boot_info,
            "sealing and entering the guest"
        );
        seccomp::seal(&program).map_err(setup("cannot install the seccomp filter"))?;
        // Sealed: no allocation, no tracing, no locks from here on.
        // SAFETY: guest memory is loaded and protected (`loader::load`), `entry` lies in
        // an executable segment (validated by `Image::parse`), `stack_ptr` is 8 below the
        // page-aligned stack top of the writable stack region, and the process is sealed.
        unsafe { entry::enter_guest(entry, stack_ptr, boot_info) }
    }
}
