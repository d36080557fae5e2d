//! The backend seam: everything backend-independent is prepared into a [`GuestSpec`];
//! a [`Backend`] loads it, seals the monitor and runs the guest.

use crate::dispatch::DispatchConfig;
use crate::layout::Layout;
use crate::net::Devices;
use septem_image::Image;

/// A guest ready to be loaded: validated image, layout, arguments, environment,
/// attached devices.
#[derive(Debug)]
pub struct GuestSpec {
    /// The image file's bytes.
    pub image_bytes: Vec<u8>,
    /// The validated image (`check_runnable` passed).
    pub image: Image,
    /// Where everything goes.
    pub layout: Layout,
    /// argv, argv\[0\] = the image name.
    pub args: Vec<String>,
    /// Environment entries, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Dispatcher settings (`--trace`, which devices are net devices).
    pub dispatch: DispatchConfig,
    /// The attached devices (tap fds open), in manifest order.
    pub devices: Devices,
    /// `--start-fifo`: the gate to wait at once the guest is set up ([`crate::gate`]).
    pub start_fifo: Option<std::path::PathBuf>,
}

/// Which backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// A plain process sealed by seccomp.
    Seccomp,
    /// A KVM virtual machine.
    Kvm,
}

impl BackendKind {
    /// Lowercase name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Seccomp => "seccomp",
            BackendKind::Kvm => "kvm",
        }
    }
}

/// A way to run a guest.
pub trait Backend {
    /// Which one this is.
    fn kind(&self) -> BackendKind;

    /// Loads the guest, seals the monitor and runs the guest to its end. Returns the
    /// status the monitor must exit with (the guest's own, or one of
    /// [`crate::exit_status`] after printing a report). A backend may also end the
    /// process itself with that status (the seccomp backend does: after sealing, the
    /// guest owns the thread). Errors are set-up failures before the guest ran.
    fn run(self: Box<Self>, guest: GuestSpec) -> Result<u8, crate::RunError>;
}
