//! OCI image layouts on disk: open (a directory, or a tar archive of one), verify blobs,
//! recognize Septem images, write a layout directory or archive atomically.

use super::{canonical_json, HashingWriter, OciError, ANN_BINARY, ANN_UNIKERNEL, MT_INDEX};
use anyhow::{bail, Context as _};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The `oci-layout` file's content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The annotation naming a manifest in a layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the full image name on import.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An opened image layout (extracted to a temporary directory when given as an archive).
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    _extracted: Option<tempfile::TempDir>,
}

impl Layout {
    /// Opens a layout directory or a tar archive of one.
    pub fn open(path: &Path) -> anyhow::Result<Layout> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let layout = Layout {
                root: path.to_path_buf(),
                _extracted: None,
            };
            layout.check_marker()?;
            return Ok(layout);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".septem-oci-")
            .tempdir()
            .context("creating a temporary directory")?;
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        archive
            .unpack(tmp.path())
            .with_context(|| format!("{} is not a tar archive of an OCI layout", path.display()))?;
        let layout = Layout {
            root: tmp.path().to_path_buf(),
            _extracted: Some(tmp),
        };
        layout
            .check_marker()
            .with_context(|| format!("in the archive {}", path.display()))?;
        Ok(layout)
    }

    fn check_marker(&self) -> anyhow::Result<()> {
        let marker = self.root.join("oci-layout");
        let text = std::fs::read(&marker).with_context(|| {
            format!(
                "{} is not an OCI image layout (no oci-layout file)",
                self.root.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", marker.display()))?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            bail!("{}: unsupported imageLayoutVersion", marker.display());
        }
        Ok(())
    }

    /// The layout's root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file holding blob `digest` (`sha256:<64 hex>` only).
    pub fn blob_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        blob_path(&self.root, digest)
    }

    /// The index.
    pub fn index(&self) -> anyhow::Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an OCI index", path.display()))
    }

    /// The manifest descriptor tagged `tag`, or the only one when `tag` is `None` or no
    /// manifest carries a tag.
    pub fn select(&self, tag: Option<&str>) -> anyhow::Result<Descriptor> {
        let index = self.index()?;
        let manifests = index.manifests();
        let tag_of = |d: &Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME).cloned())
        };
        if let Some(tag) = tag {
            if let Some(d) = manifests.iter().find(|d| tag_of(d).as_deref() == Some(tag)) {
                return Ok(d.clone());
            }
        }
        match manifests.as_slice() {
            [only] => Ok(only.clone()),
            [] => bail!("{}: the index lists no image", self.root.display()),
            many => {
                let tags: Vec<String> = many.iter().filter_map(tag_of).collect();
                match tag {
                    Some(t) => bail!(
                        "{}: no image tagged {t:?}; tags: {}",
                        self.root.display(),
                        tags.join(", ")
                    ),
                    None => bail!(
                        "{}: several images; name one with DIR:TAG (tags: {})",
                        self.root.display(),
                        tags.join(", ")
                    ),
                }
            }
        }
    }

    /// Reads a (small) blob, checking its digest and size against `desc`.
    pub fn read_blob(&self, desc: &Descriptor) -> anyhow::Result<Vec<u8>> {
        let digest = desc.digest().to_string();
        let path = self.blob_path(&digest)?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read blob {}", path.display()))?;
        check_blob(
            &digest,
            desc.size(),
            &super::sha256_digest(&bytes),
            bytes.len() as u64,
        )?;
        Ok(bytes)
    }

    /// Checks a blob's digest and size against `desc` by streaming it.
    pub fn verify_blob(&self, desc: &Descriptor) -> anyhow::Result<()> {
        let digest = desc.digest().to_string();
        let path = self.blob_path(&digest)?;
        let mut file =
            File::open(&path).with_context(|| format!("cannot read blob {}", path.display()))?;
        let mut w = HashingWriter::new(io::sink());
        io::copy(&mut file, &mut w).with_context(|| format!("reading {}", path.display()))?;
        let (_, actual, size) = w.finish();
        check_blob(&digest, desc.size(), &actual, size)?;
        Ok(())
    }

    /// The manifest, config and (verified) blobs of the image `desc` names.
    pub fn image(&self, desc: &Descriptor) -> anyhow::Result<LayoutImage> {
        let manifest_bytes = self.read_blob(desc)?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .with_context(|| format!("manifest {} is not an OCI image manifest", desc.digest()))?;
        let config_bytes = self.read_blob(manifest.config())?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).with_context(|| {
                format!(
                    "config {} is not an OCI image config",
                    manifest.config().digest()
                )
            })?;
        for layer in manifest.layers() {
            self.verify_blob(layer)?;
        }
        Ok(LayoutImage {
            manifest_bytes,
            manifest,
            config,
        })
    }
}

/// One image read from a layout.
#[derive(Debug)]
pub struct LayoutImage {
    /// The manifest exactly as stored (its digest is the image's digest).
    pub manifest_bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The parsed config.
    pub config: ImageConfiguration,
}

/// `<root>/blobs/sha256/<hex>` for `sha256:<hex>`; other algorithms and malformed
/// digests are refused (they would also be path traversal hazards).
pub fn blob_path(root: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("unsupported digest {digest:?} (only sha256 is supported)");
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("malformed digest {digest:?}");
    }
    Ok(root.join("blobs/sha256").join(hex))
}

/// A digest/size mismatch as [`OciError::Integrity`].
pub fn check_blob(
    expected: &str,
    expected_size: u64,
    actual: &str,
    size: u64,
) -> Result<(), OciError> {
    if size != expected_size {
        return Err(OciError::Integrity(format!(
            "blob {expected}: {size} bytes, its descriptor says {expected_size}"
        )));
    }
    if actual != expected {
        return Err(OciError::Integrity(format!(
            "blob {expected}: content hashes to {actual}"
        )));
    }
    Ok(())
}

/// What makes an OCI image a Septem unikernel image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeptemMarks {
    /// Absolute path of the unikernel in the layer.
    pub binary: String,
}

/// Reads the Septem marks from the manifest's annotations or the config's labels (some
/// tools drop one or the other); refuses an image carrying neither.
pub fn septem_marks(
    what: &str,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<SeptemMarks, OciError> {
    let empty = HashMap::new();
    let annotations = manifest.annotations().as_ref().unwrap_or(&empty);
    let labels = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .unwrap_or(&empty);
    let get = |k: &str| annotations.get(k).or_else(|| labels.get(k));
    if get(ANN_UNIKERNEL).map(String::as_str) != Some("true") {
        return Err(OciError::NotSeptem {
            what: what.to_owned(),
            reason: format!(
                "it has no {ANN_UNIKERNEL}=true annotation or label (not built by septem-build package)"
            ),
        });
    }
    let Some(binary) = get(ANN_BINARY) else {
        return Err(OciError::NotSeptem {
            what: what.to_owned(),
            reason: format!("it is marked {ANN_UNIKERNEL} but names no unikernel ({ANN_BINARY})"),
        });
    };
    if manifest.layers().is_empty() {
        return Err(OciError::NotSeptem {
            what: what.to_owned(),
            reason: "it has no layer".to_owned(),
        });
    }
    Ok(SeptemMarks {
        binary: binary.clone(),
    })
}

/// What [`check_layer`] found.
#[derive(Debug)]
pub struct LayerCheck {
    /// sha256 of the uncompressed layer (its diff_id).
    pub diff_id: String,
    /// Whether the layer holds the unikernel (checked runnable).
    pub found: bool,
    /// Files extracted (relative to the extraction directory).
    pub extracted: Vec<PathBuf>,
}

/// Reads a gzip layer: computes its diff_id, checks whether `binary` is in it and, if
/// so, that it is a runnable Septem image (else [`OciError::NotSeptem`]), and, with `extract`, writes the files under `/unikernel/`
/// into that directory (`hello.septem`, `septem.json`, `disks/NAME.img`).
pub fn check_layer(
    what: &str,
    layer: &Path,
    binary: &str,
    extract: Option<&Path>,
) -> anyhow::Result<LayerCheck> {
    let file = File::open(layer).with_context(|| format!("cannot read {}", layer.display()))?;
    let gz = flate2::read::GzDecoder::new(io::BufReader::new(file));
    let mut reader = HashingReader::new(gz);
    let want = binary.trim_start_matches('/');
    let mut found = false;
    let mut extracted = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut reader);
        for entry in archive.entries().context("reading the layer")? {
            let mut entry = entry.context("reading the layer")?;
            let path = entry.path().context("reading the layer")?.into_owned();
            let path_str = path.to_string_lossy().trim_start_matches("./").to_owned();
            let is_file = entry.header().entry_type().is_file();
            if is_file && path_str == want {
                let mut bytes = Vec::new();
                entry
                    .by_ref()
                    .take(septem_image::MAX_IMAGE_FILE_SIZE as u64 + 1)
                    .read_to_end(&mut bytes)
                    .context("reading the unikernel from the layer")?;
                let image =
                    septem_image::Image::parse(&bytes).map_err(|e| OciError::NotSeptem {
                        what: what.to_owned(),
                        reason: format!("its {binary} is not a Septem image: {e}"),
                    })?;
                image.check_runnable().map_err(|e| OciError::NotSeptem {
                    what: what.to_owned(),
                    reason: format!("its {binary} is not runnable: {e}"),
                })?;
                found = true;
                if let Some(dir) = extract {
                    extracted.push(write_extracted(dir, &path_str, &mut bytes.as_slice())?);
                }
            } else if is_file {
                if let Some(dir) = extract {
                    if path_str.starts_with("unikernel/") {
                        extracted.push(write_extracted(dir, &path_str, &mut entry)?);
                    }
                }
            }
        }
    }
    io::copy(&mut reader, &mut io::sink()).context("reading the layer")?;
    Ok(LayerCheck {
        diff_id: reader.digest(),
        found,
        extracted,
    })
}

fn write_extracted(
    dir: &Path,
    path_in_layer: &str,
    data: &mut dyn Read,
) -> anyhow::Result<PathBuf> {
    let rel = Path::new(
        path_in_layer
            .strip_prefix("unikernel/")
            .unwrap_or(path_in_layer),
    );
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!("refusing to extract {path_in_layer:?} (not a plain relative path)");
    }
    let out = dir.join(rel);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    io::copy(data, &mut f).with_context(|| format!("writing {}", out.display()))?;
    if path_in_layer.ends_with(".septem") {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(rel.to_path_buf())
}

/// A reader that hashes what it reads.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest as _;
        HashingReader {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    fn digest(self) -> String {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes `oci-layout` and an `index.json` listing `manifest` into `dir`.
pub fn write_index(dir: &Path, manifest: &Descriptor) -> anyhow::Result<()> {
    std::fs::write(dir.join("oci-layout"), OCI_LAYOUT)?;
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(oci_spec::image::MediaType::ImageIndex)
        .manifests(vec![manifest.clone()])
        .build()
        .context("building the index")?;
    let mut json = canonical_json(&index)?;
    // `mediaType` is optional in an index; make sure it is there.
    debug_assert!(String::from_utf8_lossy(&json).contains(MT_INDEX));
    json.push(b'\n');
    std::fs::write(dir.join("index.json"), json)?;
    Ok(())
}

/// A directory next to `out` to build the result in before it is moved into place.
pub fn staging_dir(out: &Path) -> anyhow::Result<tempfile::TempDir> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(".septem-oci-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))
}

/// Moves the finished layout `staged` to `out`: replaces an existing layout there,
/// refuses to replace anything else.
pub fn install_dir(staged: tempfile::TempDir, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let is_empty_dir = out.is_dir() && std::fs::read_dir(out)?.next().is_none();
        if !is_empty_dir && !out.join("oci-layout").exists() {
            bail!(
                "{} exists and is not an OCI image layout; refusing to replace it",
                out.display()
            );
        }
        std::fs::remove_dir_all(out)
            .with_context(|| format!("removing the old {}", out.display()))?;
    }
    let staged = staged.keep();
    std::fs::rename(&staged, out)
        .with_context(|| format!("moving the layout to {}", out.display()))?;
    Ok(())
}

/// Writes the layout in `staged` as a tar archive at `out` (atomically, via a temporary
/// file next to it). Entries are sorted, owned by 0:0 with mtime 0, so the same layout
/// gives the same archive.
pub fn install_archive(staged: &Path, out: &Path) -> anyhow::Result<()> {
    if out.is_dir() {
        bail!(
            "{} is a directory; --archive wants a file name",
            out.display()
        );
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let tmp = tempfile::NamedTempFile::new_in(&parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    {
        let mut builder = tar::Builder::new(io::BufWriter::new(tmp.as_file()));
        append_tree(&mut builder, staged, Path::new(""))?;
        builder.into_inner()?.flush()?;
    }
    tmp.persist(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> anyhow::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = std::fs::metadata(&path)?;
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, format!("{}/", rel.display()), io::empty())?;
            append_tree(builder, root, &rel)?;
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(meta.len());
            builder.append_data(&mut header, &rel, File::open(&path)?)?;
        }
    }
    Ok(())
}
