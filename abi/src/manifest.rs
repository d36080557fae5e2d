//! The manifest: an ELF note in which an image declares the ABI version it speaks and
//! the devices it expects.
//!
//! The libOS places an empty, *unfinalized* note in section `.note.septem` (a `PT_NOTE`
//! segment); `septem-build` fills in the devices declared in the app's `Cargo.toml` and
//! sets [`FLAG_FINALIZED`]. The monitor refuses an image whose note is missing,
//! malformed, unfinalized, or of another ABI version, and attaches exactly the devices
//! it declares.
//!
//! Note layout (all little-endian `u32`, as any ELF note): `namesz = 7`,
//! `descsz = MANIFEST_SIZE`, `type = NOTE_TYPE_MANIFEST`, name `"Septem\0"` padded to 8
//! bytes, then the [`Manifest`] descriptor.

use crate::assert_size;
use core::fmt;

/// The note's owner name, NUL included.
pub const NOTE_NAME: &[u8; 7] = b"Septem\0";
/// The note's type.
pub const NOTE_TYPE_MANIFEST: u32 = 0x5345_0001;
/// [`ManifestHeader::magic`]: "SPTM".
pub const MANIFEST_MAGIC: u32 = u32::from_le_bytes(*b"SPTM");
/// Most devices one image may declare.
pub const MAX_DEVICES: usize = 16;
/// Longest device name, in bytes (names are NUL-padded to 32).
pub const DEVICE_NAME_MAX: usize = 31;
/// [`ManifestHeader::flags`]: set by `septem-build` once the devices are written.
pub const FLAG_FINALIZED: u32 = 1;
/// Size of the note's descriptor (the [`Manifest`]).
pub const MANIFEST_SIZE: usize = core::mem::size_of::<Manifest>();
/// Size of the whole note: header, padded name, descriptor.
pub const NOTE_SIZE: usize = core::mem::size_of::<ManifestNote>();

/// What kind of device a manifest entry declares.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A network interface (frames in and out).
    Net = 1,
    /// A block device (sectors).
    Block = 2,
}

impl DeviceKind {
    /// Lowercase name as used in `Cargo.toml` and on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DeviceKind::Net => "net",
            DeviceKind::Block => "block",
        }
    }

    /// Parses the lowercase name.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "net" => Some(DeviceKind::Net),
            "block" => Some(DeviceKind::Block),
            _ => None,
        }
    }
}

impl TryFrom<u32> for DeviceKind {
    type Error = ManifestError;

    fn try_from(v: u32) -> Result<Self, Self::Error> {
        match v {
            1 => Ok(DeviceKind::Net),
            2 => Ok(DeviceKind::Block),
            other => Err(ManifestError::UnknownDeviceKind {
                index: 0,
                kind: other,
            }),
        }
    }
}

/// The descriptor's header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManifestHeader {
    /// [`MANIFEST_MAGIC`].
    pub magic: u32,
    /// ABI version the image was built against.
    pub abi_version: u32,
    /// [`FLAG_FINALIZED`] or zero.
    pub flags: u32,
    /// Number of used entries in [`Manifest::devices`].
    pub device_count: u32,
    /// Default guest memory in MiB the image asks for (0: the monitor's default).
    pub default_mem_mib: u32,
    /// Must be zero.
    pub _pad: u32,
}
assert_size!(ManifestHeader, 24);

/// One declared device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManifestDevice {
    /// A [`DeviceKind`] as `u32`.
    pub kind: u32,
    /// Must be zero.
    pub _pad: u32,
    /// Name: 1 to 31 bytes of `[A-Za-z0-9_-]`, NUL-padded.
    pub name: [u8; 32],
}
assert_size!(ManifestDevice, 40);

impl ManifestDevice {
    /// The name as a string (valid manifests only hold ASCII names).
    #[must_use]
    pub fn name_str(&self) -> &str {
        crate::manifest::nul_padded_str(&self.name)
    }

    /// The kind, if valid.
    #[must_use]
    pub fn device_kind(&self) -> Option<DeviceKind> {
        DeviceKind::try_from(self.kind).ok()
    }
}

/// The manifest descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Header.
    pub header: ManifestHeader,
    /// Device slots; the first `header.device_count` are used, the rest are zero.
    pub devices: [ManifestDevice; MAX_DEVICES],
}
assert_size!(Manifest, 24 + 40 * MAX_DEVICES);

/// The whole note as it sits in the image (4-byte aligned, as ELF notes are).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug)]
pub struct ManifestNote {
    /// 7.
    pub namesz: u32,
    /// [`MANIFEST_SIZE`].
    pub descsz: u32,
    /// [`NOTE_TYPE_MANIFEST`].
    pub note_type: u32,
    /// `"Septem\0"` plus one byte of padding.
    pub name: [u8; 8],
    /// The descriptor.
    pub desc: Manifest,
}
assert_size!(ManifestNote, 12 + 8 + MANIFEST_SIZE);

impl ManifestNote {
    /// The empty, unfinalized note the libOS links into every image.
    pub const UNFINALIZED: ManifestNote = ManifestNote {
        namesz: NOTE_NAME.len() as u32,
        descsz: MANIFEST_SIZE as u32,
        note_type: NOTE_TYPE_MANIFEST,
        name: *b"Septem\0\0",
        desc: Manifest::EMPTY,
    };
}

/// Why a manifest was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// The descriptor is shorter than [`MANIFEST_SIZE`].
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The magic number is wrong.
    BadMagic(u32),
    /// More devices than [`MAX_DEVICES`].
    TooManyDevices(u32),
    /// A device slot holds an unknown kind.
    UnknownDeviceKind {
        /// Slot index.
        index: usize,
        /// Raw kind.
        kind: u32,
    },
    /// A device name is empty, too long, or has a character outside `[A-Za-z0-9_-]`.
    BadDeviceName {
        /// Slot index.
        index: usize,
    },
    /// Two devices share a name.
    DuplicateDeviceName {
        /// Slot index of the second one.
        index: usize,
    },
    /// A padding field or an unused slot is not zero.
    NonZeroPadding,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::TooShort { len } => {
                write!(f, "manifest is {len} bytes, expected {MANIFEST_SIZE}")
            }
            ManifestError::BadMagic(m) => write!(f, "manifest magic is {m:#x}, expected {MANIFEST_MAGIC:#x}"),
            ManifestError::TooManyDevices(n) => {
                write!(f, "manifest declares {n} devices, at most {MAX_DEVICES} are allowed")
            }
            ManifestError::UnknownDeviceKind { index, kind } => {
                write!(f, "device #{index} has unknown kind {kind}")
            }
            ManifestError::BadDeviceName { index } => write!(
                f,
                "device #{index} has an invalid name (1 to {DEVICE_NAME_MAX} characters of A-Z a-z 0-9 _ -)"
            ),
            ManifestError::DuplicateDeviceName { index } => {
                write!(f, "device #{index} repeats the name of an earlier device")
            }
            ManifestError::NonZeroPadding => f.write_str("manifest padding or an unused device slot is not zero"),
        }
    }
}

/// Checks a device name: 1 to 31 bytes of `[A-Za-z0-9_-]`.
#[must_use]
pub fn is_valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DEVICE_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A NUL-padded name field as a string (`"?"` if it is not UTF-8): the manifest and the
/// boot device table store names the same way.
pub(crate) fn nul_padded_str(name: &[u8; 32]) -> &str {
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    core::str::from_utf8(&name[..len]).unwrap_or("?")
}

const EMPTY_DEVICE: ManifestDevice = ManifestDevice {
    kind: 0,
    _pad: 0,
    name: [0; 32],
};

impl Manifest {
    /// No devices, current ABI version, not finalized.
    pub const EMPTY: Manifest = Manifest {
        header: ManifestHeader {
            magic: MANIFEST_MAGIC,
            abi_version: crate::ABI_VERSION,
            flags: 0,
            device_count: 0,
            default_mem_mib: 0,
            _pad: 0,
        },
        devices: [EMPTY_DEVICE; MAX_DEVICES],
    };

    /// The used device entries.
    #[must_use]
    pub fn devices(&self) -> &[ManifestDevice] {
        let n = (self.header.device_count as usize).min(MAX_DEVICES);
        &self.devices[..n]
    }

    /// True once `septem-build` has written the devices.
    #[must_use]
    pub const fn is_finalized(&self) -> bool {
        self.header.flags & FLAG_FINALIZED != 0
    }

    /// Adds a device.
    pub fn push_device(&mut self, kind: DeviceKind, name: &str) -> Result<(), ManifestError> {
        let index = self.header.device_count as usize;
        if index >= MAX_DEVICES {
            return Err(ManifestError::TooManyDevices(index as u32 + 1));
        }
        if !is_valid_device_name(name) {
            return Err(ManifestError::BadDeviceName { index });
        }
        if self.devices().iter().any(|d| d.name_str() == name) {
            return Err(ManifestError::DuplicateDeviceName { index });
        }
        let mut dev = EMPTY_DEVICE;
        dev.kind = kind as u32;
        dev.name[..name.len()].copy_from_slice(name.as_bytes());
        self.devices[index] = dev;
        self.header.device_count += 1;
        Ok(())
    }

    /// Encodes the descriptor, little-endian.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; MANIFEST_SIZE] {
        let mut out = [0u8; MANIFEST_SIZE];
        let h = &self.header;
        let words = [
            h.magic,
            h.abi_version,
            h.flags,
            h.device_count,
            h.default_mem_mib,
            h._pad,
        ];
        for (i, w) in words.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        for (i, d) in self.devices.iter().enumerate() {
            let at = 24 + i * 40;
            out[at..at + 4].copy_from_slice(&d.kind.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&d._pad.to_le_bytes());
            out[at + 8..at + 40].copy_from_slice(&d.name);
        }
        out
    }

    /// Decodes and validates a descriptor. Never panics, whatever the bytes.
    ///
    /// It does not check the ABI version or the finalized flag: callers decide.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() < MANIFEST_SIZE {
            return Err(ManifestError::TooShort { len: bytes.len() });
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let header = ManifestHeader {
            magic: word(0),
            abi_version: word(4),
            flags: word(8),
            device_count: word(12),
            default_mem_mib: word(16),
            _pad: word(20),
        };
        if header.magic != MANIFEST_MAGIC {
            return Err(ManifestError::BadMagic(header.magic));
        }
        if header.device_count as usize > MAX_DEVICES {
            return Err(ManifestError::TooManyDevices(header.device_count));
        }
        if header._pad != 0 {
            return Err(ManifestError::NonZeroPadding);
        }
        let mut manifest = Manifest {
            header,
            devices: [EMPTY_DEVICE; MAX_DEVICES],
        };
        for index in 0..MAX_DEVICES {
            let at = 24 + index * 40;
            let mut name = [0u8; 32];
            name.copy_from_slice(&bytes[at + 8..at + 40]);
            let dev = ManifestDevice {
                kind: word(at),
                _pad: word(at + 4),
                name,
            };
            if index >= header.device_count as usize {
                if dev != EMPTY_DEVICE {
                    return Err(ManifestError::NonZeroPadding);
                }
                continue;
            }
            if dev._pad != 0 {
                return Err(ManifestError::NonZeroPadding);
            }
            if DeviceKind::try_from(dev.kind).is_err() {
                return Err(ManifestError::UnknownDeviceKind {
                    index,
                    kind: dev.kind,
                });
            }
            validate_name_bytes(&dev.name, index)?;
            if manifest.devices[..index].iter().any(|d| d.name == dev.name) {
                return Err(ManifestError::DuplicateDeviceName { index });
            }
            manifest.devices[index] = dev;
        }
        Ok(manifest)
    }
}

fn validate_name_bytes(name: &[u8; 32], index: usize) -> Result<(), ManifestError> {
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let ok = len > 0
        && len <= DEVICE_NAME_MAX
        && name[len..].iter().all(|&b| b == 0)
        && core::str::from_utf8(&name[..len]).is_ok_and(is_valid_device_name);
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadDeviceName { index })
    }
}

impl core::error::Error for ManifestError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_devices() {
        let mut m = Manifest::EMPTY;
        m.push_device(DeviceKind::Net, "service").unwrap();
        m.push_device(DeviceKind::Block, "data_1").unwrap();
        m.header.flags = FLAG_FINALIZED;
        m.header.default_mem_mib = 128;
        let back = Manifest::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert!(back.is_finalized());
        assert_eq!(back.devices().len(), 2);
        assert_eq!(back.devices()[1].name_str(), "data_1");
        assert_eq!(back.devices()[0].device_kind(), Some(DeviceKind::Net));
    }

    #[test]
    fn rejects_bad_names_and_duplicates() {
        let mut m = Manifest::EMPTY;
        assert_eq!(
            m.push_device(DeviceKind::Net, ""),
            Err(ManifestError::BadDeviceName { index: 0 })
        );
        assert_eq!(
            m.push_device(DeviceKind::Net, "a b"),
            Err(ManifestError::BadDeviceName { index: 0 })
        );
        assert!(m.push_device(DeviceKind::Net, &"x".repeat(32)).is_err());
        m.push_device(DeviceKind::Net, "eth").unwrap();
        assert_eq!(
            m.push_device(DeviceKind::Block, "eth"),
            Err(ManifestError::DuplicateDeviceName { index: 1 })
        );
    }

    #[test]
    fn rejects_too_many_devices() {
        let mut m = Manifest::EMPTY;
        for i in 0..MAX_DEVICES {
            let mut name = [0u8; 4];
            name[0] = b'd';
            name[1] = b'0' + (i / 10) as u8;
            name[2] = b'0' + (i % 10) as u8;
            m.push_device(DeviceKind::Block, core::str::from_utf8(&name[..3]).unwrap())
                .unwrap();
        }
        assert!(matches!(
            m.push_device(DeviceKind::Block, "x"),
            Err(ManifestError::TooManyDevices(_))
        ));
    }

    #[test]
    fn rejects_corruption() {
        let mut m = Manifest::EMPTY;
        m.push_device(DeviceKind::Net, "n").unwrap();
        let good = m.to_bytes();
        assert!(matches!(
            Manifest::from_bytes(&good[..10]),
            Err(ManifestError::TooShort { len: 10 })
        ));
        let mut b = good;
        b[0] ^= 1;
        assert!(matches!(
            Manifest::from_bytes(&b),
            Err(ManifestError::BadMagic(_))
        ));
        let mut b = good;
        b[12] = 17;
        assert_eq!(
            Manifest::from_bytes(&b),
            Err(ManifestError::TooManyDevices(17))
        );
        let mut b = good;
        b[24] = 9;
        assert_eq!(
            Manifest::from_bytes(&b),
            Err(ManifestError::UnknownDeviceKind { index: 0, kind: 9 })
        );
        let mut b = good;
        b[24 + 40 + 8] = b'z'; // unused slot written
        assert_eq!(Manifest::from_bytes(&b), Err(ManifestError::NonZeroPadding));
        let mut b = good;
        b[24 + 8 + 5] = b'q'; // byte after the NUL terminator
        assert_eq!(
            Manifest::from_bytes(&b),
            Err(ManifestError::BadDeviceName { index: 0 })
        );
    }

    #[test]
    fn never_panics_on_truncations() {
        let mut m = Manifest::EMPTY;
        m.push_device(DeviceKind::Net, "n").unwrap();
        let good = m.to_bytes();
        for len in 0..good.len() {
            let _ = Manifest::from_bytes(&good[..len]);
        }
    }

    #[test]
    fn note_layout() {
        let n = ManifestNote::UNFINALIZED;
        assert_eq!(n.namesz, 7);
        assert_eq!(n.descsz as usize, MANIFEST_SIZE);
        assert_eq!(NOTE_SIZE % 4, 0);
        assert!(!n.desc.is_finalized());
    }
}
