//! `septem-monitor`: the Septem tender (binary `septem-run`).
//!
//! The monitor is the trusted base: it validates an image, lays out guest memory,
//! attaches exactly the declared devices, seals itself with a small seccomp policy and
//! serves the guest's hypercalls. Shared pieces (guest memory API, dispatcher, layout,
//! boot area) are backend-independent and unit-tested without KVM.

pub mod backend;
pub mod block;
pub mod boot;
pub mod cli;
pub mod dispatch;
pub mod exit_status;
pub mod fault;
pub mod fmtbuf;
pub mod gate;
pub mod host;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod net;
pub mod prepare;
pub mod seccomp;
pub mod select;
pub mod spt;
pub mod syscall_names;

/// A failure before the guest ran, with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// See [`exit_status::BAD_IMAGE`].
    #[error("{path} is not a runnable Septem image")]
    BadImage {
        /// Image path as given.
        path: String,
        /// Why.
        #[source]
        source: septem_image::ImageError,
    },
    /// The image file could not be read.
    #[error("cannot read image {path}")]
    ReadImage {
        /// Image path as given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// See [`exit_status::BAD_CONFIG`].
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// See [`exit_status::BAD_CONFIG`].
    #[error("{0}")]
    Config(String),
    /// See [`exit_status::HOST_SETUP`].
    #[error("{what}")]
    HostSetup {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// The exit status for this error.
    #[must_use]
    pub fn exit_status(&self) -> u8 {
        match self {
            RunError::BadImage { .. } | RunError::ReadImage { .. } => exit_status::BAD_IMAGE,
            RunError::Layout(_) | RunError::Config(_) => exit_status::BAD_CONFIG,
            RunError::HostSetup { .. } => exit_status::HOST_SETUP,
        }
    }
}
