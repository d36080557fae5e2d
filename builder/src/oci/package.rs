//! `septem-build package`: a `.septem` image (and disk images) as a one-layer OCI image.
//!
//! The layer holds `/unikernel/<name>.septem`, `/unikernel/septem.json` (the facts
//! below, as urunc keeps its own in the rootfs) and `/unikernel/disks/<NAME>.img`. The
//! facts (unikernel, ABI version, binary, devices, memory, disks) are on the manifest's
//! annotations *and* on the config's labels. Output is reproducible: entries sorted,
//! owner 0:0, mtime and `created` from `SOURCE_DATE_EPOCH` or the image file's mtime,
//! gzip without a timestamp, JSON with sorted keys.

use super::layout::{
    install_archive, install_dir, staging_dir, write_index, CONTAINERD_NAME, REF_NAME,
};
use super::reference::ImageTag;
use super::{
    canonical_json, rfc3339, HashingWriter, OciError, ANN_ABI, ANN_BINARY, ANN_DEVICES, ANN_DISKS,
    ANN_MEMORY, ANN_UNIKERNEL, UNIKERNEL_DIR,
};
use anyhow::{bail, Context as _};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

/// What to package.
#[derive(Clone, Debug)]
pub struct PackageOptions {
    /// The `.septem` image.
    pub image: PathBuf,
    /// `NAME:TAG`.
    pub tag: ImageTag,
    /// Disk images: (block device name, file).
    pub disks: Vec<(String, PathBuf)>,
    /// `created` and tar mtimes, seconds since the epoch (default: `SOURCE_DATE_EPOCH`,
    /// else the image file's mtime).
    pub created: Option<i64>,
}

/// Where the OCI image goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageOutput {
    /// An image layout directory.
    Dir(PathBuf),
    /// A tar archive of the layout (`oci-archive:`).
    Archive(PathBuf),
}

impl PackageOutput {
    /// The path.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            PackageOutput::Dir(p) | PackageOutput::Archive(p) => p,
        }
    }
}

/// The result.
#[derive(Clone, Debug, Serialize)]
pub struct Packaged {
    /// Where it was written.
    pub output: PathBuf,
    /// Whether `output` is a tar archive.
    pub archive: bool,
    /// The tag in the index.
    pub tag: String,
    /// The image (manifest) digest.
    pub manifest_digest: String,
    /// Manifest size.
    pub manifest_size: u64,
    /// Config digest.
    pub config_digest: String,
    /// Layer digest.
    pub layer_digest: String,
    /// Compressed layer size.
    pub layer_size: u64,
    /// Uncompressed layer size.
    pub layer_uncompressed_size: u64,
    /// The unikernel's path in the image.
    pub binary: String,
    /// The facts recorded as annotations and labels.
    pub annotations: BTreeMap<String, String>,
}

/// `/unikernel/septem.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    /// Always true.
    pub unikernel: bool,
    /// ABI version.
    pub abi: u32,
    /// Path of the unikernel.
    pub binary: String,
    /// Declared devices.
    pub devices: Vec<FactsDevice>,
    /// Default memory (`64M`), absent when the monitor decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Disk images in the layer.
    pub disks: Vec<FactsDisk>,
}

/// A declared device.
#[derive(Clone, Debug, Serialize)]
pub struct FactsDevice {
    /// Name.
    pub name: String,
    /// `net` or `block`.
    pub kind: String,
}

/// A disk image shipped in the layer.
#[derive(Clone, Debug, Serialize)]
pub struct FactsDisk {
    /// The block device it is meant for.
    pub name: String,
    /// Its path in the image.
    pub path: String,
}

/// Parses `--disk NAME=FILE`.
pub fn parse_disk(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=FILE"))?;
    if !septem_abi::manifest::is_valid_device_name(name) {
        return Err(format!(
            "{name:?} is not a valid device name ([A-Za-z0-9_-], 1 to 31)"
        ));
    }
    if file.is_empty() {
        return Err(format!("{s:?}: expected NAME=FILE"));
    }
    Ok((name.to_owned(), PathBuf::from(file)))
}

/// Packages `opts` into `out` (a staging directory next to it, moved into place at the end).
pub fn package(opts: &PackageOptions, out: &PackageOutput) -> anyhow::Result<Packaged> {
    let staged = staging_dir(out.path())?;
    let mut packaged = package_into(opts, staged.path())?;
    match out {
        PackageOutput::Dir(path) => install_dir(staged, path)?,
        PackageOutput::Archive(path) => install_archive(staged.path(), path)?,
    }
    packaged.output = out.path().to_path_buf();
    packaged.archive = matches!(out, PackageOutput::Archive(_));
    Ok(packaged)
}

/// The `created` time: `SOURCE_DATE_EPOCH`, else the file's mtime.
pub fn default_created(image: &Path) -> anyhow::Result<i64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse::<i64>()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let mtime = std::fs::metadata(image)
        .and_then(|m| m.modified())
        .with_context(|| format!("cannot read {}", image.display()))?;
    Ok(match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    })
}

/// Writes the layout (blobs, index, oci-layout) into the empty directory `dir`.
pub fn package_into(opts: &PackageOptions, dir: &Path) -> anyhow::Result<Packaged> {
    let bytes = std::fs::read(&opts.image)
        .with_context(|| format!("cannot read {}", opts.image.display()))?;
    let invalid = |source| OciError::InvalidImage {
        path: opts.image.clone(),
        source,
    };
    let image = septem_image::Image::parse(&bytes).map_err(invalid)?;
    image.check_runnable().map_err(invalid)?;
    let header = image.manifest.header;

    let stem = opts
        .image
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .unwrap_or(opts.tag.short_name())
        .to_owned();
    let binary = format!("{UNIKERNEL_DIR}/{stem}.septem");

    let devices: Vec<FactsDevice> = image
        .manifest
        .devices()
        .iter()
        .map(|d| FactsDevice {
            name: d.name_str().to_owned(),
            kind: d.device_kind().map_or("?", |k| k.name()).to_owned(),
        })
        .collect();
    let mut disks: Vec<(String, PathBuf)> = opts.disks.clone();
    disks.sort();
    for pair in disks.windows(2) {
        if pair[0].0 == pair[1].0 {
            bail!("--disk {} given twice", pair[0].0);
        }
    }
    for (name, file) in &disks {
        if !devices.iter().any(|d| d.kind == "block" && &d.name == name) {
            let declared: Vec<&str> = devices
                .iter()
                .filter(|d| d.kind == "block")
                .map(|d| d.name.as_str())
                .collect();
            bail!(
                "--disk {name}={}: {} declares no block device {name:?} (block devices: {})",
                file.display(),
                opts.image.display(),
                if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                }
            );
        }
        if !file.is_file() {
            bail!("--disk {name}={}: not a readable file", file.display());
        }
    }
    let facts = Facts {
        unikernel: true,
        abi: header.abi_version,
        binary: binary.clone(),
        devices,
        memory: (header.default_mem_mib != 0).then(|| format!("{}M", header.default_mem_mib)),
        disks: disks
            .iter()
            .map(|(name, _)| FactsDisk {
                name: name.clone(),
                path: format!("{UNIKERNEL_DIR}/disks/{name}.img"),
            })
            .collect(),
    };
    let mut annotations = BTreeMap::new();
    annotations.insert(ANN_UNIKERNEL.to_owned(), "true".to_owned());
    annotations.insert(ANN_ABI.to_owned(), facts.abi.to_string());
    annotations.insert(ANN_BINARY.to_owned(), binary.clone());
    annotations.insert(
        ANN_DEVICES.to_owned(),
        facts
            .devices
            .iter()
            .map(|d| format!("{}:{}", d.kind, d.name))
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(m) = &facts.memory {
        annotations.insert(ANN_MEMORY.to_owned(), m.clone());
    }
    if !facts.disks.is_empty() {
        annotations.insert(
            ANN_DISKS.to_owned(),
            facts
                .disks
                .iter()
                .map(|d| format!("{}={}", d.name, d.path))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let created_secs = match opts.created {
        Some(c) => c,
        None => default_created(&opts.image)?,
    };
    let created = rfc3339(created_secs);
    let mtime = u64::try_from(created_secs).unwrap_or(0);

    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;

    // The layer: tar → (diff_id) → gzip → (digest) → file.
    let mut facts_json = serde_json::to_vec_pretty(&facts)?;
    facts_json.push(b'\n');
    let mut entries: Vec<(String, LayerEntry<'_>)> = vec![
        (format!("{}/", &UNIKERNEL_DIR[1..]), LayerEntry::Dir),
        (binary[1..].to_owned(), LayerEntry::Bytes(&bytes, 0o755)),
        (
            "unikernel/septem.json".to_owned(),
            LayerEntry::Bytes(&facts_json, 0o644),
        ),
    ];
    if !disks.is_empty() {
        entries.push(("unikernel/disks/".to_owned(), LayerEntry::Dir));
        for (name, file) in &disks {
            entries.push((
                format!("unikernel/disks/{name}.img"),
                LayerEntry::File(file),
            ));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let layer_tmp = dir.join("layer.tmp");
    let file =
        File::create(&layer_tmp).with_context(|| format!("creating {}", layer_tmp.display()))?;
    let compressed = HashingWriter::new(BufWriter::new(file));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, flate2::Compression::best());
    let mut tar = tar::Builder::new(HashingWriter::new(gz));
    for (path, entry) in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        match entry {
            LayerEntry::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, path, io::empty())?;
            }
            LayerEntry::Bytes(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, *data)?;
            }
            LayerEntry::File(file) => {
                let f =
                    File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(f.metadata()?.len());
                tar.append_data(&mut h, path, f)
                    .with_context(|| format!("adding {}", file.display()))?;
            }
        }
    }
    let (gz, diff_id, uncompressed_size) = tar.into_inner()?.finish();
    let (mut file, layer_digest, layer_size) = gz.finish()?.finish();
    file.flush()?;
    drop(file);
    std::fs::rename(&layer_tmp, super::layout::blob_path(dir, &layer_digest)?)?;

    let labels: HashMap<String, String> = annotations.clone().into_iter().collect();
    let config = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .entrypoint(vec![binary.clone()])
                .working_dir("/".to_owned())
                .labels(labels)
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers".to_owned())
                .diff_ids(vec![diff_id.clone()])
                .build()?,
        )
        .history(vec![HistoryBuilder::default()
            .created(created.clone())
            .created_by(format!("septem-build package {stem}.septem"))
            .build()?])
        .build()?;
    let config_desc = write_blob(dir, MediaType::ImageConfig, &canonical_json(&config)?)?;
    let layer_desc = Descriptor::new(
        MediaType::ImageLayerGzip,
        layer_size,
        Digest::from_str(&layer_digest)?,
    );

    let mut manifest_annotations: HashMap<String, String> =
        annotations.clone().into_iter().collect();
    manifest_annotations.insert("org.opencontainers.image.created".to_owned(), created);
    manifest_annotations.insert("org.opencontainers.image.title".to_owned(), stem.clone());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc.clone())
        .layers(vec![layer_desc])
        .annotations(manifest_annotations)
        .build()?;
    let manifest_bytes = canonical_json(&manifest)?;
    let manifest_blob = write_blob(dir, MediaType::ImageManifest, &manifest_bytes)?;
    let index_entry = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .size(manifest_blob.size())
        .digest(manifest_blob.digest().clone())
        .platform(
            PlatformBuilder::default()
                .architecture(Arch::Amd64)
                .os(Os::Linux)
                .build()?,
        )
        .annotations(HashMap::from([
            (REF_NAME.to_owned(), opts.tag.tag().to_owned()),
            (CONTAINERD_NAME.to_owned(), opts.tag.full_name()),
        ]))
        .build()?;
    write_index(dir, &index_entry)?;

    Ok(Packaged {
        output: dir.to_path_buf(),
        archive: false,
        tag: opts.tag.tag().to_owned(),
        manifest_digest: manifest_blob.digest().to_string(),
        manifest_size: manifest_blob.size(),
        config_digest: config_desc.digest().to_string(),
        layer_digest,
        layer_size,
        layer_uncompressed_size: uncompressed_size,
        binary,
        annotations,
    })
}

enum LayerEntry<'a> {
    Dir,
    Bytes(&'a [u8], u32),
    File(&'a Path),
}

fn write_blob(dir: &Path, media_type: MediaType, bytes: &[u8]) -> anyhow::Result<Descriptor> {
    let digest = super::sha256_digest(bytes);
    std::fs::write(super::layout::blob_path(dir, &digest)?, bytes)?;
    Ok(Descriptor::new(
        media_type,
        bytes.len() as u64,
        Digest::from_str(&digest)?,
    ))
}
