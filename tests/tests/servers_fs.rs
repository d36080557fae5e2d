//! `httpd-www` serving a file tree from a block device, on both backends: a site
//! folder with nested paths, an `index.html` per directory, a file with a space in its
//! name and a 2 MiB random file becomes a disk with `septem-build disk`; httpd runs
//! with it (`--block:www=site.img,ro`) on a tap in a network namespace, and `curl`
//! inside the namespace fetches every file, comparing SHA-256 with the host's, checks
//! headers (`Content-Type`, `Content-Length`, `Last-Modified`), `HEAD`, directory
//! indexes, 404, 403 for `..` and the built-in `/health`. Needs root, taps and curl.

use septem_tests::net::{skip_unless_net, NetNs, Running};
use septem_tests::{backend_tests, bin, example, septem_build};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn sha256(data: &[u8]) -> String {
    let mut cmd = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    use std::io::Write;
    cmd.stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = cmd.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

fn curl(ns: &NetNs, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["-s", "--max-time", "30"];
    all.extend_from_slice(args);
    let out = Running::spawn(ns.command(Path::new("curl"), &all)).finish(Duration::from_secs(60));
    assert_eq!(out.status, Some(0), "curl {args:?}: {}", out.stderr);
    out.stdout.into_bytes()
}

/// Fetches `url` as raw bytes (stdout can hold binary: written to a file).
fn fetch(ns: &NetNs, dir: &Path, url: &str) -> Vec<u8> {
    let out = dir.join("fetched");
    let _ = std::fs::remove_file(&out);
    curl(ns, &["-o", out.to_str().expect("utf-8"), url]);
    std::fs::read(&out).expect("fetched file")
}

fn status(ns: &NetNs, extra: &[&str], url: &str) -> String {
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    String::from_utf8(curl(ns, &args)).expect("utf-8")
}

backend_tests!(httpd_serves_a_file_tree_from_a_block_device, |b| {
    if skip_unless_net() {
        return;
    }
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `curl` is missing (apt-get install curl)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let site = tmp.path().join("site");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("index.html", b"<!doctype html><h1>root</h1>\n".to_vec()),
        ("style.css", b"body { color: #333 }\n".to_vec()),
        ("docs/index.html", b"<h1>docs</h1>\n".to_vec()),
        (
            "docs/guide/intro.txt",
            b"hello from a nested path\n".to_vec(),
        ),
        ("docs/guide/with space.json", b"{\"ok\":true}\n".to_vec()),
        (
            "img/logo.svg",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n".to_vec(),
        ),
        ("empty.txt", Vec::new()),
        (
            "data/big.bin",
            (0..2u64 << 20)
                .map(|i| (i.wrapping_mul(0x9E37_79B9) >> 13) as u8)
                .collect(),
        ),
    ];
    for (p, data) in &files {
        let path = site.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, data).expect("write");
    }
    let img = tmp.path().join("site.img");
    septem_build(&[
        "disk",
        site.to_str().expect("utf-8"),
        "-o",
        img.to_str().expect("utf-8"),
    ])
    .expect_status(0);

    let ns = NetNs::new();
    ns.add_tap("tap0", 1500, true);
    ns.exec_ok(&["ip", "addr", "add", "10.0.7.1/24", "dev", "tap0"]);
    let block = format!("--block:www={},ro", img.display());
    let image = example("httpd-www");
    let _guest = Running::spawn(ns.command(
        &bin("septem-run"),
        &[
            "--backend",
            b.name(),
            "--net:service=tap0",
            "--net-ip:service=10.0.7.2/24",
            &block,
            image.to_str().expect("utf-8"),
        ],
    ));
    // Wait until it serves.
    let mut up = false;
    for _ in 0..100 {
        let out = Running::spawn(ns.command(
            Path::new("curl"),
            &["-s", "--max-time", "1", "http://10.0.7.2/health"],
        ))
        .finish(Duration::from_secs(10));
        if out.stdout.contains("ok") {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "httpd-www never answered");

    for (p, data) in &files {
        let url = format!("http://10.0.7.2/{}", p.replace(' ', "%20"));
        let got = fetch(&ns, tmp.path(), &url);
        assert_eq!(got.len(), data.len(), "{p}: length");
        assert_eq!(sha256(&got), sha256(data), "{p}: bytes differ");
    }
    // Directory indexes.
    assert_eq!(fetch(&ns, tmp.path(), "http://10.0.7.2/"), files[0].1);
    assert_eq!(fetch(&ns, tmp.path(), "http://10.0.7.2/docs/"), files[2].1);
    assert_eq!(fetch(&ns, tmp.path(), "http://10.0.7.2/docs"), files[2].1);
    // Headers, HEAD.
    let head =
        String::from_utf8(curl(&ns, &["-I", "http://10.0.7.2/data/big.bin"])).expect("utf-8");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 2097152\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: application/octet-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("Last-Modified: "), "{head}");
    let css = String::from_utf8(curl(&ns, &["-i", "http://10.0.7.2/style.css"])).expect("utf-8");
    assert!(
        css.contains("Content-Type: text/css; charset=utf-8\r\n"),
        "{css}"
    );
    let svg = String::from_utf8(curl(&ns, &["-I", "http://10.0.7.2/img/logo.svg"])).expect("utf-8");
    assert!(svg.contains("Content-Type: image/svg+xml\r\n"), "{svg}");
    // Missing, escaping, built-in.
    assert_eq!(status(&ns, &[], "http://10.0.7.2/nope.html"), "404");
    assert_eq!(
        status(&ns, &[], "http://10.0.7.2/docs/guide/missing"),
        "404"
    );
    assert_eq!(
        status(&ns, &["--path-as-is"], "http://10.0.7.2/docs/../index.html"),
        "403"
    );
    assert_eq!(status(&ns, &[], "http://10.0.7.2/%2e%2e/etc/passwd"), "403");
    assert_eq!(status(&ns, &[], "http://10.0.7.2/health"), "200");
    // The big file twice on one keep-alive connection, then a small one (files:
    // the harness does not drain pipes while waiting).
    let outs: Vec<String> = (0..3)
        .map(|i| tmp.path().join(format!("ka{i}")).display().to_string())
        .collect();
    curl(
        &ns,
        &[
            "-o",
            &outs[0],
            "http://10.0.7.2/data/big.bin",
            "-o",
            &outs[1],
            "http://10.0.7.2/data/big.bin",
            "-o",
            &outs[2],
            "http://10.0.7.2/style.css",
        ],
    );
    for (o, want) in outs.iter().zip([&files[7].1, &files[7].1, &files[1].1]) {
        assert_eq!(&std::fs::read(o).expect("output"), want, "{o}");
    }
});
