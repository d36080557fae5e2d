//! `septem-build push` and `pull` over the OCI distribution API (oci-client), on a
//! single-threaded tokio runtime local to these commands.
//!
//! Plain HTTP is used for loopback registries (`localhost`, 127.0.0.0/8, ::1) and, with
//! `--insecure`, for any; HTTPS otherwise. Pull downloads into a staging directory next
//! to `--out`, checks every blob's size and digest, the layer's diff_id and that the
//! image is a runnable Septem unikernel, and only then moves the result into place.

use super::auth::{self, AuthFlags, AuthSource};
use super::layout::{self, check_blob, septem_marks, Layout, CONTAINERD_NAME, REF_NAME};
use super::package::{package_into, PackageOptions};
use super::reference::{is_loopback, parse_reference, ImageTag};
use super::{human_size, OciError, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_INDEX, MT_MANIFEST};
use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageConfiguration, ImageIndex, ImageManifest,
    MediaType, Os, PlatformBuilder,
};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

/// Blobs at least this large get percentage lines on stderr.
const PROGRESS_MIN: u64 = 1 << 20;
/// Size of the pieces a blob is read and streamed in (progress granularity).
const CHUNK: usize = 1 << 20;

/// Options shared by push and pull.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Allow plain HTTP to a non-loopback registry.
    pub insecure: bool,
    /// Credentials from the command line.
    pub auth: AuthFlags,
    /// No progress on stderr.
    pub quiet: bool,
}

/// What push did.
#[derive(Clone, Debug, Serialize)]
pub struct Pushed {
    /// The reference pushed to.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// What pull did.
#[derive(Clone, Debug, Serialize)]
pub struct Pulled {
    /// The reference pulled.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// The layout directory or archive written.
    pub output: PathBuf,
    /// The unikernel's path in the image (empty for an ordinary image, see
    /// [`PullOptions::accept_ordinary`]).
    pub binary: String,
    /// The extracted unikernel file, with `--extract`.
    pub extracted: Option<PathBuf>,
    /// Bytes downloaded.
    pub bytes: u64,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn client(reference: &Reference, opts: &RegistryOptions) -> Client {
    // reqwest is built without a default rustls provider: install ring's (once).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = reference.resolve_registry().to_owned();
    let protocol = if opts.insecure || is_loopback(&registry) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(120)),
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        user_agent: concat!("septem-build/", env!("CARGO_PKG_VERSION")),
        // One POST + one streamed PUT per blob (not POST, PATCH per 4 MiB, PUT).
        use_monolithic_push: true,
        ..ClientConfig::default()
    })
}

/// Turns oci-client's errors into [`OciError`]s where one fits (unreachable, auth, not
/// found, digest), else keeps them with a context line.
fn classify(
    e: OciDistributionError,
    reference: &Reference,
    auth: &AuthSource,
    doing: &str,
) -> anyhow::Error {
    let registry = reference.registry().to_owned();
    let auth_hint = |detail: String| {
        let hint = match auth {
            AuthSource::Anonymous => {
                "; give --username/--password(-stdin) or add the registry to ~/.docker/config.json"
            }
            _ => "",
        };
        OciError::Auth {
            registry: registry.clone(),
            detail: format!("{detail} (used {auth}){hint}"),
        }
        .into()
    };
    let not_found = |detail: String| -> anyhow::Error {
        OciError::NotFound {
            reference: reference.whole(),
            detail,
        }
        .into()
    };
    match e {
        OciDistributionError::RequestError(re) => {
            if re.is_connect() || re.is_timeout() {
                let mut detail = re.to_string();
                let mut src = std::error::Error::source(&re);
                while let Some(s) = src {
                    detail = format!("{detail}: {s}");
                    src = s.source();
                }
                if !is_loopback(&registry) {
                    detail.push_str(" (HTTPS; use --insecure for a plain-HTTP registry)");
                }
                return OciError::Unreachable { registry, detail }.into();
            }
            match re.status().map(|s| s.as_u16()) {
                Some(401 | 403) => auth_hint(re.to_string()),
                Some(404) => not_found(re.to_string()),
                _ => anyhow::Error::new(re).context(format!("{doing} {reference}")),
            }
        }
        OciDistributionError::UnauthorizedError { url } => {
            auth_hint(format!("401 Unauthorized at {url}"))
        }
        OciDistributionError::AuthenticationFailure(m) => auth_hint(m),
        OciDistributionError::ImageManifestNotFoundError(m) => not_found(m),
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                auth_hint(format!("{envelope} at {url}"))
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found(envelope.to_string())
            } else {
                anyhow::anyhow!("{envelope} at {url}").context(format!("{doing} {reference}"))
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403,
            url,
            message,
        } => auth_hint(format!("{message} at {url}")),
        OciDistributionError::ServerError {
            code: 404, message, ..
        } => not_found(message),
        OciDistributionError::DigestError(d) => OciError::Integrity(d.to_string()).into(),
        other => anyhow::Error::new(other).context(format!("{doing} {reference}")),
    }
}

/// The credentials to send: an identity token becomes the bearer token its exchange
/// at the registry's token service yields; others are sent as they are.
async fn bearer_for(
    reference: &Reference,
    auth: &RegistryAuth,
    auth_source: &AuthSource,
    operation: RegistryOperation,
    opts: &RegistryOptions,
) -> anyhow::Result<RegistryAuth> {
    match (auth_source, auth) {
        (AuthSource::IdentityToken, RegistryAuth::Bearer(identity)) => Ok(RegistryAuth::Bearer(
            super::token::exchange(reference, identity, operation, opts.insecure).await?,
        )),
        _ => Ok(auth.clone()),
    }
}

/// One line on stderr per blob, with percentages for large blobs.
struct Progress<'a> {
    verb: &'a str,
    label: String,
    total: u64,
    done: u64,
    next_pct: u64,
    quiet: bool,
}

impl<'a> Progress<'a> {
    fn new(verb: &'a str, what: &str, digest: &str, total: u64, quiet: bool) -> Self {
        let short = digest.get(..19).unwrap_or(digest);
        let p = Progress {
            verb,
            label: format!("{what} {short}"),
            total,
            done: 0,
            next_pct: 10,
            quiet,
        };
        if !quiet {
            eprintln!("{verb} {} ({})", p.label, human_size(total));
        }
        p
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if self.quiet || self.total < PROGRESS_MIN {
            return;
        }
        let pct = self.done.saturating_mul(100) / self.total.max(1);
        if pct >= self.next_pct && self.done < self.total {
            eprintln!(
                "  {} {}: {pct}% ({} of {})",
                self.verb,
                self.label,
                human_size(self.done),
                human_size(self.total)
            );
            self.next_pct = (pct / 10 + 1) * 10;
        }
    }
}

/// The layout to push and the image in it.
struct Source {
    layout: Layout,
    _staged: Option<tempfile::TempDir>,
}

fn open_source(source: &Path, target: &Reference) -> anyhow::Result<(Source, Option<String>)> {
    // `DIR:TAG` selects a tag in a layout with several.
    let (path, tag) = match source.to_str().and_then(|s| s.rsplit_once(':')) {
        Some((p, t)) if !source.exists() && Path::new(p).exists() => {
            (PathBuf::from(p), Some(t.to_owned()))
        }
        _ => (source.to_path_buf(), None),
    };
    let mut magic = [0u8; 4];
    let is_elf = path.is_file()
        && File::open(&path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"\x7fELF";
    if is_elf {
        let tag_text = format!(
            "{}:{}",
            target.repository(),
            target.tag().unwrap_or("latest")
        );
        let tag = ImageTag::parse(&tag_text)?;
        let staged = tempfile::Builder::new()
            .prefix(".septem-oci-")
            .tempdir()
            .context("creating a temporary directory")?;
        let opts = PackageOptions {
            image: path.clone(),
            tag: tag.clone(),
            disks: Vec::new(),
            created: None,
        };
        package_into(&opts, staged.path())?;
        let layout = Layout::open(staged.path())?;
        return Ok((
            Source {
                layout,
                _staged: Some(staged),
            },
            Some(tag.tag().to_owned()),
        ));
    }
    let layout = Layout::open(&path)?;
    Ok((
        Source {
            layout,
            _staged: None,
        },
        tag,
    ))
}

/// Pushes `source` (layout directory, `DIR:TAG`, archive, or `.septem` image packaged on
/// the fly) to `target` (`REGISTRY/REPO:TAG`).
pub fn push(source: &Path, target: &str, opts: &RegistryOptions) -> anyhow::Result<Pushed> {
    let reference = parse_reference(target)?;
    if reference.tag().is_none() {
        return Err(OciError::BadReference {
            reference: target.to_owned(),
            reason: "push needs a tag (REGISTRY/REPO:TAG)".to_owned(),
        }
        .into());
    }
    let (src, tag) = open_source(source, &reference)?;
    let desc = src.layout.select(tag.as_deref().or(reference.tag()))?;
    let what = format!("{}", source.display());
    let image = src.layout.image(&desc)?;
    septem_marks(&what, &image.manifest, &image.config)?;
    let (auth, auth_source) = auth::resolve(reference.resolve_registry(), &opts.auth)?;
    let rt = runtime()?;
    rt.block_on(push_async(
        &src.layout,
        &image,
        &desc,
        &reference,
        &auth,
        &auth_source,
        opts,
    ))
}

async fn push_async(
    layout: &Layout,
    image: &layout::LayoutImage,
    desc: &Descriptor,
    reference: &Reference,
    auth: &RegistryAuth,
    auth_source: &AuthSource,
    opts: &RegistryOptions,
) -> anyhow::Result<Pushed> {
    let client = client(reference, opts);
    let err = |e| classify(e, reference, auth_source, "pushing to");
    let auth = &bearer_for(reference, auth, auth_source, RegistryOperation::Push, opts).await?;
    client
        .auth(reference, auth, RegistryOperation::Push)
        .await
        .map_err(err)?;
    let mut pushed = Pushed {
        reference: reference.whole(),
        digest: desc.digest().to_string(),
        uploaded: 0,
        skipped: 0,
        bytes: 0,
    };
    let mut blobs: Vec<(&str, &Descriptor)> = image
        .manifest
        .layers()
        .iter()
        .map(|l| ("layer", l))
        .collect();
    blobs.push(("config", image.manifest.config()));
    for (what, blob) in blobs {
        let digest = blob.digest().to_string();
        if client.blob_exists(reference, &digest).await.map_err(err)? {
            if !opts.quiet {
                eprintln!(
                    "exists {what} {} ({})",
                    digest.get(..19).unwrap_or(&digest),
                    human_size(blob.size())
                );
            }
            pushed.skipped += 1;
            continue;
        }
        let path = layout.blob_path(&digest)?;
        let file = File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let progress = Progress::new("pushing", what, &digest, blob.size(), opts.quiet);
        let stream =
            futures_util::stream::unfold((file, progress), |(mut file, mut progress)| async move {
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf) {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        progress.advance(n as u64);
                        Some((Ok(bytes::Bytes::from(buf)), (file, progress)))
                    }
                    Err(e) => Some((Err(OciDistributionError::IoError(e)), (file, progress))),
                }
            });
        client
            .push_blob_stream(reference, stream, &digest, Some(blob.size()))
            .await
            .map_err(err)?;
        pushed.uploaded += 1;
        pushed.bytes += blob.size();
    }
    let media_type = image
        .manifest
        .media_type()
        .as_ref()
        .map_or(super::MT_MANIFEST.to_owned(), ToString::to_string);
    client
        .push_manifest_raw(
            reference,
            image.manifest_bytes.clone(),
            media_type.parse().context("manifest media type")?,
        )
        .await
        .map_err(err)?;
    Ok(pushed)
}

/// Where pull writes.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Layout directory, or archive file with `archive`.
    pub out: PathBuf,
    /// Write a tar archive instead of a directory.
    pub archive: bool,
    /// Also unpack the unikernel files here.
    pub extract: Option<PathBuf>,
    /// Also accept an ordinary (non-Septem) image: one without the
    /// `org.septem.unikernel=true` mark is then stored after the same digest, size and
    /// diff_id checks, with an empty [`Pulled::binary`] (for septem-cri's sidecars). An
    /// image that carries the mark is still checked as a Septem image.
    pub accept_ordinary: bool,
}

/// Pulls `reference` into `pull.out` after verifying everything.
pub fn pull(reference: &str, pull: &PullOptions, opts: &RegistryOptions) -> anyhow::Result<Pulled> {
    let parsed = parse_reference(reference)?;
    let (auth, auth_source) = auth::resolve(parsed.resolve_registry(), &opts.auth)?;
    if pull.archive && pull.out.is_dir() {
        bail!(
            "{} is a directory; with --archive, --out names the archive file",
            pull.out.display()
        );
    }
    let rt = runtime()?;
    rt.block_on(pull_async(&parsed, &auth, &auth_source, pull, opts))
}

async fn pull_async(
    reference: &Reference,
    auth: &RegistryAuth,
    auth_source: &AuthSource,
    pull: &PullOptions,
    opts: &RegistryOptions,
) -> anyhow::Result<Pulled> {
    let client = client(reference, opts);
    let err = |e| classify(e, reference, auth_source, "pulling");
    let auth = &bearer_for(reference, auth, auth_source, RegistryOperation::Pull, opts).await?;
    client
        .auth(reference, auth, RegistryOperation::Pull)
        .await
        .map_err(err)?;
    let accept = [MT_MANIFEST, MT_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST];
    let (mut body, mut digest) = client
        .pull_manifest_raw(reference, auth, &accept)
        .await
        .map_err(err)?;
    check_blob(
        &digest,
        body.len() as u64,
        &super::sha256_digest(&body),
        body.len() as u64,
    )?;
    let mut by_digest = reference.clone();
    let kind: serde_json::Value =
        serde_json::from_slice(&body).context("the manifest is not JSON")?;
    let media_type = kind
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or(MT_MANIFEST)
        .to_owned();
    if media_type == MT_INDEX || media_type == MT_DOCKER_LIST {
        let index: ImageIndex =
            serde_json::from_slice(&body).context("the image index does not parse")?;
        let entry = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform()
                    .as_ref()
                    .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
            })
            .ok_or_else(|| OciError::NotSeptem {
                what: reference.whole(),
                reason: "its index has no linux/amd64 image".to_owned(),
            })?;
        by_digest = Reference::with_digest(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            entry.digest().to_string(),
        );
        (body, digest) = client
            .pull_manifest_raw(&by_digest, auth, &accept)
            .await
            .map_err(err)?;
        check_blob(
            entry.digest().as_ref(),
            entry.size(),
            &super::sha256_digest(&body),
            body.len() as u64,
        )?;
    }
    let manifest: ImageManifest = serde_json::from_slice(&body)
        .with_context(|| format!("{reference}: the manifest does not parse"))?;

    // Config first (small): is this a Septem image at all?
    let staged = layout::staging_dir(&pull.out)?;
    let root = staged.path().join("layout");
    std::fs::create_dir_all(root.join("blobs/sha256"))?;
    let mut total = 0u64;
    let config_desc = manifest.config();
    total += fetch_blob(
        &client,
        &by_digest,
        config_desc,
        "config",
        &root,
        opts.quiet,
    )
    .await
    .map_err(|e| e.map_oci(reference, auth_source))?;
    let config_bytes = std::fs::read(layout::blob_path(&root, config_desc.digest().as_ref())?)?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("{reference}: the image config does not parse"))?;
    let marks = match septem_marks(&reference.whole(), &manifest, &config) {
        Ok(marks) => Some(marks),
        Err(_) if pull.accept_ordinary && !is_marked(&manifest, &config) => None,
        Err(e) => return Err(e.into()),
    };

    for layer in manifest.layers() {
        let mt = layer.media_type().to_string();
        if mt != super::MT_LAYER && mt != "application/vnd.docker.image.rootfs.diff.tar.gzip" {
            return Err(OciError::NotSeptem {
                what: reference.whole(),
                reason: format!(
                    "layer {} has media type {mt}, not a gzip tar",
                    layer.digest()
                ),
            }
            .into());
        }
        total += fetch_blob(&client, &by_digest, layer, "layer", &root, opts.quiet)
            .await
            .map_err(|e| e.map_oci(reference, auth_source))?;
    }

    // Layers: diff_ids, the unikernel is there and runnable, optional extraction.
    let extract_stage = staged.path().join("extract");
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(OciError::Integrity(format!(
            "the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            manifest.layers().len()
        ))
        .into());
    }
    let mut found = false;
    let mut extracted = Vec::new();
    for (layer, want_diff) in manifest.layers().iter().zip(diff_ids) {
        let path = layout::blob_path(&root, layer.digest().as_ref())?;
        let check = layout::check_layer(
            &reference.whole(),
            &path,
            marks.as_ref().map_or("", |m| m.binary.as_str()),
            pull.extract
                .as_ref()
                .filter(|_| marks.is_some())
                .map(|_| extract_stage.as_path()),
        )?;
        if &check.diff_id != want_diff {
            return Err(OciError::Integrity(format!(
                "layer {}: uncompressed content hashes to {}, the config says {want_diff}",
                layer.digest(),
                check.diff_id
            ))
            .into());
        }
        found |= check.found;
        extracted.extend(check.extracted);
    }
    if let Some(marks) = marks.as_ref().filter(|_| !found) {
        return Err(OciError::NotSeptem {
            what: reference.whole(),
            reason: format!("no layer holds its unikernel {}", marks.binary),
        }
        .into());
    }

    // Everything checks out: manifest blob, index, then move into place.
    std::fs::write(layout::blob_path(&root, &digest)?, &body)?;
    let platform = PlatformBuilder::default()
        .architecture(config.architecture().clone())
        .os(config.os().clone())
        .build()?;
    let mut annotations = HashMap::from([(CONTAINERD_NAME.to_owned(), reference.whole())]);
    if let Some(tag) = reference.tag() {
        annotations.insert(REF_NAME.to_owned(), tag.to_owned());
    }
    let entry = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .size(body.len() as u64)
        .digest(Digest::from_str(&digest)?)
        .platform(platform)
        .annotations(annotations)
        .build()?;
    layout::write_index(&root, &entry)?;
    let binary = marks.map(|m| m.binary).unwrap_or_default();
    let unikernel = if let Some(dir) = pull.extract.as_ref().filter(|_| !binary.is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for rel in &extracted {
            let to = dir.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(extract_stage.join(rel), &to)
                .with_context(|| format!("writing {}", to.display()))?;
        }
        let name = Path::new(&binary)
            .strip_prefix(super::UNIKERNEL_DIR)
            .unwrap_or(Path::new(&binary))
            .to_path_buf();
        Some(dir.join(name))
    } else {
        None
    };
    if pull.archive {
        layout::install_archive(&root, &pull.out)?;
    } else {
        if pull.out.exists() {
            let is_empty_dir = pull.out.is_dir() && std::fs::read_dir(&pull.out)?.next().is_none();
            if !is_empty_dir && !pull.out.join("oci-layout").exists() {
                bail!(
                    "{} exists and is not an OCI image layout; refusing to replace it",
                    pull.out.display()
                );
            }
            std::fs::remove_dir_all(&pull.out)?;
        }
        std::fs::rename(&root, &pull.out)
            .with_context(|| format!("moving the layout to {}", pull.out.display()))?;
    }
    drop(staged);
    Ok(Pulled {
        reference: reference.whole(),
        digest,
        output: pull.out.clone(),
        binary,
        extracted: unikernel,
        bytes: total,
    })
}

/// Whether the manifest's annotations or the config's labels carry
/// `org.septem.unikernel=true` (as [`septem_marks`] reads them).
fn is_marked(manifest: &ImageManifest, config: &ImageConfiguration) -> bool {
    let key = super::ANN_UNIKERNEL;
    let annotated = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true");
    let labelled = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == "true");
    annotated || labelled
}

/// A blob download failure: from the registry, or a verification failure of ours.
enum FetchError {
    Oci(OciDistributionError),
    Other(anyhow::Error),
}

impl FetchError {
    fn map_oci(self, reference: &Reference, auth: &AuthSource) -> anyhow::Error {
        match self {
            FetchError::Oci(e) => classify(e, reference, auth, "pulling"),
            FetchError::Other(e) => e,
        }
    }
}

impl From<anyhow::Error> for FetchError {
    fn from(e: anyhow::Error) -> Self {
        FetchError::Other(e)
    }
}

/// Downloads a blob into `root/blobs/sha256/`, checking size and digest as it comes.
async fn fetch_blob(
    client: &Client,
    reference: &Reference,
    desc: &Descriptor,
    what: &str,
    root: &Path,
    quiet: bool,
) -> Result<u64, FetchError> {
    let digest = desc.digest().to_string();
    let path = layout::blob_path(root, &digest)?;
    let mut stream = client
        .pull_blob_stream(reference, digest.as_str())
        .await
        .map_err(FetchError::Oci)?;
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = super::HashingWriter::new(std::io::BufWriter::new(file));
    let mut progress = Progress::new("pulling", what, &digest, desc.size(), quiet);
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let mismatch = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<DigestError>())
                    .map(ToString::to_string);
                return Err(match mismatch {
                    Some(m) => {
                        FetchError::Other(OciError::Integrity(format!("blob {digest}: {m}")).into())
                    }
                    None => FetchError::Other(
                        anyhow::Error::new(e).context(format!("downloading {digest}")),
                    ),
                });
            }
        };
        if out.count() + chunk.len() as u64 > desc.size() {
            return Err(FetchError::Other(
                OciError::Integrity(format!(
                    "blob {digest}: the registry sent more than the {} bytes its descriptor says",
                    desc.size()
                ))
                .into(),
            ));
        }
        out.write_all(&chunk)
            .with_context(|| format!("writing {}", path.display()))?;
        progress.advance(chunk.len() as u64);
    }
    let (mut w, actual, size) = out.finish();
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    check_blob(&digest, desc.size(), &actual, size).map_err(|e| FetchError::Other(e.into()))?;
    Ok(size)
}
