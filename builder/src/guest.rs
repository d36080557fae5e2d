//! [`build_guest`]: cargo for the guest target, then the manifest, then the image file.

use crate::flags::{self, FlagsError, GUEST_TARGET};
use crate::metadata::{AppManifest, MetadataError};
use septem_abi::Manifest;
use septem_image::{Image, ImageError};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tracing::{debug, info};

/// Cargo profile to build with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// `dev` (directory `debug`).
    #[default]
    Debug,
    /// `release`.
    Release,
}

impl Profile {
    /// The output directory name cargo uses.
    #[must_use]
    pub const fn dir_name(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The app crate: its directory or its `Cargo.toml`.
    pub path: PathBuf,
    /// Profile.
    pub profile: Profile,
    /// Where to write the image (default `<target dir>/<profile>/<name>.septem`).
    pub output: Option<PathBuf>,
    /// Cargo target directory (default: `target/guest` of the enclosing Cargo workspace
    /// if the app sits inside one, else of the app).
    pub target_dir: Option<PathBuf>,
    /// The cargo executable (default `$CARGO`, else `cargo` from `PATH`).
    pub cargo: Option<PathBuf>,
    /// Pass `--quiet` to cargo.
    pub quiet: bool,
}

/// A finished image.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The `.septem` image.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The binary's name.
    pub name: String,
    /// The ELF cargo produced (before the manifest was finalized).
    pub linked: PathBuf,
    /// The manifest written into the image.
    pub manifest: Manifest,
    /// The profile it was built with.
    pub profile: Profile,
}

/// Why a guest could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No `Cargo.toml` at the given path.
    #[error("no Cargo.toml at {}", path.display())]
    NoCargoToml {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The app's `Cargo.toml` or its metadata is invalid.
    #[error("bad app manifest {}", path.display())]
    Metadata {
        /// The `Cargo.toml`.
        path: PathBuf,
        /// The problem.
        #[source]
        source: Box<MetadataError>,
    },
    /// The linker script could not be written.
    #[error("cannot prepare the guest target directory")]
    LinkerScript(#[source] FlagsError),
    /// Cargo could not be started.
    #[error("cannot run {}", cargo.display())]
    SpawnCargo {
        /// The cargo executable.
        cargo: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading cargo's output failed.
    #[error("cannot read cargo's output")]
    CargoOutput(#[source] std::io::Error),
    /// Cargo failed (compile or link errors, printed above by cargo).
    #[error("cargo build failed for {} ({status}); its errors are above", manifest.display())]
    CargoFailed {
        /// The app's `Cargo.toml`.
        manifest: PathBuf,
        /// How cargo exited.
        status: std::process::ExitStatus,
    },
    /// Cargo built no executable.
    #[error("cargo built no executable for {}: is it a binary crate (src/main.rs)?", manifest.display())]
    NoExecutable {
        /// The app's `Cargo.toml`.
        manifest: PathBuf,
    },
    /// Several executables and none named like the package.
    #[error("cargo built several executables ({}); septem-build expects one", names.join(", "))]
    SeveralExecutables {
        /// Their names.
        names: Vec<String>,
    },
    /// Reading or writing an image file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// "read", "write"…
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The linked executable is not a valid Septem image.
    #[error("the linked executable {} is not a valid Septem image", path.display())]
    InvalidImage {
        /// The executable.
        path: PathBuf,
        /// Why.
        #[source]
        source: ImageError,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

/// The app's `Cargo.toml` for a directory or manifest path.
fn cargo_toml(path: &Path) -> Result<PathBuf, BuildError> {
    let p = if path.file_name().is_some_and(|n| n == "Cargo.toml") {
        path.to_owned()
    } else {
        path.join("Cargo.toml")
    };
    if !p.is_file() {
        return Err(BuildError::NoCargoToml { path: p });
    }
    Ok(std::path::absolute(&p).unwrap_or(p))
}

/// The default target directory: `<root>/target/guest` for the nearest ancestor of the
/// app that holds a workspace `Cargo.toml` (so guests in one repository share their
/// compiled libOS), else `<app>/target/guest`.
#[must_use]
pub fn default_target_dir(app_manifest: &Path) -> PathBuf {
    let app_dir = app_manifest.parent().unwrap_or(Path::new("."));
    let root = app_dir
        .ancestors()
        .skip(1)
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .is_some_and(|t| t.contains_key("workspace"))
        })
        .unwrap_or(app_dir);
    root.join("target").join("guest")
}

/// One executable from cargo's JSON messages.
#[derive(Debug, PartialEq, Eq)]
struct Executable {
    name: String,
    path: PathBuf,
}

/// Picks the executables out of cargo's `--message-format=json` lines.
fn parse_message(line: &str) -> Option<Executable> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let path = v.get("executable")?.as_str()?;
    let target = v.get("target")?;
    let is_bin = target
        .get("kind")?
        .as_array()?
        .iter()
        .any(|k| k.as_str() == Some("bin"));
    is_bin.then(|| Executable {
        name: target
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("guest")
            .to_owned(),
        path: PathBuf::from(path),
    })
}

fn choose(
    mut exes: Vec<Executable>,
    package: &str,
    manifest: &Path,
) -> Result<Executable, BuildError> {
    match exes.len() {
        0 => Err(BuildError::NoExecutable {
            manifest: manifest.to_owned(),
        }),
        1 => Ok(exes.remove(0)),
        _ => match exes.iter().position(|e| e.name == package) {
            Some(i) => Ok(exes.remove(i)),
            None => Err(BuildError::SeveralExecutables {
                names: exes.into_iter().map(|e| e.name).collect(),
            }),
        },
    }
}

fn cargo_command(opts: &BuildOptions) -> PathBuf {
    opts.cargo
        .clone()
        .or_else(|| std::env::var_os("CARGO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Runs cargo; returns the executable it linked.
fn run_cargo(
    opts: &BuildOptions,
    manifest: &Path,
    target_dir: &Path,
    script: &Path,
    package: &str,
) -> Result<Executable, BuildError> {
    // Guests share a target directory, and cargo copies ("uplifts") each executable to
    // <triple>/<profile>/<name>: two apps with one binary name would overwrite each
    // other's copy, and a fresh (not rebuilt) app would then get the other's. Removing
    // the copy makes cargo uplift this app's own binary again (a hard link, cheap).
    let uplifted = target_dir
        .join(GUEST_TARGET)
        .join(opts.profile.dir_name())
        .join(package);
    match std::fs::remove_file(&uplifted) {
        Ok(()) => debug!(path = %uplifted.display(), "removed the previous uplifted executable"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &uplifted)(e)),
    }
    let cargo = cargo_command(opts);
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--message-format=json-render-diagnostics")
        .args(["--config", "profile.dev.panic=\"abort\""])
        .args(["--config", "profile.release.panic=\"abort\""]);
    if opts.profile == Profile::Release {
        cmd.arg("--release");
    }
    if opts.quiet {
        cmd.arg("--quiet");
    }
    let rustflags = flags::guest_rustflags(script);
    // With an explicit --target these reach target artifacts only, not build scripts.
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        flags::encode_rustflags(&rustflags),
    )
    .env_remove("RUSTFLAGS")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    debug!(?cmd, "running cargo");
    let mut child = cmd.spawn().map_err(|source| BuildError::SpawnCargo {
        cargo: cargo.clone(),
        source,
    })?;
    let mut exes = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.map_err(BuildError::CargoOutput)?;
            if let Some(e) = parse_message(&line) {
                debug!(name = %e.name, path = %e.path.display(), "cargo built an executable");
                exes.push(e);
            }
        }
    }
    let status = child.wait().map_err(BuildError::CargoOutput)?;
    if !status.success() {
        return Err(BuildError::CargoFailed {
            manifest: manifest.to_owned(),
            status,
        });
    }
    choose(exes, package, manifest)
}

/// Finalizes the manifest of the linked ELF `bytes` in place; returns the image.
pub fn finalize(bytes: &mut [u8], manifest: &Manifest) -> Result<Image, ImageError> {
    septem_image::write_manifest(bytes, manifest)?;
    let image = Image::parse(bytes)?;
    image.check_runnable()?;
    Ok(image)
}

/// Writes `bytes` to `path` atomically, executable.
fn write_image(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    }
    let file_name = path
        .file_name()
        .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("set permissions of", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err("write", path))
}

/// Builds the app at `opts.path` into a Septem image.
pub fn build_guest(opts: &BuildOptions) -> Result<BuiltImage, BuildError> {
    let manifest_path = cargo_toml(&opts.path)?;
    let app = AppManifest::read(&manifest_path).map_err(|source| BuildError::Metadata {
        path: manifest_path.clone(),
        source: Box::new(source),
    })?;
    let manifest = app
        .septem
        .to_manifest()
        .map_err(|source| BuildError::Metadata {
            path: manifest_path.clone(),
            source: Box::new(source),
        })?;
    let target_dir = opts
        .target_dir
        .clone()
        .unwrap_or_else(|| default_target_dir(&manifest_path));
    let script = flags::write_linker_script(&target_dir).map_err(BuildError::LinkerScript)?;
    info!(app = %app.package_name, target_dir = %target_dir.display(), "building guest");
    let exe = run_cargo(
        opts,
        &manifest_path,
        &target_dir,
        &script,
        &app.package_name,
    )?;

    let mut bytes = std::fs::read(&exe.path).map_err(io_err("read", &exe.path))?;
    finalize(&mut bytes, &manifest).map_err(|source| BuildError::InvalidImage {
        path: exe.path.clone(),
        source,
    })?;
    let out = opts.output.clone().unwrap_or_else(|| {
        target_dir
            .join(opts.profile.dir_name())
            .join(format!("{}.septem", exe.name))
    });
    write_image(&out, &bytes)?;
    info!(image = %out.display(), size = bytes.len(), "image written");
    Ok(BuiltImage {
        path: out,
        size: bytes.len() as u64,
        name: exe.name,
        linked: exe.path,
        manifest,
        profile: opts.profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_binaries_from_cargo_messages() {
        let bin = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"hello"},"executable":"/t/hello"}"#;
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"x"},"executable":null}"#;
        assert_eq!(
            parse_message(bin),
            Some(Executable {
                name: "hello".into(),
                path: "/t/hello".into()
            })
        );
        assert_eq!(parse_message(lib), None);
        assert_eq!(
            parse_message(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(parse_message("not json"), None);
    }

    #[test]
    fn chooses_the_package_binary() {
        let e = |n: &str| Executable {
            name: n.into(),
            path: n.into(),
        };
        let m = Path::new("C");
        assert!(matches!(
            choose(vec![], "a", m),
            Err(BuildError::NoExecutable { .. })
        ));
        assert_eq!(choose(vec![e("x")], "a", m).unwrap().name, "x");
        assert_eq!(choose(vec![e("x"), e("a")], "a", m).unwrap().name, "a");
        assert!(matches!(
            choose(vec![e("x"), e("y")], "a", m),
            Err(BuildError::SeveralExecutables { .. })
        ));
    }

    #[test]
    fn target_dir_is_shared_inside_a_workspace() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("Cargo.toml"),
            "[workspace]\nmembers = []\n",
        )
        .unwrap();
        let app = root.path().join("examples/app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(
            app.join("Cargo.toml"),
            "[package]\nname='app'\n[workspace]\n",
        )
        .unwrap();
        assert_eq!(
            default_target_dir(&app.join("Cargo.toml")),
            root.path().join("target/guest")
        );
        let lone = tempfile::tempdir().unwrap();
        assert_eq!(
            default_target_dir(&lone.path().join("Cargo.toml")),
            lone.path().join("target/guest")
        );
    }

    #[test]
    fn missing_cargo_toml_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let err = build_guest(&BuildOptions {
            path: d.path().to_owned(),
            ..BuildOptions::default()
        })
        .unwrap_err();
        assert!(matches!(err, BuildError::NoCargoToml { .. }), "{err}");
    }
}
