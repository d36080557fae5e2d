//! Mounts the tar disk image on `www` and prints the whole tree, sorted, one line per
//! entry: `D path mode mtime`, `F path size mode mtime fnv64`; files over 1 MiB are
//! read a second time through `fs::File` in 100000-byte positional reads
//! (`C path fnv64`). Then checks a few refused paths and prints `fs_read: OK`.
//! A mount failure prints `fs_read: mount: ERROR` and exits 2.
#![no_std]
#![no_main]

use septem_libos::fs::{self, Error, File, SeekFrom};
use septem_libos::prelude::*;

septem_libos::main!(main);

fn fnv(h: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

fn walk(dir: &str) -> Result<(), Error> {
    for e in fs::read_dir(dir)? {
        let path = if dir == "/" {
            format!("/{}", e.name)
        } else {
            format!("{dir}/{}", e.name)
        };
        let m = e.metadata;
        if m.is_dir() {
            println!("D {path} {:o} {}", m.mode, m.mtime);
            walk(&path)?;
        } else {
            let data = fs::read(&path)?;
            println!(
                "F {path} {} {:o} {} {:016x}",
                m.size,
                m.mode,
                m.mtime,
                fnv(FNV0, &data)
            );
            if m.size > 1 << 20 {
                let mut f = File::open(&path)?;
                let mut buf = vec![0u8; 100_000];
                let mut h = FNV0;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h = fnv(h, &buf[..n]);
                }
                println!("C {path} {h:016x}");
                // A positional read from the middle, after seeking back.
                f.seek(SeekFrom::Start(m.size / 2))?;
                let n = f.read(&mut buf[..1000])?;
                if n != 1000 || buf[..1000] != data[(m.size / 2) as usize..][..1000] {
                    println!("fs_read: WRONG: seek + read in {path}");
                }
            }
        }
    }
    Ok(())
}

fn main() -> i32 {
    if let Err(e) = fs::mount("www") {
        println!("fs_read: mount: {e}");
        return 2;
    }
    if let Err(e) = walk("/") {
        println!("fs_read: walk: {e}");
        return 1;
    }
    let checks = [
        (
            "missing",
            fs::read("/no/such/file").err() == Some(Error::NotFound),
        ),
        (
            "dotdot",
            fs::read("/../etc/passwd").err() == Some(Error::InvalidPath),
        ),
        (
            "root is a dir",
            fs::metadata("/").map(|m| m.is_dir()) == Ok(true),
        ),
    ];
    let mut ok = true;
    for (what, good) in checks {
        if !good {
            println!("fs_read: WRONG: {what}");
            ok = false;
        }
    }
    if ok {
        println!("fs_read: OK");
        0
    } else {
        1
    }
}
