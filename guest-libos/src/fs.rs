//! A read-only file tree from a POSIX tar archive on a block device.
//!
//! A disk image made by `septem-build disk DIR -o site.img` (or plainly
//! `tar cf site.img -C DIR .`) is attached with `--block:NAME=site.img,ro`; the guest
//! reads it like a file system:
//!
//! ```ignore
//! use septem_libos::fs;
//! fs::mount("www")?;                          // or let the first use mount the first block device
//! let index = fs::read_to_string("/index.html")?;
//! for e in fs::read_dir("/img")? { println!("{} {}", e.name, e.metadata.size); }
//! let mut f = fs::File::open("/big.bin")?;    // positional reads, nothing loaded whole
//! f.seek(fs::SeekFrom::Start(1 << 20))?;
//! let n = f.read(&mut buf)?;
//! ```
//!
//! Mounting scans the archive's headers once (no file data is read; headers are read
//! 64 KiB at a time) and keeps an index in memory: path → offset, size, mode, mtime.
//! Understood: ustar (with its `prefix` field), GNU long names and link names
//! (`././@LongLink`, types `L`/`K`), pax extended headers (`path`, `size`, `mtime`,
//! `linkpath`; global headers are ignored), hard links, symbolic links (followed, never
//! out of the archive's root), directories implied by file paths, `./` and `/`
//! prefixes. Device nodes and FIFOs are skipped; GNU sparse files are refused.
//!
//! Paths given to the API are absolute or relative to the root (`/a/b`, `a/b`,
//! `./a/b` are the same); `..` is refused ([`Error::InvalidPath`]). Errors say what is
//! wrong: [`Error::NotFound`], [`Error::NotADirectory`], [`Error::IsADirectory`],
//! [`Error::Corrupt`] with the archive offset and the reason (bad checksum, truncated,
//! size overflow…).

use crate::block::{self, BlockDevice};
use crate::sync::Locked;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Errors of the file tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No such file or directory.
    NotFound,
    /// A path component that must be a directory is a file.
    NotADirectory,
    /// The path names a directory where a file is needed.
    IsADirectory,
    /// The path is not acceptable (`..`, a NUL byte, a symlink leaving the root or a
    /// symlink loop).
    InvalidPath,
    /// The file is not UTF-8 (`read_to_string`).
    InvalidUtf8,
    /// The archive is damaged or not a tar archive.
    Corrupt {
        /// Byte offset of the offending header in the archive.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// No block device to mount (none attached, or not the named one).
    NoDevice,
    /// The file tree was used from inside one of its own calls.
    Busy,
    /// Reading the block device failed.
    Block(block::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("no such file or directory"),
            Error::NotADirectory => f.write_str("not a directory"),
            Error::IsADirectory => f.write_str("is a directory"),
            Error::InvalidPath => f.write_str("invalid path"),
            Error::InvalidUtf8 => f.write_str("file is not valid UTF-8"),
            Error::Corrupt { offset, reason } => {
                write!(f, "corrupt tar archive at byte {offset}: {reason}")
            }
            Error::NoDevice => f.write_str("no block device to mount"),
            Error::Busy => f.write_str("file tree re-entered"),
            Error::Block(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for Error {}

impl From<block::Error> for Error {
    fn from(e: block::Error) -> Self {
        Error::Block(e)
    }
}

/// Result of the file tree API.
pub type Result<T> = core::result::Result<T, Error>;

/// Something an archive can be read from at byte offsets.
pub trait ReadAt {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills all of `buf` from byte `offset` (the caller keeps inside [`ReadAt::size`]).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

impl ReadAt for BlockDevice {
    fn size(&self) -> u64 {
        self.info().size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Ok(self.read_bytes(offset, buf)?)
    }
}

impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::NotFound)?;
        let src = self
            .get(start..start + buf.len())
            .ok_or(Error::Block(block::Error::OutOfRange))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (only seen by [`read_dir`]: lookups follow links).
    Symlink,
}

/// What [`metadata`] tells about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// File, directory or symbolic link.
    pub file_type: FileType,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (0 for implied directories).
    pub mtime: u64,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl Metadata {
    /// True for a directory.
    #[must_use]
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Dir
    }
    /// True for a regular file.
    #[must_use]
    pub fn is_file(&self) -> bool {
        self.file_type == FileType::File
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (no `/`).
    pub name: String,
    /// Its metadata (a symbolic link's own).
    pub metadata: Metadata,
}

#[derive(Clone, Debug)]
struct Node {
    meta: Metadata,
    /// Archive offset of the file's data.
    data: u64,
    /// A symbolic link's target.
    link: Option<String>,
}

const DIR_NODE: Node = Node {
    meta: Metadata {
        file_type: FileType::Dir,
        size: 0,
        mtime: 0,
        mode: 0o755,
    },
    data: 0,
    link: None,
};

/// Most bytes a GNU long name or a pax header may have.
const META_MAX: u64 = 64 * 1024;
/// Header read-ahead window while scanning.
const WINDOW: usize = 64 * 1024;
/// Symbolic links followed in one lookup.
const MAX_LINKS: u32 = 16;
const BLOCK: u64 = 512;

/// A mounted archive: the index and the device (or bytes) it reads from.
#[derive(Debug)]
pub struct Fs<R: ReadAt> {
    dev: R,
    index: BTreeMap<String, Node>,
}

/// Splits a user path into components: empty and `.` components dropped, `..` and NUL
/// refused.
fn components(path: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(Error::InvalidPath),
            c if c.contains('\0') => return Err(Error::InvalidPath),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Joins `base` components with `rel` (a symlink target), resolving `..`; `None` when
/// it would climb above the root.
fn resolve_relative(base: &[String], rel: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = if rel.starts_with('/') {
        Vec::new()
    } else {
        base.to_vec()
    };
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(String::from(c)),
        }
    }
    Some(out)
}

fn key_of(parts: &[String]) -> String {
    parts.join("/")
}

/// The archive's name for an entry, normalized to an index key; `..` is corruption.
fn entry_key(name: &str, offset: u64) -> Result<String> {
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::Corrupt {
                    offset,
                    reason: "an entry name contains '..'",
                })
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Parses a numeric header field: octal digits (leading spaces or NULs, ended by a
/// space or NUL), or GNU base-256 (first byte's top bit set).
fn numeric(field: &[u8], offset: u64, what: &'static str) -> Result<u64> {
    let corrupt = |reason| Error::Corrupt { offset, reason };
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err(corrupt(what));
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for &b in &field[1..] {
                if v >> 56 != 0 {
                    return Err(corrupt("a size or time does not fit in 64 bits"));
                }
                v = (v << 8) | u64::from(b);
            }
            return Ok(v);
        }
    }
    let mut v: u64 = 0;
    let mut started = false;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                started = true;
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .ok_or(corrupt("a size or time does not fit in 64 bits"))?;
            }
            b' ' | 0 if !started => {}
            b' ' | 0 => break,
            _ => return Err(corrupt(what)),
        }
    }
    Ok(v)
}

/// A NUL-terminated string field.
fn text(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn utf8(bytes: &[u8], offset: u64) -> Result<&str> {
    core::str::from_utf8(bytes).map_err(|_| Error::Corrupt {
        offset,
        reason: "an entry name is not UTF-8",
    })
}

/// Overrides collected from GNU long-name and pax headers for the next entry.
#[derive(Default)]
struct Pending {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
    mtime: Option<u64>,
}

/// Parses pax records `LEN key=value\n` into `p`.
fn pax(data: &[u8], offset: u64, p: &mut Pending) -> Result<()> {
    let bad = Error::Corrupt {
        offset,
        reason: "malformed pax extended header",
    };
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest.iter().position(|&b| b == b' ').ok_or(bad)?;
        let len: usize = core::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(bad)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad);
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or(bad)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => p.path = Some(String::from(utf8(value, offset)?)),
            b"linkpath" => p.link = Some(String::from(utf8(value, offset)?)),
            b"size" => {
                let s = core::str::from_utf8(value).map_err(|_| bad)?;
                p.size = Some(s.parse().map_err(|_| Error::Corrupt {
                    offset,
                    reason: "pax size is not a number",
                })?);
            }
            b"mtime" => {
                let s = core::str::from_utf8(value).map_err(|_| bad)?;
                let whole = s.split('.').next().unwrap_or("");
                // Negative times (before 1970) read as 0.
                p.mtime = Some(whole.parse().unwrap_or(0));
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// Reads headers through a read-ahead window.
struct Scanner<'a, R: ReadAt> {
    dev: &'a R,
    size: u64,
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

impl<R: ReadAt> Scanner<'_, R> {
    fn header(&mut self, off: u64) -> Result<[u8; 512]> {
        if off < self.start || off + BLOCK > self.start + self.len as u64 {
            let len = (self.size - off).min(WINDOW as u64) as usize;
            self.dev.read_at(off, &mut self.buf[..len])?;
            self.start = off;
            self.len = len;
        }
        let at = (off - self.start) as usize;
        let mut h = [0u8; 512];
        h.copy_from_slice(&self.buf[at..at + 512]);
        Ok(h)
    }
}

fn checksum_ok(h: &[u8; 512], offset: u64) -> Result<bool> {
    let stored = numeric(&h[148..156], offset, "bad checksum field")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    Ok(stored == unsigned || stored as i64 == signed)
}

impl<R: ReadAt> Fs<R> {
    /// Scans the archive on `dev` and builds the index (headers only).
    pub fn new(dev: R) -> Result<Fs<R>> {
        let index = scan(&dev)?;
        Ok(Fs { dev, index })
    }

    /// The device (or bytes) the archive is read from.
    pub fn device(&self) -> &R {
        &self.dev
    }

    /// Number of files, directories and links in the tree (the root not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len() - 1
    }

    /// True when the archive holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds `path`, following symbolic links; returns its key and node.
    fn lookup(&self, path: &str) -> Result<(String, &Node)> {
        let mut todo: Vec<String> = components(path)?.into_iter().map(String::from).collect();
        todo.reverse();
        let mut cur: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop() {
            cur.push(part);
            let node = self.index.get(&key_of(&cur)).ok_or(Error::NotFound)?;
            if let Some(target) = &node.link {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::InvalidPath);
                }
                cur.pop();
                let resolved = resolve_relative(&cur, target).ok_or(Error::InvalidPath)?;
                cur.clear();
                for p in resolved.into_iter().rev() {
                    todo.push(p);
                }
                continue;
            }
            if !todo.is_empty() && node.meta.file_type != FileType::Dir {
                return Err(Error::NotADirectory);
            }
        }
        let key = key_of(&cur);
        let node = self.index.get(&key).ok_or(Error::NotFound)?;
        Ok((key, node))
    }

    /// What `path` is (links followed).
    pub fn metadata(&self, path: &str) -> Result<Metadata> {
        Ok(self.lookup(path)?.1.meta)
    }

    /// True when `path` exists.
    #[must_use]
    pub fn exists(&self, path: &str) -> bool {
        self.lookup(path).is_ok()
    }

    /// The whole file.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let (_, node) = self.file_node(path)?;
        let len = usize::try_from(node.meta.size).map_err(|_| Error::Corrupt {
            offset: node.data,
            reason: "file too large for memory",
        })?;
        let mut out = vec![0u8; len];
        self.dev.read_at(node.data, &mut out)?;
        Ok(out)
    }

    /// The whole file as UTF-8 text.
    pub fn read_to_string(&self, path: &str) -> Result<String> {
        String::from_utf8(self.read(path)?).map_err(|_| Error::InvalidUtf8)
    }

    fn file_node(&self, path: &str) -> Result<(String, &Node)> {
        let (key, node) = self.lookup(path)?;
        match node.meta.file_type {
            FileType::File => Ok((key, node)),
            _ => Err(Error::IsADirectory),
        }
    }

    /// The entries of directory `path`, sorted by name.
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let (key, node) = self.lookup(path)?;
        if node.meta.file_type != FileType::Dir {
            return Err(Error::NotADirectory);
        }
        let prefix = if key.is_empty() {
            String::new()
        } else {
            let mut p = key.clone();
            p.push('/');
            p
        };
        let mut out = Vec::new();
        for (k, n) in self.index.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(prefix.as_str()) else {
                break;
            };
            if rest.is_empty() || rest.contains('/') {
                continue;
            }
            out.push(DirEntry {
                name: String::from(rest),
                metadata: n.meta,
            });
        }
        Ok(out)
    }

    /// Opens a file for positional reads.
    pub fn open(&self, path: &str) -> Result<File<R>>
    where
        R: Clone,
    {
        let (_, node) = self.file_node(path)?;
        Ok(File {
            dev: self.dev.clone(),
            data: node.data,
            size: node.meta.size,
            pos: 0,
            meta: node.meta,
        })
    }
}

/// Builds the index: every header once, data skipped.
fn scan<R: ReadAt>(dev: &R) -> Result<BTreeMap<String, Node>> {
    let size = dev.size();
    let mut index = BTreeMap::new();
    index.insert(String::new(), DIR_NODE);
    let mut sc = Scanner {
        dev,
        size,
        buf: vec![0u8; WINDOW],
        start: 0,
        len: 0,
    };
    let mut pending = Pending::default();
    let mut off = 0u64;
    loop {
        if off == size {
            break;
        }
        if off + BLOCK > size {
            return Err(Error::Corrupt {
                offset: off,
                reason: "truncated header",
            });
        }
        let h = sc.header(off)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let corrupt = |reason| Error::Corrupt {
            offset: off,
            reason,
        };
        if !checksum_ok(&h, off)? {
            return Err(corrupt(
                "bad header checksum (not a tar archive, or damaged)",
            ));
        }
        let kind = h[156];
        let mut fsize = numeric(&h[124..136], off, "bad size field")?;
        if matches!(kind, b'0' | 0 | b'7') {
            if let Some(s) = pending.size {
                fsize = s;
            }
        }
        let data = off + BLOCK;
        let padded = fsize
            .checked_add(BLOCK - 1)
            .map(|s| s & !(BLOCK - 1))
            .ok_or(corrupt("entry size overflows"))?;
        let next = data
            .checked_add(padded)
            .ok_or(corrupt("entry size overflows"))?;
        // Hard and symbolic links and directories carry no data in the archive.
        let has_data = !matches!(kind, b'1' | b'2' | b'5');
        if has_data && next > size {
            return Err(corrupt(
                "entry data runs past the end of the archive (truncated)",
            ));
        }
        let meta_data = |what: &'static str| -> Result<Vec<u8>> {
            if fsize > META_MAX {
                return Err(Error::Corrupt {
                    offset: off,
                    reason: what,
                });
            }
            let mut v = vec![0u8; fsize as usize];
            dev.read_at(data, &mut v)?;
            Ok(v)
        };
        match kind {
            b'L' => {
                let v = meta_data("GNU long name longer than 64 KiB")?;
                pending.path = Some(String::from(utf8(text(&v), off)?));
            }
            b'K' => {
                let v = meta_data("GNU long link name longer than 64 KiB")?;
                pending.link = Some(String::from(utf8(text(&v), off)?));
            }
            b'x' => {
                let v = meta_data("pax header longer than 64 KiB")?;
                pax(&v, off, &mut pending)?;
            }
            b'g' => {}
            b'S' => return Err(corrupt("GNU sparse files are not supported")),
            b'3' | b'4' | b'6' => pending = Pending::default(),
            _ => {
                let p = core::mem::take(&mut pending);
                let name = match p.path {
                    Some(n) => n,
                    None => {
                        let name = utf8(text(&h[0..100]), off)?;
                        let prefix = if &h[257..263] == b"ustar\0" {
                            utf8(text(&h[345..500]), off)?
                        } else {
                            ""
                        };
                        if prefix.is_empty() {
                            String::from(name)
                        } else {
                            let mut s = String::from(prefix);
                            s.push('/');
                            s.push_str(name);
                            s
                        }
                    }
                };
                let key = entry_key(&name, off)?;
                let link = match p.link {
                    Some(l) => l,
                    None => String::from(utf8(text(&h[157..257]), off)?),
                };
                let mtime = match p.mtime {
                    Some(m) => m,
                    None => numeric(&h[136..148], off, "bad mtime field")?,
                };
                let mode = (numeric(&h[100..108], off, "bad mode field")? & 0o7777) as u32;
                let node = match kind {
                    b'5' => Node {
                        meta: Metadata {
                            file_type: FileType::Dir,
                            size: 0,
                            mtime,
                            mode,
                        },
                        data: 0,
                        link: None,
                    },
                    b'2' => Node {
                        meta: Metadata {
                            file_type: FileType::Symlink,
                            size: link.len() as u64,
                            mtime,
                            mode,
                        },
                        data: 0,
                        link: Some(link),
                    },
                    b'1' => {
                        let target = entry_key(&link, off)?;
                        let t = index
                            .get(&target)
                            .filter(|n: &&Node| n.meta.file_type == FileType::File)
                            .ok_or(corrupt("a hard link names no earlier file"))?;
                        Node {
                            meta: Metadata {
                                mtime,
                                mode,
                                ..t.meta
                            },
                            data: t.data,
                            link: None,
                        }
                    }
                    // Regular files, and (as POSIX says) unknown types.
                    _ => Node {
                        meta: Metadata {
                            file_type: FileType::File,
                            size: fsize,
                            mtime,
                            mode,
                        },
                        data,
                        link: None,
                    },
                };
                if key.is_empty() {
                    // `./` itself: the root's own metadata.
                    if node.meta.file_type == FileType::Dir {
                        index.insert(key, node);
                    }
                } else {
                    // Parent directories are implied by the path.
                    let mut at = 0;
                    while let Some(i) = key[at..].find('/') {
                        let parent = &key[..at + i];
                        index.entry(String::from(parent)).or_insert(DIR_NODE);
                        at += i + 1;
                    }
                    index.insert(key, node);
                }
            }
        }
        off = if has_data { next } else { data };
    }
    Ok(index)
}

/// An open file: positional reads straight from the archive, nothing loaded whole.
#[derive(Debug, Clone)]
pub struct File<R: ReadAt = BlockDevice> {
    dev: R,
    data: u64,
    size: u64,
    pos: u64,
    meta: Metadata,
}

/// Where [`File::seek`] moves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekFrom {
    /// From the start.
    Start(u64),
    /// From the end (usually negative).
    End(i64),
    /// From the current position.
    Current(i64),
}

impl<R: ReadAt> File<R> {
    /// Size in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for an empty file.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The file's metadata.
    #[must_use]
    pub fn metadata(&self) -> Metadata {
        self.meta
    }

    /// Reads up to `buf.len()` bytes at `offset` of the file; returns how many (0 at
    /// or past the end). Does not move the position.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = (self.size - offset).min(buf.len() as u64) as usize;
        self.dev.read_at(self.data + offset, &mut buf[..n])?;
        Ok(n)
    }

    /// Reads from the current position and advances it.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = self.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// Reads the rest of the file.
    pub fn read_to_end(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let start = out.len();
        let n = self.size.saturating_sub(self.pos) as usize;
        out.resize(start + n, 0);
        let got = self.read(&mut out[start..])?;
        out.truncate(start + got);
        Ok(got)
    }

    /// Moves the position; returns the new one. Moving before the start is refused
    /// ([`Error::InvalidPath`]); past the end is allowed (reads then return 0).
    pub fn seek(&mut self, to: SeekFrom) -> Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::End(d) => (self.size, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        let new = base
            .0
            .checked_add_signed(base.1)
            .ok_or(Error::InvalidPath)?;
        self.pos = new;
        Ok(new)
    }

    /// The current position.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.pos
    }
}

static MOUNTED: Locked<Option<Fs<BlockDevice>>> = Locked::new(None);

/// Mounts the archive on block device `name` as the file tree used by the free
/// functions ([`read`], [`metadata`], …), replacing any earlier mount.
pub fn mount(name: &str) -> Result<()> {
    let dev = BlockDevice::open(name).map_err(|_| Error::NoDevice)?;
    let fs = Fs::new(dev)?;
    MOUNTED.try_with(|m| *m = Some(fs)).ok_or(Error::Busy)
}

/// Runs `f` on the mounted tree, mounting the manifest's first block device first if
/// nothing is mounted yet.
fn with<T>(f: impl FnOnce(&Fs<BlockDevice>) -> Result<T>) -> Result<T> {
    MOUNTED
        .try_with(|m| {
            if m.is_none() {
                let dev = BlockDevice::first().ok_or(Error::NoDevice)?;
                *m = Some(Fs::new(dev)?);
            }
            match m {
                Some(fs) => f(fs),
                None => Err(Error::NoDevice),
            }
        })
        .ok_or(Error::Busy)?
}

/// The name of the mounted device, if any.
#[must_use]
pub fn mounted() -> Option<&'static str> {
    MOUNTED
        .try_with(|m| m.as_ref().map(|fs| fs.device().name()))
        .flatten()
}

/// Reads a whole file of the mounted tree.
pub fn read(path: &str) -> Result<Vec<u8>> {
    with(|fs| fs.read(path))
}

/// Reads a whole UTF-8 file of the mounted tree.
pub fn read_to_string(path: &str) -> Result<String> {
    with(|fs| fs.read_to_string(path))
}

/// Metadata of a path of the mounted tree.
pub fn metadata(path: &str) -> Result<Metadata> {
    with(|fs| fs.metadata(path))
}

/// Lists a directory of the mounted tree.
pub fn read_dir(path: &str) -> Result<Vec<DirEntry>> {
    with(|fs| fs.read_dir(path))
}

impl File<BlockDevice> {
    /// Opens a file of the mounted tree.
    pub fn open(path: &str) -> Result<File<BlockDevice>> {
        with(|fs| fs.open(path))
    }
}

#[cfg(test)]
mod tests;
