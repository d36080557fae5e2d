//! Finding and rewriting the manifest note inside `PT_NOTE` segments.

use crate::elf::{Bytes, ProgramHeader, PT_NOTE};
use crate::{Image, ImageError};
use septem_abi::manifest::{NOTE_NAME, NOTE_TYPE_MANIFEST};
use septem_abi::Manifest;

/// Returns the file offset and size of the one manifest descriptor among the notes of `phdrs`.
pub(crate) fn find_manifest(
    bytes: &[u8],
    phdrs: &[ProgramHeader],
) -> Result<(usize, usize), ImageError> {
    let mut found = None;
    for ph in phdrs.iter().filter(|p| p.p_type == PT_NOTE) {
        let area = Bytes(bytes)
            .slice(ph.offset, ph.filesz)
            .ok_or(ImageError::Truncated {
                what: "a PT_NOTE segment",
            })?;
        let base = usize::try_from(ph.offset).map_err(|_| ImageError::Truncated {
            what: "a PT_NOTE segment",
        })?;
        for (desc_at, desc_len) in septem_notes(area)? {
            if found.is_some() {
                return Err(ImageError::DuplicateManifest);
            }
            found = Some((base + desc_at, desc_len));
        }
    }
    found.ok_or(ImageError::NoManifest)
}

/// Offsets (within `area`) and sizes of the descriptors of Septem manifest notes.
fn septem_notes(area: &[u8]) -> Result<Vec<(usize, usize)>, ImageError> {
    let b = Bytes(area);
    let mut at = 0usize;
    let mut out = Vec::new();
    while at < area.len() {
        let (Some(namesz), Some(descsz), Some(ntype)) = (b.u32(at), b.u32(at + 4), b.u32(at + 8))
        else {
            return Err(ImageError::BadNote("note header truncated"));
        };
        let name_at = at + 12;
        let desc_at = name_at
            .checked_add(align4(namesz as usize).ok_or(ImageError::BadNote("name size overflows"))?)
            .ok_or(ImageError::BadNote("name size overflows"))?;
        let next = desc_at
            .checked_add(
                align4(descsz as usize).ok_or(ImageError::BadNote("descriptor size overflows"))?,
            )
            .ok_or(ImageError::BadNote("descriptor size overflows"))?;
        if next > area.len() {
            return Err(ImageError::BadNote("note extends past its segment"));
        }
        let name = &area[name_at..name_at + namesz as usize];
        if name == NOTE_NAME.as_slice() && ntype == NOTE_TYPE_MANIFEST {
            out.push((desc_at, descsz as usize));
        }
        at = next;
    }
    Ok(out)
}

fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// Rewrites the manifest of the image in `bytes` in place (the builder's finalize step).
///
/// The image must parse; the new manifest replaces the old descriptor byte for byte.
pub fn write_manifest(bytes: &mut [u8], manifest: &Manifest) -> Result<(), ImageError> {
    let image = Image::parse(bytes)?;
    let encoded = manifest.to_bytes();
    let at = image.manifest_offset;
    let dest = bytes
        .get_mut(at..at + encoded.len())
        .ok_or(ImageError::Truncated {
            what: "the manifest",
        })?;
    dest.copy_from_slice(&encoded);
    Ok(())
}
