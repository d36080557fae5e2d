//! `septem-build inspect` on a valid image and on broken copies of it.

use septem_tests::{guest, root, septem_build};

const INVALID_IMAGE: i32 = 3;

fn broken(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = std::fs::read(guest("hello")).unwrap();
    edit(&mut bytes);
    let path = root().join("target/test-images").join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

fn phdrs(bytes: &[u8]) -> Vec<usize> {
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(bytes[56..58].try_into().unwrap()) as usize;
    (0..phnum).map(|i| phoff + i * 56).collect()
}

#[test]
fn valid_image_is_described() {
    let out = septem_build(&["inspect", guest("hello").to_str().unwrap()]);
    out.expect_status(0).stdout_has("r-x").stdout_has("rw-");
    let json = septem_build(&["inspect", "--json", guest("hello").to_str().unwrap()]);
    json.expect_status(0);
    let v: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("inspect --json prints JSON");
    assert_eq!(v["abi_version"], septem_abi::ABI_VERSION);
    let segs = v["segments"].as_array().expect("segments array");
    assert!(segs.len() >= 2);
}

#[test]
fn truncated_image_is_rejected() {
    let path = broken("truncated.septem", |b| b.truncate(b.len() / 3));
    septem_build(&["inspect", &path])
        .expect_status(INVALID_IMAGE)
        .stderr_has("truncated");
}

#[test]
fn non_elf_is_rejected() {
    let path = broken("garbage.septem", |b| b[..4].copy_from_slice(b"MZ\0\0"));
    septem_build(&["inspect", &path])
        .expect_status(INVALID_IMAGE)
        .stderr_has("not an ELF");
}

#[test]
fn writable_executable_segment_is_rejected() {
    let path = broken("wx.septem", |b| {
        let load = phdrs(b)
            .into_iter()
            .find(|&at| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) == 1)
            .unwrap();
        b[load + 4..load + 8].copy_from_slice(&7u32.to_le_bytes());
    });
    septem_build(&["inspect", &path])
        .expect_status(INVALID_IMAGE)
        .stderr_has("writable and executable");
}

#[test]
fn corrupt_manifest_is_rejected() {
    let path = broken("badmanifest.septem", |b| {
        let image = septem_image::Image::parse(b).unwrap();
        b[image.manifest_offset] ^= 0xff;
    });
    septem_build(&["inspect", &path])
        .expect_status(INVALID_IMAGE)
        .stderr_has("manifest");
}

#[test]
fn images_are_rejected_by_the_monitor_too() {
    let path = broken("wx2.septem", |b| {
        let load = phdrs(b)
            .into_iter()
            .find(|&at| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) == 1)
            .unwrap();
        b[load + 4..load + 8].copy_from_slice(&7u32.to_le_bytes());
    });
    septem_tests::septem_run(&["--backend", "seccomp", &path])
        .expect_status(121)
        .stderr_has("writable and executable");
}
