//! `septem-build disk DIR -o IMAGE.img [--size SIZE] [--reproducible]`: a block device
//! image holding a host folder as a tar archive (GNU format: ustar headers plus
//! `././@LongLink` records for names over 100 bytes), which the libOS mounts as a
//! read-only file tree (`septem_libos::fs`).
//!
//! Deterministic: entries sorted by name, owner and group always 0 with no names,
//! no access or change times; with `--reproducible` every mtime is
//! `$SOURCE_DATE_EPOCH` (or 0) and modes are 0755 (directories and executables) or
//! 0644. Symbolic links are kept when they stay inside the folder (relative targets
//! are checked lexically, absolute ones must point into the folder and are rewritten
//! relative to the archive root); a link leaving the folder, a FIFO, socket or device
//! node is refused. The image is padded to a multiple of 512 bytes, or to `--size`.

use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// What `disk` makes.
#[derive(Clone, Debug, Default)]
pub struct DiskOptions {
    /// The folder to pack.
    pub dir: PathBuf,
    /// The image file to write.
    pub output: PathBuf,
    /// Pad the image to this many bytes (a multiple of 512, at least the archive).
    pub size: Option<u64>,
    /// Normalize mtimes (`$SOURCE_DATE_EPOCH` or 0) and modes (0644/0755).
    pub reproducible: bool,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskImage {
    /// Image size in bytes (a multiple of 512).
    pub size: u64,
    /// Bytes of the archive itself (headers, data, end marker).
    pub archive_size: u64,
    /// Regular files.
    pub files: u64,
    /// Directories (the root not counted).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
}

/// Why `disk` failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The folder holds something a disk image cannot.
    #[error("{path}: {why}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A bad `--size`.
    #[error("{0}")]
    Size(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const BLOCK: u64 = 512;

/// Parses `--size`: bytes, or with K/M/G/T (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    septem_image::size::parse_size(s).map_err(|e| e.to_string())
}

struct Writer<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> Writer<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = self.written % BLOCK;
        if rem != 0 {
            self.put(&[0u8; BLOCK as usize][..(BLOCK - rem) as usize])?;
        }
        Ok(())
    }
}

/// Writes `v` into a numeric field: octal when it fits, else GNU base-256.
fn numeric(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || v < 1u64 << (3 * digits) {
        let s = format!("{v:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = v.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
    }
}

/// One GNU header.
fn header(name: &[u8], kind: u8, mode: u32, size: u64, mtime: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    numeric(&mut h[100..108], u64::from(mode));
    numeric(&mut h[108..116], 0);
    numeric(&mut h[116..124], 0);
    numeric(&mut h[124..136], size);
    numeric(&mut h[136..148], mtime);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

struct Packer<W: Write> {
    w: Writer<W>,
    root: PathBuf,
    reproducible: bool,
    epoch: u64,
    stats: DiskImage,
}

impl<W: Write> Packer<W> {
    fn entry(
        &mut self,
        name: &str,
        kind: u8,
        mode: u32,
        size: u64,
        mtime: u64,
        link: &str,
    ) -> io::Result<()> {
        for (bytes, long_kind) in [(name.as_bytes(), b'L'), (link.as_bytes(), b'K')] {
            if bytes.len() > 100 {
                let h = header(
                    b"././@LongLink",
                    long_kind,
                    0o644,
                    bytes.len() as u64 + 1,
                    0,
                    b"",
                );
                self.w.put(&h)?;
                self.w.put(bytes)?;
                self.w.put(&[0])?;
                self.w.pad()?;
            }
        }
        let h = header(name.as_bytes(), kind, mode, size, mtime, link.as_bytes());
        self.w.put(&h)
    }

    fn mtime(&self, m: &Metadata) -> u64 {
        if self.reproducible {
            self.epoch
        } else {
            u64::try_from(m.mtime()).unwrap_or(0)
        }
    }

    fn mode(&self, m: &Metadata, dir: bool) -> u32 {
        if !self.reproducible {
            return m.mode() & 0o7777;
        }
        if dir || m.mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        }
    }

    /// Packs the contents of `dir` (archive names under `prefix`), sorted.
    fn walk(&mut self, dir: &Path, prefix: &str) -> Result<(), DiskError> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        names.sort();
        for os in names {
            let path = dir.join(&os);
            let Some(name) = os.to_str() else {
                return Err(DiskError::Refused {
                    path,
                    why: "the file name is not UTF-8".into(),
                });
            };
            let rel = format!("{prefix}{name}");
            let m = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let ft = m.file_type();
            if ft.is_dir() {
                let mode = self.mode(&m, true);
                self.entry(&format!("{rel}/"), b'5', mode, 0, self.mtime(&m), "")
                    .map_err(io_err(&path))?;
                self.stats.dirs += 1;
                self.walk(&path, &format!("{rel}/"))?;
            } else if ft.is_file() {
                let mut f = File::open(&path).map_err(io_err(&path))?;
                let size = m.len();
                let mode = self.mode(&m, false);
                self.entry(&rel, b'0', mode, size, self.mtime(&m), "")
                    .map_err(io_err(&path))?;
                let copied =
                    io::copy(&mut (&mut f).take(size), &mut self.w.out).map_err(io_err(&path))?;
                if copied != size {
                    return Err(DiskError::Refused {
                        path,
                        why: "the file changed size while it was being packed".into(),
                    });
                }
                self.w.written += size;
                self.w.pad().map_err(io_err(&path))?;
                self.stats.files += 1;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(io_err(&path))?;
                let target = self.link_target(&path, &rel, &target)?;
                self.entry(&rel, b'2', 0o777, 0, self.mtime(&m), &target)
                    .map_err(io_err(&path))?;
                self.stats.symlinks += 1;
            } else {
                let what = if ft.is_fifo() {
                    "a FIFO"
                } else if ft.is_socket() {
                    "a socket"
                } else if ft.is_block_device() || ft.is_char_device() {
                    "a device node"
                } else {
                    "not a regular file, directory or symbolic link"
                };
                return Err(DiskError::Refused {
                    path,
                    why: format!("is {what}; a disk image holds only files, directories and links inside the folder"),
                });
            }
        }
        Ok(())
    }

    /// A link's target as stored: relative targets must stay inside the folder
    /// (checked lexically from the link's directory); absolute ones must point into it
    /// and become archive-absolute (`/rel`).
    fn link_target(&self, path: &Path, rel: &str, target: &Path) -> Result<String, DiskError> {
        let refuse = |why: String| DiskError::Refused {
            path: path.to_path_buf(),
            why,
        };
        let Some(t) = target.to_str() else {
            return Err(refuse("the link's target is not UTF-8".into()));
        };
        if target.is_absolute() {
            let inside = target.strip_prefix(&self.root).map_err(|_| {
                refuse(format!(
                    "is a symbolic link to {t}, outside the folder; copy the file in instead"
                ))
            })?;
            return Ok(format!("/{}", inside.to_string_lossy()));
        }
        // Depth of the link's directory below the root, then walk the target.
        let mut depth: i64 = rel.matches('/').count() as i64;
        for c in target.components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                return Err(refuse(format!(
                    "is a symbolic link to {t}, which leaves the folder; copy the file in instead"
                )));
            }
        }
        Ok(t.to_string())
    }
}

/// Packs `opts.dir` into `opts.output`.
pub fn make_disk(opts: &DiskOptions) -> Result<DiskImage, DiskError> {
    let root = fs::canonicalize(&opts.dir).map_err(io_err(&opts.dir))?;
    if !root.is_dir() {
        return Err(DiskError::Refused {
            path: opts.dir.clone(),
            why: "is not a directory".into(),
        });
    }
    if let Some(size) = opts.size {
        if size == 0 || size % BLOCK != 0 {
            return Err(DiskError::Size(format!(
                "--size {size} is not a positive multiple of 512 bytes"
            )));
        }
    }
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Write next to the output, then rename: a failed run leaves no half image.
    let tmp = opts.output.with_extension("img.partial");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut p = Packer {
        w: Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            written: 0,
        },
        root: root.clone(),
        reproducible: opts.reproducible,
        epoch,
        stats: DiskImage {
            size: 0,
            archive_size: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
        },
    };
    let result = (|| {
        p.walk(&root, "")?;
        // End of archive: two zero blocks.
        p.w.put(&[0u8; 1024]).map_err(io_err(&tmp))?;
        let archive = p.w.written;
        let size = match opts.size {
            Some(s) if s < archive => {
                return Err(DiskError::Size(format!(
                "the archive needs {archive} bytes, more than --size {s}; give at least --size {}",
                archive.div_ceil(1 << 20) << 20
            )))
            }
            Some(s) => s,
            None => archive,
        };
        p.w.out.flush().map_err(io_err(&tmp))?;
        let f = p.w.out.get_ref();
        f.set_len(size).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        p.stats.size = size;
        p.stats.archive_size = archive;
        Ok(p.stats.clone())
    })();
    match result {
        Ok(stats) => {
            fs::rename(&tmp, &opts.output).map_err(io_err(&opts.output))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn opts(dir: &Path, out: &Path) -> DiskOptions {
        DiskOptions {
            dir: dir.to_path_buf(),
            output: out.to_path_buf(),
            size: None,
            reproducible: true,
        }
    }

    fn tree(root: &Path) {
        let long = "x".repeat(120);
        for (p, d) in [
            ("b.txt", &b"bee"[..]),
            ("a/z.txt", b"zed"),
            (&format!("a/{long}/{long}.txt") as &str, b"long"),
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, d).unwrap();
        }
        fs::create_dir_all(root.join("empty")).unwrap();
        std::os::unix::fs::symlink("../b.txt", root.join("a/link")).unwrap();
    }

    #[test]
    fn images_are_tar_and_deterministic() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        tree(&src);
        let one = t.path().join("one.img");
        let s = make_disk(&opts(&src, &one)).unwrap();
        assert_eq!(s.size % 512, 0);
        assert_eq!((s.files, s.dirs, s.symlinks), (3, 3, 1));
        // Same tree, same bytes (also after touching the files, when reproducible).
        let two = t.path().join("two.img");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::write(src.join("b.txt"), b"bee").unwrap();
        make_disk(&opts(&src, &two)).unwrap();
        assert_eq!(fs::read(&one).unwrap(), fs::read(&two).unwrap());
        // GNU tar reads it back, long names included.
        let list = Command::new("tar").arg("tvf").arg(&one).output().unwrap();
        assert!(list.status.success());
        let text = String::from_utf8(list.stdout).unwrap();
        assert!(text.contains(&format!("{}.txt", "x".repeat(120))), "{text}");
        assert!(text.contains("a/link -> ../b.txt"), "{text}");
        let x = t.path().join("x");
        fs::create_dir_all(&x).unwrap();
        assert!(Command::new("tar")
            .arg("xf")
            .arg(&one)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap()
            .success());
        assert_eq!(fs::read(x.join("a/z.txt")).unwrap(), b"zed");
        // Padded to --size.
        let three = t.path().join("three.img");
        let s = make_disk(&DiskOptions {
            size: Some(1 << 20),
            ..opts(&src, &three)
        })
        .unwrap();
        assert_eq!(fs::metadata(&three).unwrap().len(), 1 << 20);
        assert_eq!(s.size, 1 << 20);
    }

    #[test]
    fn refuses_escaping_links_special_files_and_small_sizes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", src.join("d/up")).unwrap();
        let out = t.path().join("o.img");
        let e = make_disk(&opts(&src, &out)).unwrap_err().to_string();
        assert!(e.contains("leaves the folder"), "{e}");
        assert!(!out.exists() && !out.with_extension("img.partial").exists());
        fs::remove_file(src.join("d/up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("d/abs")).unwrap();
        let e = make_disk(&opts(&src, &out)).unwrap_err().to_string();
        assert!(e.contains("outside the folder"), "{e}");
        fs::remove_file(src.join("d/abs")).unwrap();
        assert!(Command::new("mkfifo")
            .arg(src.join("fifo"))
            .status()
            .unwrap()
            .success());
        let e = make_disk(&opts(&src, &out)).unwrap_err().to_string();
        assert!(e.contains("is a FIFO"), "{e}");
        fs::remove_file(src.join("fifo")).unwrap();
        fs::write(src.join("f"), vec![1u8; 4096]).unwrap();
        let e = make_disk(&DiskOptions {
            size: Some(4096),
            ..opts(&src, &out)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("more than --size 4096"), "{e}");
        let e = make_disk(&DiskOptions {
            size: Some(1000),
            ..opts(&src, &out)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("multiple of 512"), "{e}");
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn numeric_fields_switch_to_base_256() {
        let mut f = [0u8; 12];
        numeric(&mut f, 0o644);
        assert_eq!(&f, b"00000000644\0");
        numeric(&mut f, 1 << 40);
        assert_eq!(f[0], 0x80);
        assert_eq!(u64::from_be_bytes(f[4..].try_into().unwrap()), 1 << 40);
    }
}
