//! The tar index on real `tar` output (GNU, pax and ustar formats), plus damaged and
//! hostile archives.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::string::ToString;

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(tag: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("septem-fs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

const LONG_DIR: &str =
    "a-directory-name-that-is-quite-long-to-push-the-path-over-one-hundred-bytes";
const LONG_FILE: &str =
    "and-a-file-name-that-is-also-rather-long-so-that-ustar-needs-its-prefix.txt";

/// A tree: nested dirs, an empty dir, an empty file, a long path, a 3 MiB file, links.
fn make_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut put = |rel: &str, data: Vec<u8>| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        files.push((rel.to_string(), data));
    };
    put("index.html", b"<h1>hello</h1>\n".to_vec());
    put("css/site.css", b"body{}".to_vec());
    put("img/icons/x.svg", b"<svg/>".to_vec());
    put("empty.txt", Vec::new());
    put(&format!("{LONG_DIR}/{LONG_FILE}"), b"long path".to_vec());
    put(
        "big.bin",
        (0..3 * 1024 * 1024 + 17)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    );
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("../index.html", root.join("css/home.html")).unwrap();
    std::os::unix::fs::symlink("img/icons", root.join("icons")).unwrap();
    files
}

fn tar(format: &str, dir: &Path, out: &Path) -> Vec<u8> {
    let st = Command::new("tar")
        .arg(format!("--format={format}"))
        .args(["--mtime=@1700000000", "-cf"])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(st.success());
    std::fs::read(out).unwrap()
}

fn check_tree(bytes: &[u8], files: &[(String, Vec<u8>)]) {
    let fs = Fs::new(bytes).unwrap();
    for (path, data) in files {
        assert_eq!(&fs.read(path).unwrap(), data, "{path}");
        for spelled in [format!("/{path}"), format!("./{path}"), format!("//{path}")] {
            let m = fs.metadata(&spelled).unwrap();
            assert!(m.is_file(), "{spelled}");
            assert_eq!(m.size, data.len() as u64);
            assert_eq!(m.mtime, 1_700_000_000);
        }
    }
    assert_eq!(fs.read_to_string("index.html").unwrap(), "<h1>hello</h1>\n");
    // Directories: listed, sorted, implied ones too.
    let names = |p: &str| -> Vec<String> {
        fs.read_dir(p)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    assert_eq!(
        names("/"),
        [
            LONG_DIR,
            "big.bin",
            "css",
            "empty-dir",
            "empty.txt",
            "icons",
            "img",
            "index.html"
        ]
    );
    assert_eq!(names("css"), ["home.html", "site.css"]);
    assert_eq!(names("/img/"), ["icons"]);
    assert!(names("empty-dir").is_empty());
    assert!(fs.metadata("img").unwrap().is_dir());
    assert!(fs.metadata("").unwrap().is_dir());
    let listing = fs.read_dir("css").unwrap();
    assert_eq!(listing[0].metadata.file_type, FileType::Symlink);
    // Links are followed, within the archive.
    assert_eq!(fs.read("css/home.html").unwrap(), b"<h1>hello</h1>\n");
    assert_eq!(fs.read("icons/x.svg").unwrap(), b"<svg/>");
    // Errors.
    assert_eq!(fs.read("nope"), Err(Error::NotFound));
    assert_eq!(fs.read("css"), Err(Error::IsADirectory));
    assert_eq!(fs.read_dir("index.html"), Err(Error::NotADirectory));
    assert_eq!(fs.read("index.html/x"), Err(Error::NotADirectory));
    assert_eq!(fs.read("../index.html"), Err(Error::InvalidPath));
    assert_eq!(fs.read("css/../index.html"), Err(Error::InvalidPath));
    assert_eq!(fs.read("big.bin\0"), Err(Error::InvalidPath));
    // Positional reads of the large file.
    let big = &files.iter().find(|(p, _)| p == "big.bin").unwrap().1;
    let mut f = fs.open("/big.bin").unwrap();
    assert_eq!(f.len(), big.len() as u64);
    let mut buf = vec![0u8; 1000];
    for at in [0u64, 1, 511, 512, 4095, 1 << 20, big.len() as u64 - 1000] {
        assert_eq!(f.read_at(at, &mut buf).unwrap(), 1000);
        assert_eq!(&buf[..], &big[at as usize..at as usize + 1000], "at {at}");
    }
    assert_eq!(f.seek(SeekFrom::End(-10)).unwrap(), big.len() as u64 - 10);
    assert_eq!(f.read(&mut buf).unwrap(), 10);
    assert_eq!(&buf[..10], &big[big.len() - 10..]);
    assert_eq!(f.read(&mut buf).unwrap(), 0);
    assert_eq!(
        f.seek(SeekFrom::Current(-(big.len() as i64) - 1)),
        Err(Error::InvalidPath)
    );
    f.seek(SeekFrom::Start(3)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(f.read_to_end(&mut rest).unwrap(), big.len() - 3);
    assert_eq!(&rest[..], &big[3..]);
    assert_eq!(fs.open("empty.txt").unwrap().read(&mut buf).unwrap(), 0);
}

#[test]
fn reads_gnu_pax_and_ustar_archives() {
    let t = tmp("formats");
    let src = t.0.join("src");
    let files = make_tree(&src);
    for format in ["gnu", "posix", "ustar", "oldgnu"] {
        let bytes = tar(format, &src, &t.0.join(format!("{format}.tar")));
        check_tree(&bytes, &files);
    }
}

#[test]
fn pax_long_names_and_sizes_override_the_header() {
    let t = tmp("pax");
    let src = t.0.join("src");
    let name = "d/".repeat(80) + "deep.txt";
    let p = src.join(&name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"deep").unwrap();
    let bytes = tar("posix", &src, &t.0.join("x.tar"));
    let fs = Fs::new(&bytes[..]).unwrap();
    assert_eq!(fs.read(&name).unwrap(), b"deep");
    assert_eq!(fs.read_dir(&"d/".repeat(80)).unwrap()[0].name, "deep.txt");
}

/// Recomputes a header's checksum after editing it.
fn fix_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    let s = std::format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

#[test]
fn damaged_archives_are_refused_with_the_offset() {
    let t = tmp("corrupt");
    let src = t.0.join("src");
    make_tree(&src);
    let good = tar("gnu", &src, &t.0.join("g.tar"));
    // A flipped checksum byte of the first header.
    let mut bad = good.clone();
    bad[150] ^= 1;
    let e = Fs::new(&bad[..]).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { offset: 0, reason } if reason.contains("checksum")),
        "{e:?}"
    );
    assert!(e
        .to_string()
        .starts_with("corrupt tar archive at byte 0: bad header checksum"));
    // Not a tar archive at all.
    let junk = vec![0x41u8; 4096];
    assert!(matches!(
        Fs::new(&junk[..]),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    // Truncated in the middle of the big file's data.
    let cut = &good[..good.len() / 2 / 512 * 512];
    let e = Fs::new(cut).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { reason, .. } if reason.contains("truncated")),
        "{e:?}"
    );
    // Truncated inside a header.
    let e = Fs::new(&good[..700]).unwrap_err();
    assert_eq!(
        e,
        Error::Corrupt {
            offset: 512,
            reason: "truncated header"
        }
    );
    // A size that overflows.
    let mut huge = good.clone();
    huge[124] = 0x80;
    huge[125..136].copy_from_slice(&[0xff; 11]);
    fix_checksum(&mut huge[..512]);
    let e = Fs::new(&huge[..]).unwrap_err();
    assert!(matches!(e, Error::Corrupt { offset: 0, .. }), "{e:?}");
    // An entry escaping with `..`.
    let mut evil = good.clone();
    let name = b"../../etc/passwd\0";
    evil[..100].fill(0);
    evil[..name.len()].copy_from_slice(name);
    fix_checksum(&mut evil[..512]);
    let e = Fs::new(&evil[..]).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { reason, .. } if reason.contains("'..'")),
        "{e:?}"
    );
}

#[test]
fn symlinks_cannot_leave_the_root_or_loop() {
    let t = tmp("links");
    let src = t.0.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::os::unix::fs::symlink("../../outside", src.join("d/up")).unwrap();
    std::os::unix::fs::symlink("/d/loop", src.join("d/loop")).unwrap();
    std::os::unix::fs::symlink("d", src.join("abs-ok")).unwrap();
    std::fs::write(src.join("d/f"), b"f").unwrap();
    let bytes = tar("gnu", &src, &t.0.join("l.tar"));
    let fs = Fs::new(&bytes[..]).unwrap();
    assert_eq!(fs.read("d/up"), Err(Error::InvalidPath));
    assert_eq!(fs.read("d/loop"), Err(Error::InvalidPath));
    assert_eq!(fs.read("abs-ok/f").unwrap(), b"f");
}

#[test]
fn hard_links_share_data_and_empty_archives_mount() {
    let t = tmp("hard");
    let src = t.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"shared").unwrap();
    std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
    let bytes = tar("gnu", &src, &t.0.join("h.tar"));
    let fs = Fs::new(&bytes[..]).unwrap();
    assert_eq!(fs.read("a").unwrap(), b"shared");
    assert_eq!(fs.read("b").unwrap(), b"shared");
    // An all-zero disk is an empty tree; so is no disk data at all.
    let zeros = vec![0u8; 8192];
    assert!(Fs::new(&zeros[..]).unwrap().is_empty());
    assert!(Fs::new(&[][..]).unwrap().read_dir("/").unwrap().is_empty());
}

#[test]
fn numeric_fields() {
    assert_eq!(numeric(b"0000644\0", 0, "x"), Ok(0o644));
    assert_eq!(numeric(b"  17 \0", 0, "x"), Ok(0o17));
    assert_eq!(numeric(b"\0\0\0\0", 0, "x"), Ok(0));
    assert_eq!(
        numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0], 0, "x"),
        Ok(2 << 24)
    );
    assert!(numeric(b"0009", 0, "x").is_err());
    assert!(numeric(b"77777777777777777777777", 0, "x").is_err());
    assert!(numeric(&[0xff; 12], 0, "x").is_err());
}
