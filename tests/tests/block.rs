//! Block devices end to end, on both backends, with real files: the `block_rw` guest
//! (round trips at sector edges, refused requests; the file is checked byte for byte
//! afterwards), the `fs_read` guest on a disk image made by `septem-build disk` (and by
//! plain `tar`) compared with the host's view of the folder, a damaged archive, and
//! the monitor's and the builder's option errors.

use septem_tests::{backend_tests, bin, guest, run_guest, run_with_timeout, septem_run};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const USAGE: i32 = 120;
const BAD_CONFIG: i32 = 122;

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(tag: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("septem-block-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn init(o: u64) -> u8 {
    (o * 7 % 251) as u8
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

backend_tests!(block_rw_round_trips_and_refusals, |b| {
    let t = tmp(&format!("rw-{}", b.name()));
    let disk = t.0.join("disk.img");
    let ro = t.0.join("ro.img");
    let sectors: u64 = 8192;
    let original: Vec<u8> = (0..sectors * 512).map(init).collect();
    std::fs::write(&disk, &original).unwrap();
    let ro_bytes: Vec<u8> = (0..4096u32).map(|i| (i * 3 % 256) as u8).collect();
    std::fs::write(&ro, &ro_bytes).unwrap();
    let out = run_guest(
        b,
        &guest("block_rw"),
        &[
            &format!("--block:disk={}", s(&disk)),
            &format!("--block:ro={},ro", s(&ro)),
        ],
        &[],
    );
    out.expect_status(0)
        .stdout_has("block_rw: disk index=0 sectors=8192 sector_size=512 read_only=false")
        .stdout_has("block_rw: ro index=1 sectors=8 sector_size=512 read_only=true")
        .stdout_has("refused read across the end: invalid argument")
        .stdout_has("refused read of u32::MAX sectors: invalid argument")
        .stdout_has("refused read into a wild pointer: bad guest address")
        .stdout_has("refused write to the ro device: read-only device")
        .stdout_has(&format!("block_rw: ro fnv {:016x}", fnv(&ro_bytes)))
        .stdout_has("block_rw: OK");
    // The file holds exactly the guest's writes; nothing else moved.
    let mut want = original.clone();
    want[..512].fill(0xa0);
    want[5 * 512..8 * 512].fill(0xb0);
    want[(sectors as usize - 1) * 512..].fill(0xc0);
    for (i, byte) in want[2048 * 512..2048 * 512 + (3 << 19)]
        .iter_mut()
        .enumerate()
    {
        *byte = (i % 256) as u8 ^ 0x5a;
    }
    let mut got = std::fs::read(&disk).unwrap();
    assert_eq!(got.len(), want.len(), "the file's size changed");
    // Sector 20 holds a copy of guest code (a write from read-only memory).
    assert_ne!(got[20 * 512..21 * 512], want[20 * 512..21 * 512]);
    got[20 * 512..21 * 512].copy_from_slice(&want[20 * 512..21 * 512]);
    assert!(got == want, "the disk file differs from the guest's writes");
    assert_eq!(std::fs::read(&ro).unwrap(), ro_bytes, "the ro file changed");
});

/// The folder the file tree tests pack: nested paths, a long name, an empty file, an
/// empty directory and a 3 MiB file.
fn site(root: &Path) {
    let long = "n".repeat(90);
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 333u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    for (p, data) in [
        ("index.html", b"<h1>hi</h1>\n".to_vec()),
        ("css/site.css", b"body { margin: 0 }\n".to_vec()),
        ("img/icons/a.svg", b"<svg/>".to_vec()),
        (&format!("deep/{long}/{long}.txt") as &str, b"long".to_vec()),
        ("empty.txt", Vec::new()),
        ("media/big.bin", big),
    ] {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
}

/// What `fs_read` prints for `dir`, computed on the host.
fn listing(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let rel = format!("/{}", p.strip_prefix(root).unwrap().to_str().unwrap());
        let m = std::fs::metadata(&p).unwrap();
        let mode = m.mode() & 0o7777;
        if m.is_dir() {
            out.push(format!("D {rel} {mode:o} {}", m.mtime()));
            listing(root, &p, out);
        } else {
            let data = std::fs::read(&p).unwrap();
            let h = fnv(&data);
            out.push(format!(
                "F {rel} {} {mode:o} {} {h:016x}",
                m.len(),
                m.mtime()
            ));
            if m.len() > 1 << 20 {
                out.push(format!("C {rel} {h:016x}"));
            }
        }
    }
}

fn guest_listing(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("D ") || l.starts_with("F ") || l.starts_with("C "))
        .map(str::to_string)
        .collect()
}

fn disk_image(dir: &Path, out: &Path) -> String {
    let o = run_with_timeout(
        &bin("septem-build"),
        &["disk", s(dir), "-o", s(out)],
        Duration::from_secs(60),
    );
    o.expect_status(0);
    assert!(o.stdout.contains(" bytes ("), "{}", o.stdout);
    o.stdout
}

backend_tests!(fs_read_sees_the_folder_through_septem_build_disk, |b| {
    let t = tmp(&format!("fs-{}", b.name()));
    let src = t.0.join("site");
    site(&src);
    let img = t.0.join("site.img");
    let said = disk_image(&src, &img);
    assert!(said.contains("6 files, 7 directories, 0 links"), "{said}");
    assert_eq!(std::fs::metadata(&img).unwrap().len() % 512, 0);
    let out = run_guest(
        b,
        &guest("fs_read"),
        &[&format!("--block:www={},ro", s(&img))],
        &[],
    );
    out.expect_status(0).stdout_has("fs_read: OK");
    let mut want = Vec::new();
    listing(&src, &src, &mut want);
    assert_eq!(guest_listing(&out.stdout), want);
});

backend_tests!(fs_read_mounts_plain_tar_output, |b| {
    let t = tmp(&format!("tar-{}", b.name()));
    let src = t.0.join("site");
    site(&src);
    for format in ["gnu", "posix"] {
        let img = t.0.join(format!("{format}.img"));
        let st = std::process::Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&img)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let out = run_guest(
            b,
            &guest("fs_read"),
            &[&format!("--block:www={},ro", s(&img))],
            &[],
        );
        out.expect_status(0).stdout_has("fs_read: OK");
        let mut want = Vec::new();
        listing(&src, &src, &mut want);
        // pax stores mtimes the same; the listing must match whatever tar wrote.
        assert_eq!(guest_listing(&out.stdout), want, "{format}");
    }
});

backend_tests!(a_damaged_archive_is_refused_clearly, |b| {
    let t = tmp(&format!("bad-{}", b.name()));
    let src = t.0.join("site");
    site(&src);
    let img = t.0.join("site.img");
    disk_image(&src, &img);
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[150] ^= 0x01; // a header checksum digit
    std::fs::write(&img, &bytes).unwrap();
    run_guest(
        b,
        &guest("fs_read"),
        &[&format!("--block:www={},ro", s(&img))],
        &[],
    )
    .expect_status(2)
    .stdout_has("fs_read: mount: corrupt tar archive at byte 0: bad header checksum");
});

#[test]
fn monitor_block_option_errors_say_how_to_fix_them() {
    let t = tmp("opts");
    let image = guest("fs_read");
    let image = s(&image);
    let odd = t.0.join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let empty = t.0.join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let missing = t.0.join("missing.img");
    for (opt, status, wanted) in [
        (String::new(), BAD_CONFIG, "image declares block device 'www' but no --block:www=FILE is given".to_string()),
        (format!("--block:www={}", s(&missing)), BAD_CONFIG, "no such file; create a disk image with `septem-build disk DIR".to_string()),
        (format!("--block:www={}", s(&odd)), BAD_CONFIG, format!("the file is 1000 bytes, not a multiple of the 512-byte sector size; pad it with `truncate -s 1024 {}`", s(&odd))),
        (format!("--block:www={}", s(&empty)), BAD_CONFIG, "the file is empty".to_string()),
        (format!("--block:www={},ro", s(&t.0)), BAD_CONFIG, "is a directory; make a disk image of it with `septem-build disk".to_string()),
        (format!("--block:www={},rw", s(&odd)), USAGE, "unknown block device flag ',rw'".to_string()),
        (format!("--block:other={},ro", s(&odd)), BAD_CONFIG, "the image declares no block device 'other'".to_string()),
        ("--net:www=tap0".to_string(), BAD_CONFIG, "the image declares 'www' as a block device; use --block:www=".to_string()),
    ] {
        let mut args = vec!["--backend", "seccomp"];
        if !opt.is_empty() {
            args.push(&opt);
        }
        args.push(image);
        septem_run(&args).expect_status(status).stderr_has(&wanted);
    }
}

#[test]
fn a_read_only_file_needs_ro() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("SKIPPED: running as root, which may open read-only files for writing");
        return;
    }
    let t = tmp("rofile");
    let f = t.0.join("ro.img");
    std::fs::write(&f, vec![0u8; 512]).unwrap();
    let mut p = std::fs::metadata(&f).unwrap().permissions();
    p.set_readonly(true);
    std::fs::set_permissions(&f, p).unwrap();
    let image = guest("fs_read");
    septem_run(&[
        "--backend",
        "seccomp",
        &format!("--block:www={}", s(&f)),
        s(&image),
    ])
    .expect_status(BAD_CONFIG)
    .stderr_has(&format!(
        "attach it read-only with --block:www={},ro",
        s(&f)
    ));
}

#[test]
fn septem_build_disk_refuses_links_leaving_the_folder() {
    let t = tmp("escape");
    let src = t.0.join("site");
    std::fs::create_dir_all(&src).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", src.join("pw")).unwrap();
    let out = t.0.join("x.img");
    let o = run_with_timeout(
        &bin("septem-build"),
        &["disk", s(&src), "-o", s(&out)],
        Duration::from_secs(60),
    );
    o.expect_status(1).stderr_has("which leaves the folder");
    assert!(!out.exists());
}
