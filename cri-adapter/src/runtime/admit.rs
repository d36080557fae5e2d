//! Checks of a CreateContainer request against its pod and image, before anything is
//! written: which runtime handler may run an ordinary image, and which `devices` a
//! container can have.
//!
//! - `septem-kvm` and `septem-seccomp` name a unikernel backend: an ordinary image
//!   (run by runc) under them would silently get no hardware or seccomp isolation of
//!   the kind asked for, so it is refused. `septem` (auto) runs sidecars under runc.
//! - A unikernel's devices are its block devices: `container_path` must be
//!   `/septem/block/<name>` (runnc's convention, docs/runnc.md) and `host_path` a disk
//!   image file or a host block device node (what the kubelet gives for a
//!   `volumeMode: Block` volume), which septem-run attaches.
//! - An ordinary container's devices are device nodes passed to runc
//!   (`crate::ordinary::devices`).

use super::{Error, Pod};
use crate::images::ImageRecord;
use k8s_cri::v1 as cri;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

/// Where runnc looks for a unikernel's block devices in the bundle's mounts.
pub(crate) const BLOCK_DIR: &str = "/septem/block/";

/// Refuses what the pod's handler and the image cannot do together, and devices the
/// container cannot have.
pub(super) fn admit(
    pod: &Pod,
    config: &cri::ContainerConfig,
    image: &ImageRecord,
) -> Result<(), Error> {
    if !image.septem {
        refuse_ordinary_under_unikernel_handler(&pod.runtime_handler, &image.id)?;
    }
    if image.septem {
        for d in &config.devices {
            block_device_name(d)?;
        }
    }
    Ok(())
}

/// `septem-kvm`/`septem-seccomp` promise a unikernel backend; an ordinary image would
/// run under runc instead.
fn refuse_ordinary_under_unikernel_handler(handler: &str, image_id: &str) -> Result<(), Error> {
    match handler {
        "septem-kvm" | "septem-seccomp" => Err(Error::InvalidArgument(format!(
            "image {image_id} is an ordinary container image (no org.septem.unikernel=true \
             mark), and runtime handler {handler:?} runs only Septem unikernels on its \
             backend: an ordinary image would run under runc, without the isolation that \
             handler promises. Use runtime handler \"septem\" (RuntimeClass septem), which \
             runs unikernels on its default backend and ordinary images (sidecars) under \
             runc, or build the application as a Septem image"
        ))),
        _ => Ok(()),
    }
}

/// The guest block device name of a unikernel's device (`/septem/block/<name>`), after
/// checking its host file.
pub(crate) fn block_device_name(d: &cri::Device) -> Result<&str, Error> {
    let name = d
        .container_path
        .strip_prefix(BLOCK_DIR)
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "device {:?} (host {:?}): a unikernel container's devices are its block \
                 devices, and their container path must be {BLOCK_DIR}<name>, where <name> is \
                 a block device the image declares (in Kubernetes: volumeDevices' devicePath)",
                d.container_path, d.host_path
            ))
        })?;
    let host = Path::new(&d.host_path);
    let meta = std::fs::metadata(host).map_err(|e| {
        Error::InvalidArgument(format!(
            "block device {name}: host path {:?}: {e}",
            d.host_path
        ))
    })?;
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return Err(Error::InvalidArgument(format!(
            "block device {name}: host path {:?} is neither a regular file nor a block \
             device node: septem-run attaches disk image files and host block devices as a \
             unikernel's block devices",
            d.host_path
        )));
    }
    Ok(name)
}

/// Whether the device may be written by the guest (cgroup permissions with `w`).
pub(crate) fn writable(d: &cri::Device) -> bool {
    d.permissions.contains('w')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(container: &str, host: &Path, perms: &str) -> cri::Device {
        cri::Device {
            container_path: container.into(),
            host_path: host.display().to_string(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn unikernel_handlers_refuse_ordinary_images_and_auto_accepts_them() {
        for h in ["septem-kvm", "septem-seccomp"] {
            let e = refuse_ordinary_under_unikernel_handler(h, "sha256:ab").unwrap_err();
            let Error::InvalidArgument(m) = e else {
                panic!("{h}: {e:?}")
            };
            assert!(m.contains("ordinary") && m.contains("\"septem\""), "{m}");
        }
        for h in ["", "septem"] {
            assert!(refuse_ordinary_under_unikernel_handler(h, "sha256:ab").is_ok());
        }
    }

    #[test]
    fn block_devices_need_the_convention_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, [0u8; 512]).unwrap();
        let ok = device("/septem/block/disk", &file, "r");
        assert_eq!(block_device_name(&ok).unwrap(), "disk");
        assert!(!writable(&ok));
        assert!(writable(&device("/septem/block/disk", &file, "mrw")));
        for bad in ["/dev/xvda", "/septem/block/", "/septem/block/a/b"] {
            let Err(Error::InvalidArgument(m)) = block_device_name(&device(bad, &file, "rw"))
            else {
                panic!("{bad} accepted")
            };
            assert!(m.contains(bad) && m.contains("/septem/block/<name>"), "{m}");
        }
        let Err(Error::InvalidArgument(m)) =
            block_device_name(&device("/septem/block/d", Path::new("/dev/null"), "rw"))
        else {
            panic!("a device node accepted")
        };
        assert!(
            m.contains("neither a regular file nor a block device"),
            "{m}"
        );
        let missing = dir.path().join("none");
        assert!(block_device_name(&device("/septem/block/d", &missing, "rw")).is_err());
    }
}
