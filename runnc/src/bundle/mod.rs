//! Bundles: is this a Septem unikernel bundle (docs/oci.md "What runnc will read"),
//! and if so, what `septem-run` command line does its config make ([`plan`]).

pub mod plan;

use oci_spec::runtime::Spec;
use septem_abi::DeviceKind;
use septem_image::Image;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The annotation that marks a unikernel bundle.
pub const ANN_UNIKERNEL: &str = "org.septem.unikernel";
/// The annotation naming the unikernel's path in the rootfs.
pub const ANN_BINARY: &str = "org.septem.unikernel.binary";
/// The annotation with the guest memory when no OCI memory limit is set.
pub const ANN_MEMORY: &str = "org.septem.unikernel.memory";
/// The annotation `name=/path/in/rootfs,...` attaching shipped disks.
pub const ANN_DISKS: &str = "org.septem.unikernel.disks";
/// The annotation choosing the backend.
pub const ANN_BACKEND: &str = "org.septem.runnc.backend";
/// The marker file in the rootfs.
pub const MARKER: &str = "unikernel/septem.json";
/// Largest image file runnc reads for validation.
const MAX_IMAGE: u64 = 256 << 20;

/// Errors reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// config.json cannot be read or parsed.
    #[error("cannot load {path}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A file of the bundle cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bundle is marked as a unikernel but the image is not runnable.
    #[error("{path} is not a runnable Septem image")]
    Image {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: septem_image::ImageError,
    },
    /// The bundle is marked as a unikernel but names no image.
    #[error(
        "unikernel bundle {0} names no image: set process.args[0] or the {ANN_BINARY} annotation"
    )]
    NoImage(PathBuf),
    /// The config asks for something runnc cannot do.
    #[error("{0}")]
    Invalid(String),
}

/// What the image declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Net device names, in manifest order.
    pub net: Vec<String>,
    /// Block device names, in manifest order.
    pub block: Vec<String>,
}

/// A Septem bundle, loaded.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// The parsed config.json.
    pub spec: Spec,
    /// The rootfs (absolute).
    pub rootfs: PathBuf,
    /// The image file (absolute, inside the rootfs).
    pub image_path: PathBuf,
    /// What the image declares.
    pub image: ImageInfo,
    /// The config's annotations.
    pub annotations: BTreeMap<String, String>,
    /// `rootfs/unikernel/septem.json`, when present and valid.
    pub marker: Option<Marker>,
}

/// The marker file's keys (docs/oci.md: `unikernel/septem.json`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Marker {
    /// True for a unikernel image.
    #[serde(default)]
    pub unikernel: bool,
    /// The image's path in the rootfs.
    pub binary: Option<String>,
    /// The image's default memory (`64M`).
    pub memory: Option<String>,
    /// Disks shipped in the rootfs.
    #[serde(default)]
    pub disks: Vec<MarkerDisk>,
}

/// One shipped disk of the marker file.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct MarkerDisk {
    /// The block device name.
    pub name: String,
    /// Its path in the rootfs.
    pub path: String,
}

/// Makes a path absolute against the current directory.
#[must_use]
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
    }
}

/// `path` inside `rootfs` (an absolute in-container path, or one relative to `cwd`).
#[must_use]
pub fn in_rootfs(rootfs: &Path, cwd: &str, path: &str) -> PathBuf {
    let full = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(cwd).join(path)
    };
    let rel: PathBuf = full
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    rootfs.join(rel)
}

/// `path` inside `rootfs`, checked: symbolic links resolved, the result still inside
/// the rootfs (an image's rootfs is untrusted: a link to a host file or device must
/// not become the guest's image or disk) and a regular file.
pub fn rootfs_file(rootfs: &Path, cwd: &str, path: &str) -> Result<PathBuf, Error> {
    let joined = in_rootfs(rootfs, cwd, path);
    let io = |source| Error::Io {
        path: joined.clone(),
        source,
    };
    let real = joined.canonicalize().map_err(io)?;
    let real_root = rootfs.canonicalize().map_err(|source| Error::Io {
        path: rootfs.to_path_buf(),
        source,
    })?;
    if !real.starts_with(&real_root) {
        return Err(Error::Invalid(format!(
            "{path} in the rootfs resolves to {}, outside the rootfs",
            real.display()
        )));
    }
    if !real.metadata().map_err(io)?.is_file() {
        return Err(Error::Invalid(format!(
            "{path} in the rootfs is not a regular file"
        )));
    }
    Ok(real)
}

/// Reads and validates a Septem image; returns what it declares.
pub fn read_image(path: &Path) -> Result<ImageInfo, Error> {
    use std::io::Read as _;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_IMAGE)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let image = Image::parse(&bytes)
        .and_then(|i| i.check_runnable().map(|()| i))
        .map_err(|source| Error::Image {
            path: path.to_path_buf(),
            source,
        })?;
    let mut info = ImageInfo::default();
    for d in image.manifest.devices() {
        match d.device_kind() {
            Some(DeviceKind::Net) => info.net.push(d.name_str().to_string()),
            Some(DeviceKind::Block) => info.block.push(d.name_str().to_string()),
            None => {}
        }
    }
    Ok(info)
}

/// Loads the bundle at `dir`: `Ok(None)` when it is not a Septem bundle (runc's job),
/// an error when it is one but unusable.
pub fn load(dir: &Path) -> Result<Option<Bundle>, Error> {
    let dir = absolute(dir);
    let config = dir.join("config.json");
    let spec = Spec::load(&config).map_err(|source| Error::Config {
        path: config.clone(),
        source,
    })?;
    let annotations: BTreeMap<String, String> = spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let root = spec
        .root()
        .as_ref()
        .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
    let rootfs = if root.is_absolute() {
        root
    } else {
        dir.join(root)
    };
    let (args0, cwd) = spec
        .process()
        .as_ref()
        .map_or((None, "/".to_string()), |p| {
            (
                p.args().as_ref().and_then(|a| a.first().cloned()),
                p.cwd().display().to_string(),
            )
        });
    let marker: Option<Marker> = std::fs::read(rootfs.join(MARKER))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let annotated = annotations.get(ANN_UNIKERNEL).is_some_and(|v| v == "true");
    let marked = marker.as_ref().is_some_and(|m| m.unikernel);
    let binary = annotations
        .get(ANN_BINARY)
        .cloned()
        .or_else(|| marker.as_ref().and_then(|m| m.binary.clone()))
        .or(args0.clone());
    let (image_path, image) = if annotated || marked {
        let b = binary.ok_or_else(|| Error::NoImage(dir.clone()))?;
        let path = rootfs_file(&rootfs, &cwd, &b)?;
        let info = read_image(&path)?;
        (path, info)
    } else {
        // Rule 3: args[0] ending in .septem that is a runnable image.
        match &args0 {
            Some(a) if a.ends_with(".septem") => {
                match rootfs_file(&rootfs, &cwd, a).and_then(|p| read_image(&p).map(|i| (p, i))) {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::debug!("{a} ends in .septem but is not used: {e}");
                        return Ok(None);
                    }
                }
            }
            _ => return Ok(None),
        }
    };
    Ok(Some(Bundle {
        dir,
        spec,
        rootfs,
        image_path,
        image,
        annotations,
        marker,
    }))
}
