//! The image store: content-addressed by manifest digest under `<state>/images`.
//!
//! ```text
//! images/
//!   index.json                  {"images": {"sha256:…": {repo_tags, repo_digests, size, …}}}
//!   sha256/<hex>/               the OCI image layout written by septem-build's pull
//!   sha256/<hex>/rootfs/        a Septem image's layers, unpacked once (rootfs.rs)
//! ```
//!
//! Pulls go through `septem_build::oci::registry::pull` (manifest, blob and diff_id
//! digests verified) into a staging directory, then are renamed to their digest. Septem
//! unikernel images and ordinary ones (sidecars, run by runc) are both stored; each
//! record says which.

mod rootfs;

pub use rootfs::copy_tree;

use crate::util;
use septem_build::oci::registry::{self, PullOptions, RegistryOptions};
use septem_build::oci::OciError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference that does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        /// What was given.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A registry error with its class.
    #[error("pulling {reference}: {source}")]
    Pull {
        /// The reference.
        reference: String,
        /// What failed.
        #[source]
        source: anyhow::Error,
    },
    /// File system trouble.
    #[error("{what}")]
    Io {
        /// What was done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// RemoveImage of an image a pinned reference names.
    #[error(
        "image {image} is pinned (by {pin:?} in septem-cri's pinned-images): it is not removed; \
         take it off pinned-images (or --pinned-image) and restart septem-cri to remove it"
    )]
    Pinned {
        /// The image id.
        image: String,
        /// The pinned reference naming it.
        pin: String,
    },
    /// The stored layout is not what pull wrote.
    #[error("stored image {digest} is damaged: {reason}")]
    Damaged {
        /// The image.
        digest: String,
        /// What is wrong.
        reason: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// One stored image.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the manifest (the image id).
    pub id: String,
    /// `registry/repo:tag` names pointing at it.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:…` names.
    pub repo_digests: Vec<String>,
    /// Bytes on disk (blobs).
    pub size: u64,
    /// A Septem unikernel image (false: an ordinary image, run through runc).
    #[serde(default = "yes")]
    pub septem: bool,
}

/// Records written before ordinary images were stored are all Septem ones.
fn yes() -> bool {
    true
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

/// What a container needs from its image.
#[derive(Clone, Debug, Default)]
pub struct ImageConfig {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// Env (`K=V`).
    pub env: Vec<String>,
    /// Labels (Septem's marks among them).
    pub labels: BTreeMap<String, String>,
    /// The gzip layers, in order.
    pub layers: Vec<PathBuf>,
    /// User (`uid[:gid]` or names; empty: root).
    pub user: String,
    /// WorkingDir (empty: `/`).
    pub working_dir: String,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    index: Mutex<Index>,
    /// References whose images are pinned (see [`Store::pin`]).
    pinned: std::sync::RwLock<Vec<String>>,
}

/// Registry credentials of a pull (CRI `AuthConfig`).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name and password (HTTP Basic, or for a token service's challenge).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A registry token, sent as `Authorization: Bearer`.
    Token(String),
    /// An identity token (OAuth2 refresh token), exchanged at the registry's token
    /// service for the pull's bearer token.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    fn flags(self) -> septem_build::oci::auth::AuthFlags {
        use septem_build::oci::auth::AuthFlags;
        match self {
            Credentials::Basic { username, password } => AuthFlags {
                username: Some(username),
                password: Some(password),
                ..AuthFlags::default()
            },
            Credentials::Token(t) => AuthFlags {
                token: Some(t),
                ..AuthFlags::default()
            },
            Credentials::IdentityToken(t) => AuthFlags {
                identity_token: Some(t),
                ..AuthFlags::default()
            },
        }
    }
}

/// A normalized reference: `registry/repo` plus tag and digest.
#[derive(Clone, Debug)]
pub struct Name {
    /// `registry/repository`.
    pub repo: String,
    /// The tag (`latest` by default).
    pub tag: Option<String>,
    /// `sha256:…` when given.
    pub digest: Option<String>,
}

impl Name {
    /// Parses with septem-build's reference grammar (Docker Hub defaults).
    pub fn parse(s: &str) -> Result<Name, Error> {
        let r =
            septem_build::oci::reference::parse_reference(s).map_err(|e| Error::BadReference {
                reference: s.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Name {
            repo: format!("{}/{}", r.registry(), r.repository()),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// `repo:tag` (when tagged).
    #[must_use]
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.repo))
    }
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        std::fs::create_dir_all(dir.join("sha256"))
            .map_err(io(format!("creating {}", dir.display())))?;
        // Staging directories of an interrupted pull are garbage.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".pull-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let index = util::read_json(&dir.join("index.json"))
            .map_err(io("reading the image index"))?
            .unwrap_or_default();
        Ok(Store {
            dir: dir.to_path_buf(),
            index: Mutex::new(index),
            pinned: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Pins the images `references` name (an id, `repo:tag` or `repo@digest`; a pinned
    /// tag follows the tag to the image it names now). Every reference must parse.
    pub fn pin(&self, references: &[String]) -> Result<(), Error> {
        for r in references {
            if !is_image_id(r) {
                Name::parse(r)?;
            }
        }
        *self
            .pinned
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = references.to_vec();
        Ok(())
    }

    /// The pinned reference that names `rec`, if any.
    #[must_use]
    pub fn pinned_by(&self, rec: &ImageRecord) -> Option<String> {
        self.pinned
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|r| names(rec, r))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, index: &Index) -> Result<(), Error> {
        util::write_json_durable(&self.dir.join("index.json"), index)
            .map_err(io("writing the image index"))
    }

    /// The layout directory of image `id`.
    #[must_use]
    pub fn layout(&self, id: &str) -> PathBuf {
        self.dir
            .join("sha256")
            .join(id.trim_start_matches("sha256:"))
    }

    /// Pulls `reference` (blocking; call from a blocking thread) and returns the record.
    pub fn pull(&self, reference: &str, auth: Option<Credentials>) -> Result<ImageRecord, Error> {
        let name = Name::parse(reference)?;
        let staging = self.dir.join(format!(
            ".pull-{}",
            util::random_id().map_err(io("random id"))?
        ));
        let opts = RegistryOptions {
            insecure: false,
            auth: auth.map(Credentials::flags).unwrap_or_default(),
            quiet: true,
        };
        let pulled = registry::pull(
            reference,
            &PullOptions {
                out: staging.clone(),
                archive: false,
                extract: None,
                accept_ordinary: true,
            },
            &opts,
        );
        let pulled = match pulled {
            Ok(p) => p,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(Error::Pull {
                    reference: reference.to_string(),
                    source,
                });
            }
        };
        let id = pulled.digest.clone();
        let septem = !pulled.binary.is_empty();
        let dest = self.layout(&id);
        if let Err(e) = std::fs::rename(&staging, &dest) {
            let _ = std::fs::remove_dir_all(&staging);
            // Already there (pulled before, or by a concurrent pull): the same content.
            if !dest.join("index.json").exists() {
                return Err(io(format!("storing {id}"))(e));
            }
        }
        let size = dir_size(&dest);
        let mut index = self.lock();
        // A tag moves: take it off any other image.
        let tag = name.repo_tag().filter(|_| name.digest.is_none());
        if let Some(tag) = &tag {
            for rec in index.images.values_mut() {
                rec.repo_tags.retain(|t| t != tag);
            }
        }
        let rec = index
            .images
            .entry(id.clone())
            .or_insert_with(|| ImageRecord {
                id: id.clone(),
                ..ImageRecord::default()
            });
        rec.size = size;
        rec.septem = septem;
        if let Some(tag) = tag {
            rec.repo_tags.push(tag);
        }
        let by_digest = format!("{}@{id}", name.repo);
        if !rec.repo_digests.contains(&by_digest) {
            rec.repo_digests.push(by_digest);
        }
        let rec = rec.clone();
        self.save(&index)?;
        drop(index);
        if rec.septem {
            // Best effort: the first container unpacks it otherwise.
            if let Err(e) = self.unpacked(&rec.id) {
                tracing::warn!(image = %rec.id, "{e}");
            }
        }
        Ok(rec)
    }

    /// Finds an image by id (`sha256:…` or its hex), `repo:tag`, or `repo@digest`.
    #[must_use]
    pub fn find(&self, image: &str) -> Option<ImageRecord> {
        let index = self.lock();
        let hex_id = format!("sha256:{image}");
        if let Some(r) = index
            .images
            .get(image)
            .or_else(|| index.images.get(&hex_id))
        {
            return Some(r.clone());
        }
        let name = Name::parse(image).ok()?;
        index
            .images
            .values()
            .find(|r| names_by_name(r, &name))
            .cloned()
    }

    /// Every image.
    #[must_use]
    pub fn list(&self) -> Vec<ImageRecord> {
        self.lock().images.values().cloned().collect()
    }

    /// Removes an image (by any of its names); false when there was none.
    pub fn remove(&self, image: &str) -> Result<bool, Error> {
        let Some(rec) = self.find(image) else {
            return Ok(false);
        };
        if let Some(pin) = self.pinned_by(&rec) {
            return Err(Error::Pinned { image: rec.id, pin });
        }
        let mut index = self.lock();
        index.images.remove(&rec.id);
        self.save(&index)?;
        drop(index);
        let dir = self.layout(&rec.id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        }
        Ok(true)
    }

    /// Bytes and inodes used by the store.
    #[must_use]
    pub fn usage(&self) -> (u64, u64) {
        usage_of(&self.dir)
    }

    /// The store's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the image config and layer paths of image `id` from its layout.
    pub fn config(&self, id: &str) -> Result<ImageConfig, Error> {
        let layout = self.layout(id);
        let damaged = |reason: String| Error::Damaged {
            digest: id.to_string(),
            reason,
        };
        let blob = |digest: &str| -> PathBuf {
            let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
            layout.join("blobs").join(alg).join(hex)
        };
        let read = |p: &Path| -> Result<serde_json::Value, Error> {
            let bytes = std::fs::read(p).map_err(io(format!("reading {}", p.display())))?;
            serde_json::from_slice(&bytes).map_err(|e| damaged(format!("{}: {e}", p.display())))
        };
        let manifest = read(&blob(id))?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| damaged("manifest has no config".into()))?;
        let config = read(&blob(config_digest))?;
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let c = &config["config"];
        let labels = c["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let layers = manifest["layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["digest"].as_str().map(&blob))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ImageConfig {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            labels,
            layers,
            user: c["User"].as_str().unwrap_or_default().to_string(),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
        })
    }
}

/// `sha256:<64 hex>` or the 64 hex digits alone.
fn is_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `image` (an id or a reference) names `rec`.
fn names(rec: &ImageRecord, image: &str) -> bool {
    if is_image_id(image) {
        return rec.id.trim_start_matches("sha256:") == image.trim_start_matches("sha256:");
    }
    Name::parse(image).is_ok_and(|n| names_by_name(rec, &n))
}

/// Whether the parsed reference `name` names `rec` (by digest, else by tag).
fn names_by_name(rec: &ImageRecord, name: &Name) -> bool {
    match &name.digest {
        Some(d) => rec.id == *d || rec.repo_digests.contains(&format!("{}@{d}", name.repo)),
        None => name.repo_tag().is_some_and(|t| rec.repo_tags.contains(&t)),
    }
}

/// Why a pull failed, as a class for the gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// Not in the registry.
    NotFound,
    /// Not a Septem image.
    NotSeptem,
    /// Bad reference.
    BadReference,
    /// Credentials refused.
    Auth,
    /// Registry unreachable.
    Unreachable,
    /// Digest mismatch.
    Integrity,
    /// A layer (digests right) that is not a readable gzip tar.
    BadLayer,
    /// Anything else.
    Other,
}

/// Classifies a pull error.
#[must_use]
pub fn classify(e: &anyhow::Error) -> PullFailure {
    match e.chain().find_map(|c| c.downcast_ref::<OciError>()) {
        Some(OciError::NotFound { .. }) => PullFailure::NotFound,
        Some(OciError::NotSeptem { .. }) => PullFailure::NotSeptem,
        Some(OciError::BadReference { .. } | OciError::InvalidImage { .. }) => {
            PullFailure::BadReference
        }
        Some(OciError::Auth { .. }) => PullFailure::Auth,
        Some(OciError::Unreachable { .. }) => PullFailure::Unreachable,
        Some(OciError::Integrity(_)) => PullFailure::Integrity,
        None => {
            // The layers are read (for their diff_ids) only after their digests were
            // verified: a truncated or corrupt stream there is the image's own.
            // (tar and flate2 report those as io::Errors of various kinds.)
            let bad_stream = e
                .chain()
                .any(|c| c.downcast_ref::<std::io::Error>().is_some());
            if bad_stream && format!("{e:#}").contains("reading the layer") {
                PullFailure::BadLayer
            } else {
                PullFailure::Other
            }
        }
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&std::fs::Metadata)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        f(&m);
        if m.is_dir() {
            walk(&e.path(), f);
        }
    }
}

/// Bytes (of files) and inodes under `dir`.
#[must_use]
pub fn usage_of(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    walk(dir, &mut |m| {
        if m.is_file() {
            bytes += m.len();
        }
        inodes += 1;
    });
    (bytes, inodes)
}

fn dir_size(dir: &Path) -> u64 {
    let mut n = 0;
    walk(dir, &mut |m| {
        if m.is_file() {
            n += m.len();
        }
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_layer_is_classified_as_such() {
        let e = anyhow::Error::new(std::io::Error::other("unexpected EOF during skip"))
            .context("reading the layer");
        assert_eq!(classify(&e), PullFailure::BadLayer);
        let e = anyhow::Error::new(std::io::Error::other("connection reset"))
            .context("downloading sha256:00");
        assert_eq!(classify(&e), PullFailure::Other);
    }

    #[test]
    fn names_are_normalized() {
        let n = Name::parse("httpd").unwrap();
        assert_eq!(
            n.repo_tag().as_deref(),
            Some("docker.io/library/httpd:latest")
        );
        let n = Name::parse("127.0.0.1:5000/septem/httpd:1").unwrap();
        assert_eq!(
            n.repo_tag().as_deref(),
            Some("127.0.0.1:5000/septem/httpd:1")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let n = Name::parse(&format!("example.com/x@{d}")).unwrap();
        assert_eq!(n.digest.as_deref(), Some(d.as_str()));
        assert!(matches!(
            Name::parse("Bad Name!"),
            Err(Error::BadReference { .. })
        ));
    }

    #[test]
    fn index_lookup_by_id_tag_and_digest_and_idempotent_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = format!("sha256:{}", "b".repeat(64));
        {
            let mut index = store.lock();
            index.images.insert(
                id.clone(),
                ImageRecord {
                    id: id.clone(),
                    repo_tags: vec!["example.com/septem/app:1".into()],
                    repo_digests: vec![format!("example.com/septem/app@{id}")],
                    size: 10,
                    septem: true,
                },
            );
            store.save(&index).unwrap();
        }
        std::fs::create_dir_all(store.layout(&id)).unwrap();
        let store = Store::open(dir.path()).unwrap();
        for name in [
            id.clone(),
            "b".repeat(64),
            "example.com/septem/app:1".into(),
            format!("example.com/septem/app@{id}"),
        ] {
            assert_eq!(store.find(&name).map(|r| r.id), Some(id.clone()), "{name}");
        }
        assert!(store.find("example.com/septem/app:2").is_none());
        assert!(store.remove("example.com/septem/app:1").unwrap());
        assert!(!store.layout(&id).exists());
        assert!(!store.remove("example.com/septem/app:1").unwrap());
        assert!(store.list().is_empty());
    }

    #[test]
    fn pinned_references_name_images_and_block_their_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = |hex: &str, tag: &str| {
            let id = format!("sha256:{}", hex.repeat(64));
            ImageRecord {
                id: id.clone(),
                repo_tags: vec![tag.into()],
                repo_digests: vec![format!("docker.io/library/busybox@{id}")],
                size: 1,
                septem: false,
            }
        };
        let (a, b) = (
            rec("a", "docker.io/library/busybox:1"),
            rec("c", "example.com/x:2"),
        );
        {
            let mut index = store.lock();
            index.images.insert(a.id.clone(), a.clone());
            index.images.insert(b.id.clone(), b.clone());
            store.save(&index).unwrap();
        }
        std::fs::create_dir_all(store.layout(&b.id)).unwrap();
        assert!(store.pinned_by(&a).is_none());
        store.pin(&["busybox:1".into()]).unwrap();
        assert_eq!(store.pinned_by(&a).as_deref(), Some("busybox:1"));
        assert!(store.pinned_by(&b).is_none());
        store
            .pin(&[b.id.trim_start_matches("sha256:").into()])
            .unwrap();
        assert!(store.pinned_by(&a).is_none(), "pins are replaced");
        assert!(store.pinned_by(&b).is_some(), "by hex id");
        store
            .pin(&[format!("docker.io/library/busybox@{}", a.id)])
            .unwrap();
        assert!(store.pinned_by(&a).is_some(), "by digest");
        match store.remove("busybox:1") {
            Err(e @ Error::Pinned { .. }) => assert!(e.to_string().contains("pinned")),
            other => panic!("{other:?}"),
        }
        assert!(store.find(&a.id).is_some(), "a pinned image stays");
        assert!(
            store.remove("example.com/x:2").unwrap(),
            "an unpinned one goes"
        );
        assert!(matches!(
            store.pin(&["Bad Name!".into()]),
            Err(Error::BadReference { .. })
        ));
    }
}
