//! Builds the example and every test guest through the library API and checks each
//! image: finalized manifest, entry `_start`, read-only, read-execute and read-write
//! segments, none writable and executable, nothing below 1 MiB.

use septem_build::{build_guest, inspect_file, BuildOptions, Profile};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn check(app: &Path) {
    let built = build_guest(&BuildOptions {
        path: app.to_owned(),
        profile: Profile::Debug,
        quiet: true,
        ..BuildOptions::default()
    })
    .unwrap_or_else(|e| panic!("building {}: {e:?}", app.display()));
    assert!(built.path.extension().is_some_and(|e| e == "septem"));
    assert_eq!(std::fs::metadata(&built.path).unwrap().len(), built.size);
    let r = inspect_file(&built.path).unwrap();
    assert!(r.finalized, "{r}");
    assert_eq!(r.not_runnable, None, "{r}");
    assert_eq!(r.entry_symbol.as_deref(), Some("_start"), "{r}");
    let mut perms: Vec<&str> = r.segments.iter().map(|s| s.perms.as_str()).collect();
    perms.sort_unstable();
    assert_eq!(perms, ["r--", "r-x", "rw-"], "{r}");
    for s in &r.segments {
        assert!(s.vaddr >= septem_abi::IMAGE_BASE, "{r}");
        assert_eq!(s.vaddr % septem_abi::PAGE_SIZE, 0, "{r}");
    }
    assert!(r.symbols > 0, "images keep their symbols");
}

#[test]
fn example_hello_builds_into_a_valid_image() {
    check(&repo().join("examples/hello"));
}

#[test]
fn every_test_guest_builds_into_a_valid_image() {
    let dir = repo().join("tests/guests");
    let mut guests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    guests.sort();
    assert!(guests.len() >= 10, "found {guests:?}");
    for g in guests {
        check(&g);
    }
}

#[test]
fn compile_errors_fail_the_build() {
    let d = tempfile::tempdir().unwrap();
    let libos = repo().join("guest-libos");
    std::fs::create_dir_all(d.path().join("src")).unwrap();
    std::fs::write(
        d.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n\
             [dependencies]\nseptem-libos = {{ path = {:?} }}\n",
            libos
        ),
    )
    .unwrap();
    std::fs::write(
        d.path().join("src/main.rs"),
        "#![no_std]\n#![no_main]\nseptem_libos::main!(main);\nfn main() -> i32 { \"not an int\" }\n",
    )
    .unwrap();
    let err = build_guest(&BuildOptions {
        path: d.path().to_owned(),
        target_dir: Some(repo().join("target/guest")),
        quiet: true,
        ..BuildOptions::default()
    })
    .unwrap_err();
    assert!(
        matches!(err, septem_build::BuildError::CargoFailed { .. }),
        "{err:?}"
    );
}

#[test]
fn bad_metadata_fails_before_compiling() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("Cargo.toml"),
        "[package]\nname = \"x\"\nversion = \"0.1.0\"\n[package.metadata.septem]\n\
         devices = [{ name = \"eth0\", kind = \"wifi\" }]\n",
    )
    .unwrap();
    let err = build_guest(&BuildOptions {
        path: d.path().to_owned(),
        ..BuildOptions::default()
    })
    .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("unknown kind \"wifi\""), "{chain}");
}
