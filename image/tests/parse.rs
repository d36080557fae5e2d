//! Image validation on a hand-made image and its broken variants, plus a property test
//! that parsing never panics.

use proptest::prelude::*;
use septem_abi::manifest::{ManifestNote, FLAG_FINALIZED, NOTE_SIZE};
use septem_abi::{DeviceKind, Manifest, ABI_VERSION, IMAGE_BASE};
use septem_image::{write_manifest, Image, ImageError};

const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

struct Ph {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn note_bytes() -> Vec<u8> {
    let n = ManifestNote::UNFINALIZED;
    let mut out = Vec::new();
    out.extend_from_slice(&n.namesz.to_le_bytes());
    out.extend_from_slice(&n.descsz.to_le_bytes());
    out.extend_from_slice(&n.note_type.to_le_bytes());
    out.extend_from_slice(&n.name);
    out.extend_from_slice(&n.desc.to_bytes());
    assert_eq!(out.len(), NOTE_SIZE);
    out
}

fn build(phs: &[Ph], entry: u64, e_type: u16, machine: u16) -> Vec<u8> {
    let mut f = vec![0u8; 0x3000 + NOTE_SIZE];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&e_type.to_le_bytes());
    f[18..20].copy_from_slice(&machine.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
    for (i, ph) in phs.iter().enumerate() {
        let at = 64 + i * 56;
        f[at..at + 4].copy_from_slice(&ph.p_type.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&ph.flags.to_le_bytes());
        f[at + 8..at + 16].copy_from_slice(&ph.offset.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&ph.vaddr.to_le_bytes());
        f[at + 32..at + 40].copy_from_slice(&ph.filesz.to_le_bytes());
        f[at + 40..at + 48].copy_from_slice(&ph.memsz.to_le_bytes());
    }
    f[0x1000] = 0xf4; // hlt
    f[0x3000..].copy_from_slice(&note_bytes());
    f
}

fn segments(text_flags: u32, text_vaddr: u64, data_vaddr: u64) -> Vec<Ph> {
    vec![
        Ph {
            p_type: 1,
            flags: text_flags,
            offset: 0x1000,
            vaddr: text_vaddr,
            filesz: 0x10,
            memsz: 0x10,
        },
        Ph {
            p_type: 1,
            flags: PF_R | PF_W,
            offset: 0x2000,
            vaddr: data_vaddr,
            filesz: 0x10,
            memsz: 0x2000,
        },
        Ph {
            p_type: 4,
            flags: PF_R,
            offset: 0x3000,
            vaddr: 0,
            filesz: NOTE_SIZE as u64,
            memsz: 0,
        },
    ]
}

fn valid() -> Vec<u8> {
    build(
        &segments(PF_R | PF_X, IMAGE_BASE, IMAGE_BASE + 0x1000),
        IMAGE_BASE,
        2,
        62,
    )
}

fn finalized() -> Vec<u8> {
    let mut bytes = valid();
    let mut m = Manifest::EMPTY;
    m.push_device(DeviceKind::Net, "service").unwrap();
    m.header.flags = FLAG_FINALIZED;
    write_manifest(&mut bytes, &m).unwrap();
    bytes
}

#[test]
fn valid_image_parses() {
    let img = Image::parse(&valid()).unwrap();
    assert_eq!(img.entry, IMAGE_BASE);
    assert_eq!(img.segments.len(), 2);
    assert_eq!(img.segments[0].perms.to_string(), "r-x");
    assert_eq!(img.segments[1].perms.to_string(), "rw-");
    assert_eq!(img.start(), IMAGE_BASE);
    assert_eq!(img.end(), IMAGE_BASE + 0x3000);
    assert_eq!(img.manifest.header.abi_version, ABI_VERSION);
    assert_eq!(img.check_runnable(), Err(ImageError::NotFinalized));
}

#[test]
fn manifest_patch_round_trips() {
    let img = Image::parse(&finalized()).unwrap();
    img.check_runnable().unwrap();
    assert_eq!(img.manifest.devices()[0].name_str(), "service");
}

#[test]
fn abi_mismatch_is_reported() {
    let mut bytes = valid();
    let mut m = Manifest::EMPTY;
    m.header.flags = FLAG_FINALIZED;
    m.header.abi_version = ABI_VERSION + 1;
    write_manifest(&mut bytes, &m).unwrap();
    let err = Image::parse(&bytes).unwrap().check_runnable().unwrap_err();
    assert_eq!(
        err,
        ImageError::AbiMismatch {
            image: ABI_VERSION + 1,
            ours: ABI_VERSION
        }
    );
}

#[test]
fn rejects_not_elf_and_truncation() {
    assert_eq!(
        Image::parse(b"#!/bin/sh\necho hi\n").unwrap_err(),
        ImageError::NotElf
    );
    assert_eq!(Image::parse(&[]).unwrap_err(), ImageError::NotElf);
    let bytes = valid();
    assert!(matches!(
        Image::parse(&bytes[..40]).unwrap_err(),
        ImageError::Truncated { .. }
    ));
    assert!(matches!(
        Image::parse(&bytes[..0x1800]).unwrap_err(),
        ImageError::Truncated { .. }
    ));
    assert!(matches!(
        Image::parse(&bytes[..0x3010]).unwrap_err(),
        ImageError::Truncated { .. }
    ));
}

#[test]
fn rejects_wrong_machine_and_type() {
    let phs = segments(PF_R | PF_X, IMAGE_BASE, IMAGE_BASE + 0x1000);
    assert_eq!(
        Image::parse(&build(&phs, IMAGE_BASE, 2, 183)).unwrap_err(),
        ImageError::WrongMachine(183)
    );
    assert_eq!(
        Image::parse(&build(&phs, IMAGE_BASE, 3, 62)).unwrap_err(),
        ImageError::NotExecutable(3)
    );
}

#[test]
fn rejects_writable_executable_segment() {
    let phs = segments(PF_R | PF_W | PF_X, IMAGE_BASE, IMAGE_BASE + 0x1000);
    let err = Image::parse(&build(&phs, IMAGE_BASE, 2, 62)).unwrap_err();
    assert!(
        matches!(err, ImageError::WritableAndExecutable { index: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("writable and executable"));
}

#[test]
fn rejects_segment_in_low_area_and_overlap() {
    let phs = segments(PF_R | PF_X, 0x1000, IMAGE_BASE + 0x1000);
    let err = Image::parse(&build(&phs, 0x1000, 2, 62)).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::BelowImageBase {
                index: 0,
                vaddr: 0x1000,
                ..
            }
        ),
        "{err}"
    );
    let phs = segments(PF_R | PF_X, IMAGE_BASE, IMAGE_BASE);
    let err = Image::parse(&build(&phs, IMAGE_BASE, 2, 62)).unwrap_err();
    assert!(matches!(err, ImageError::Overlap { .. }), "{err}");
}

#[test]
fn rejects_entry_outside_text() {
    let phs = segments(PF_R | PF_X, IMAGE_BASE, IMAGE_BASE + 0x1000);
    let err = Image::parse(&build(&phs, IMAGE_BASE + 0x1000, 2, 62)).unwrap_err();
    assert_eq!(err, ImageError::BadEntry(IMAGE_BASE + 0x1000));
}

#[test]
fn rejects_missing_and_bad_manifest() {
    let mut phs = segments(PF_R | PF_X, IMAGE_BASE, IMAGE_BASE + 0x1000);
    phs.pop();
    assert_eq!(
        Image::parse(&build(&phs, IMAGE_BASE, 2, 62)).unwrap_err(),
        ImageError::NoManifest
    );
    let mut bytes = valid();
    bytes[0x3000 + 20] ^= 0xff; // manifest magic
    assert!(matches!(
        Image::parse(&bytes).unwrap_err(),
        ImageError::BadManifest(_)
    ));
    let mut bytes = valid();
    bytes[0x3004..0x3008].copy_from_slice(&u32::MAX.to_le_bytes()); // descsz
    assert!(matches!(
        Image::parse(&bytes).unwrap_err(),
        ImageError::BadNote(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Image::parse(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_images(edits in proptest::collection::vec((0usize..0x3400, any::<u8>()), 1..16),
                                      cut in 0usize..0x3400) {
        let mut bytes = finalized();
        for (at, v) in edits {
            if at < bytes.len() { bytes[at] = v; }
        }
        let _ = Image::parse(&bytes);
        let _ = Image::parse(&bytes[..cut.min(bytes.len())]);
    }
}
