//! `septem-build inspect`: what an image declares and how it is laid out.

use septem_image::{Image, ImageError};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why an image could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid Septem image.
    #[error("{} is not a valid Septem image", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ImageError,
    },
}

/// One device the image declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// Name.
    pub name: String,
    /// `net` or `block`.
    pub kind: String,
}

/// One loadable segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentReport {
    /// Guest address.
    pub vaddr: u64,
    /// Bytes in memory.
    pub mem_size: u64,
    /// File offset.
    pub file_offset: u64,
    /// Bytes in the file.
    pub file_size: u64,
    /// `r-x`, `r--`, `rw-`.
    pub perms: String,
}

/// Everything `inspect` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InspectReport {
    /// The file.
    pub path: PathBuf,
    /// File size in bytes.
    pub file_size: u64,
    /// ABI version in the manifest.
    pub abi_version: u32,
    /// Whether `septem-build` finalized the manifest.
    pub finalized: bool,
    /// Why the monitor would refuse the image (unfinalized, other ABI), if it would.
    pub not_runnable: Option<String>,
    /// Entry point.
    pub entry: u64,
    /// The function at the entry point, if the image has symbols.
    pub entry_symbol: Option<String>,
    /// Default guest memory in MiB (0: the monitor's default).
    pub default_mem_mib: u32,
    /// Declared devices.
    pub devices: Vec<DeviceReport>,
    /// Loadable segments.
    pub segments: Vec<SegmentReport>,
    /// Lowest and one-past-highest page of the image.
    pub span: (u64, u64),
    /// Number of function symbols.
    pub symbols: usize,
}

impl InspectReport {
    /// Builds the report for a parsed image.
    #[must_use]
    pub fn new(path: &Path, image: &Image) -> InspectReport {
        let m = &image.manifest;
        InspectReport {
            path: path.to_owned(),
            file_size: image.file_size as u64,
            abi_version: m.header.abi_version,
            finalized: m.is_finalized(),
            not_runnable: image.check_runnable().err().map(|e| e.to_string()),
            entry: image.entry,
            entry_symbol: image.symbolize(image.entry).map(|(name, off)| {
                if off == 0 {
                    name.to_string()
                } else {
                    format!("{name}+{off:#x}")
                }
            }),
            default_mem_mib: m.header.default_mem_mib,
            devices: m
                .devices()
                .iter()
                .map(|d| DeviceReport {
                    name: d.name_str().to_owned(),
                    kind: d.device_kind().map_or("?", |k| k.name()).to_owned(),
                })
                .collect(),
            segments: image
                .segments
                .iter()
                .map(|s| SegmentReport {
                    vaddr: s.vaddr,
                    mem_size: s.mem_size,
                    file_offset: s.file_offset,
                    file_size: s.file_size,
                    perms: s.perms.to_string(),
                })
                .collect(),
            span: (image.start(), image.end()),
            symbols: image.symbol_count(),
        }
    }
}

/// Parses `bytes` (read from `path`) and reports on them.
pub fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<InspectReport, InspectError> {
    let image = Image::parse(bytes).map_err(|source| InspectError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    Ok(InspectReport::new(path, &image))
}

/// Reads `path` and reports on it.
pub fn inspect_file(path: &Path) -> Result<InspectReport, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read {
        path: path.to_owned(),
        source,
    })?;
    inspect_bytes(path, &bytes)
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "image:       {}", self.path.display())?;
        writeln!(f, "file size:   {} bytes", self.file_size)?;
        writeln!(f, "ABI version: {}", self.abi_version)?;
        match &self.not_runnable {
            None => writeln!(f, "manifest:    finalized")?,
            Some(why) => writeln!(
                f,
                "manifest:    {} ({why})",
                if self.finalized {
                    "finalized"
                } else {
                    "NOT finalized"
                }
            )?,
        }
        match &self.entry_symbol {
            Some(s) => writeln!(f, "entry:       {:#x} <{s}>", self.entry)?,
            None => writeln!(f, "entry:       {:#x}", self.entry)?,
        }
        if self.default_mem_mib == 0 {
            writeln!(f, "memory:      monitor default")?;
        } else {
            writeln!(f, "memory:      {} MiB", self.default_mem_mib)?;
        }
        if self.devices.is_empty() {
            writeln!(f, "devices:     none")?;
        } else {
            writeln!(f, "devices:")?;
            for d in &self.devices {
                writeln!(f, "  {:<6} {}", d.kind, d.name)?;
            }
        }
        writeln!(
            f,
            "segments:    {} ({:#x}..{:#x})",
            self.segments.len(),
            self.span.0,
            self.span.1
        )?;
        writeln!(
            f,
            "  perms  address            mem size   file offset  file size"
        )?;
        for s in &self.segments {
            writeln!(
                f,
                "  {}    {:#018x} {:>10} {:>#12x} {:>10}",
                s.perms, s.vaddr, s.mem_size, s.file_offset, s.file_size
            )?;
        }
        write!(f, "symbols:     {}", self.symbols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use septem_abi::manifest::{ManifestNote, FLAG_FINALIZED, NOTE_SIZE, NOTE_TYPE_MANIFEST};
    use septem_abi::{DeviceKind, Manifest};

    const CODE_OFF: usize = 0x1000;
    const NOTE_OFF: usize = 0x2000;
    const PH_OFF: usize = 64;

    fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn phdr(buf: &mut [u8], i: usize, p_type: u32, flags: u32, off: u64, vaddr: u64, size: u64) {
        let at = PH_OFF + i * 56;
        put(buf, at, &p_type.to_le_bytes());
        put(buf, at + 4, &flags.to_le_bytes());
        put(buf, at + 8, &off.to_le_bytes());
        put(buf, at + 16, &vaddr.to_le_bytes());
        put(buf, at + 24, &vaddr.to_le_bytes());
        put(buf, at + 32, &size.to_le_bytes());
        put(buf, at + 40, &size.to_le_bytes());
        put(buf, at + 48, &0x1000u64.to_le_bytes());
    }

    /// A minimal image: code (r-x) at 1 MiB, the manifest note (r--) a page above.
    fn fabricate(manifest: &Manifest) -> Vec<u8> {
        let mut b = vec![0u8; NOTE_OFF + NOTE_SIZE];
        put(&mut b, 0, b"\x7fELF\x02\x01\x01");
        put(&mut b, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut b, 18, &62u16.to_le_bytes()); // x86-64
        put(&mut b, 20, &1u32.to_le_bytes());
        put(&mut b, 24, &0x10_0000u64.to_le_bytes()); // entry
        put(&mut b, 32, &(PH_OFF as u64).to_le_bytes());
        put(&mut b, 52, &64u16.to_le_bytes());
        put(&mut b, 54, &56u16.to_le_bytes());
        put(&mut b, 56, &3u16.to_le_bytes());
        put(&mut b, 58, &64u16.to_le_bytes());
        phdr(&mut b, 0, 1, 5, CODE_OFF as u64, 0x10_0000, 16);
        phdr(
            &mut b,
            1,
            1,
            4,
            NOTE_OFF as u64,
            0x10_1000,
            NOTE_SIZE as u64,
        );
        phdr(
            &mut b,
            2,
            4,
            4,
            NOTE_OFF as u64,
            0x10_1000,
            NOTE_SIZE as u64,
        );
        put(&mut b, CODE_OFF, &[0x0f, 0x0b]); // ud2
        let note = ManifestNote::UNFINALIZED;
        put(&mut b, NOTE_OFF, &note.namesz.to_le_bytes());
        put(&mut b, NOTE_OFF + 4, &note.descsz.to_le_bytes());
        put(&mut b, NOTE_OFF + 8, &NOTE_TYPE_MANIFEST.to_le_bytes());
        put(&mut b, NOTE_OFF + 12, &note.name);
        put(&mut b, NOTE_OFF + 20, &manifest.to_bytes());
        b
    }

    fn finalized() -> Manifest {
        let mut m = Manifest::EMPTY;
        m.push_device(DeviceKind::Net, "service").unwrap();
        m.header.default_mem_mib = 64;
        m.header.flags = FLAG_FINALIZED;
        m
    }

    fn invalid(bytes: &[u8]) -> ImageError {
        match inspect_bytes(Path::new("x"), bytes) {
            Err(InspectError::Invalid { source, .. }) => source,
            other => panic!("expected an invalid image, got {other:?}"),
        }
    }

    #[test]
    fn reports_a_valid_image() {
        let r = inspect_bytes(Path::new("x.septem"), &fabricate(&finalized())).unwrap();
        assert!(r.finalized && r.not_runnable.is_none());
        assert_eq!(r.default_mem_mib, 64);
        assert_eq!(
            r.devices,
            [DeviceReport {
                name: "service".into(),
                kind: "net".into()
            }]
        );
        let perms: Vec<_> = r.segments.iter().map(|s| s.perms.as_str()).collect();
        assert_eq!(perms, ["r-x", "r--"]);
        let text = r.to_string();
        assert!(text.contains("net    service"), "{text}");
        assert!(text.contains("64 MiB"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["abi_version"], septem_abi::ABI_VERSION);
        assert_eq!(json["entry"], 0x10_0000);
    }

    #[test]
    fn unfinalized_is_shown_not_refused() {
        let r = inspect_bytes(Path::new("x"), &fabricate(&Manifest::EMPTY)).unwrap();
        assert!(!r.finalized);
        assert!(r.to_string().contains("NOT finalized"));
    }

    #[test]
    fn finalize_patches_the_note() {
        let mut bytes = fabricate(&Manifest::EMPTY);
        let image = crate::guest::finalize(&mut bytes, &finalized()).unwrap();
        assert_eq!(image.manifest, finalized());
        let r = inspect_bytes(Path::new("x"), &bytes).unwrap();
        assert!(r.finalized);
    }

    #[test]
    fn rejects_broken_images() {
        let good = fabricate(&finalized());
        assert_eq!(invalid(b"#!/bin/sh\necho hi\n"), ImageError::NotElf);
        assert!(matches!(invalid(&good[..40]), ImageError::Truncated { .. }));
        assert!(matches!(
            invalid(&good[..CODE_OFF + 4]),
            ImageError::Truncated { .. } | ImageError::BadSegment { .. }
        ));

        let mut wx = good.clone();
        put(&mut wx, PH_OFF + 4, &7u32.to_le_bytes()); // code segment rwx
        assert!(matches!(
            invalid(&wx),
            ImageError::WritableAndExecutable { .. }
        ));

        let mut low = good.clone();
        put(&mut low, PH_OFF + 16, &0x1000u64.to_le_bytes()); // code below 1 MiB
        assert!(matches!(
            invalid(&low),
            ImageError::BelowImageBase { .. } | ImageError::BadEntry(_)
        ));

        let mut bad_magic = good.clone();
        bad_magic[NOTE_OFF + 20] ^= 0xff;
        assert!(matches!(invalid(&bad_magic), ImageError::BadManifest(_)));

        let mut bad_kind = good.clone();
        put(&mut bad_kind, NOTE_OFF + 20 + 24, &9u32.to_le_bytes());
        assert!(matches!(invalid(&bad_kind), ImageError::BadManifest(_)));

        let mut no_note = good.clone();
        put(&mut no_note, PH_OFF + 2 * 56, &6u32.to_le_bytes()); // PT_NOTE -> PT_PHDR
        assert_eq!(invalid(&no_note), ImageError::NoManifest);
    }

    #[test]
    fn unreadable_file_is_not_an_invalid_image() {
        let err = inspect_file(Path::new("/nonexistent/x.septem")).unwrap_err();
        assert!(matches!(err, InspectError::Read { .. }));
    }
}
