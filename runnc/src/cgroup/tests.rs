//! Unit tests against fake cgroup trees in a temporary directory.

use super::*;
use std::fs;

const SELF_V1: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/abc\n3:cpuset:/\n2:cpu,cpuacct:/me\n0::/\n";

/// A v1 tree like this machine's, with `cpu`/`cpuacct` co-mounted behind symlinks.
fn v1_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    for d in [
        "memory",
        "pids",
        "freezer",
        "cpuset",
        "cpu,cpuacct",
        "blkio",
    ] {
        fs::create_dir(r.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpuacct")).unwrap();
    fs::write(r.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    fs::write(r.join("cpuset/cpuset.mems"), "0\n").unwrap();
    t
}

fn v2_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::write(
        t.path().join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids\n",
    )
    .unwrap();
    fs::write(t.path().join("cgroup.subtree_control"), "").unwrap();
    t
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn v1_default_path_one_dir_per_hierarchy() {
    let t = v1_tree();
    let r = t.path();
    let cg = Cgroup::resolve_in(r, SELF_V1, None, "c1", false).unwrap();
    assert!(!cg.unified);
    assert_eq!(
        cg.dirs,
        vec![
            r.join("memory/runnc/c1"),
            r.join("cpu,cpuacct/runnc/c1"),
            r.join("pids/runnc/c1"),
            r.join("freezer/runnc/c1"),
            r.join("cpuset/runnc/c1"),
        ]
    );
}

#[test]
fn v1_absolute_and_relative_paths() {
    let t = v1_tree();
    let r = t.path();
    let cg = Cgroup::resolve_in(r, SELF_V1, Some("/a/b"), "c1", false).unwrap();
    assert_eq!(cg.dirs[0], r.join("memory/a/b"));
    let cg = Cgroup::resolve_in(r, SELF_V1, Some("x/y"), "c1", false).unwrap();
    assert_eq!(cg.dirs[0], r.join("memory/process_api/abc/x/y"));
    assert_eq!(cg.dirs[1], r.join("cpu,cpuacct/me/x/y"));
    assert_eq!(cg.dirs[2], r.join("pids/x/y"));
}

#[test]
fn invalid_paths_are_refused() {
    let t = v1_tree();
    for (p, systemd) in [
        ("/a/../b", false),
        ("../x", false),
        ("a/..", false),
        ("system.slice:runnc", true),
        ("a:b:c:d", true),
        ("system:p:n", true),
        ("system.slice:p:", true),
        ("a--b.slice:p:n", true),
        ("-a.slice:p:n", true),
        ("system.slice:p:../x", true),
        ("system.slice:p:a/b", true),
    ] {
        let e = Cgroup::resolve_in(t.path(), SELF_V1, Some(p), "c1", systemd).unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{p}: {e}");
    }
    let e = Cgroup::resolve_in(t.path(), SELF_V1, None, "../x", false).unwrap_err();
    assert!(matches!(e, Error::InvalidPath { .. }));
}

#[test]
fn systemd_paths_map_like_systemd() {
    let t = v2_tree();
    let r = t.path();
    let dir = |p: Option<&str>| Cgroup::resolve_in(r, "0::/\n", p, "ID", true).unwrap().dirs;
    assert_eq!(
        dir(Some("system.slice:cri-containerd:ID")),
        vec![r.join("system.slice/cri-containerd-ID.scope")]
    );
    assert_eq!(
        dir(Some("kubepods-besteffort-podX.slice:cri-containerd:ID")),
        vec![r.join(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podX.slice/cri-containerd-ID.scope"
        )]
    );
    assert_eq!(
        dir(Some(":docker:ID")),
        vec![r.join("system.slice/docker-ID.scope")]
    );
    assert_eq!(dir(Some("-.slice:p:ID")), vec![r.join("p-ID.scope")]);
    assert_eq!(dir(None), vec![r.join("system.slice/runnc-ID.scope")]);
    assert_eq!(
        dir(Some("user.slice::ID")),
        vec![r.join("user.slice/ID.scope")]
    );
}

#[test]
fn v1_create_apply_and_cpuset_inheritance() {
    let t = v1_tree();
    let r = t.path();
    let cg = Cgroup::resolve_in(r, SELF_V1, Some("/p/c1"), "c1", false).unwrap();
    cg.create().unwrap();
    for d in &cg.dirs {
        assert!(d.is_dir(), "{}", d.display());
    }
    // cpuset values copied down level by level.
    assert_eq!(read(r.join("cpuset/p/cpuset.cpus")), "0-1");
    assert_eq!(read(r.join("cpuset/p/c1/cpuset.mems")), "0");
    // memsw present: written; period before quota.
    fs::write(
        r.join("memory/p/c1/memory.memsw.limit_in_bytes"),
        "9223372036854771712",
    )
    .unwrap();
    let res = Resources {
        memory_limit: Some(64 << 20),
        memory_swap: Some(128 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0".into()),
        pids_limit: Some(0),
    };
    cg.apply(&res).unwrap();
    let m = r.join("memory/p/c1");
    assert_eq!(
        read(m.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(m.join("memory.memsw.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    let c = r.join("cpu,cpuacct/p/c1");
    assert_eq!(read(c.join("cpu.shares")), "512");
    assert_eq!(read(c.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(c.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(r.join("cpuset/p/c1/cpuset.cpus")), "0");
    assert_eq!(read(r.join("pids/p/c1/pids.max")), "max");
    cg.apply(&Resources {
        pids_limit: Some(7),
        cpu_quota: Some(-1),
        ..Resources::default()
    })
    .unwrap();
    assert_eq!(read(r.join("pids/p/c1/pids.max")), "7");
    assert_eq!(read(c.join("cpu.cfs_quota_us")), "-1");
    // 0 is "not set": nothing is written.
    cg.apply(&Resources {
        cpu_quota: Some(0),
        cpu_shares: Some(0),
        ..Resources::default()
    })
    .unwrap();
    assert_eq!(read(c.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(c.join("cpu.shares")), "512");
    // No memsw file (no swap accounting): the swap limit is skipped, not an error.
    fs::remove_file(m.join("memory.memsw.limit_in_bytes")).unwrap();
    cg.apply(&Resources {
        memory_limit: Some(1 << 30),
        memory_swap: Some(2 << 30),
        ..Resources::default()
    })
    .unwrap();
    assert!(!m.join("memory.memsw.limit_in_bytes").exists());
}

#[test]
fn v1_procs_freeze_stats() {
    let t = v1_tree();
    let r = t.path();
    let cg = Cgroup::resolve_in(r, SELF_V1, None, "c1", false).unwrap();
    cg.create().unwrap();
    cg.add_process(4242).unwrap();
    assert_eq!(read(r.join("freezer/runnc/c1/cgroup.procs")), "4242");
    assert_eq!(read(r.join("cpu,cpuacct/runnc/c1/cgroup.procs")), "4242");
    assert_eq!(cg.pids().unwrap(), vec![4242]);
    cg.set_frozen(true).unwrap();
    assert_eq!(read(r.join("freezer/runnc/c1/freezer.state")), "FROZEN");
    assert!(cg.is_frozen().unwrap());
    cg.set_frozen(false).unwrap();
    assert!(!cg.is_frozen().unwrap());
    fs::write(r.join("cpu,cpuacct/runnc/c1/cpuacct.usage"), "12345\n").unwrap();
    fs::write(r.join("memory/runnc/c1/memory.usage_in_bytes"), "4096\n").unwrap();
    fs::write(r.join("memory/runnc/c1/memory.limit_in_bytes"), "8192\n").unwrap();
    fs::write(r.join("pids/runnc/c1/pids.current"), "1\n").unwrap();
    fs::write(r.join("pids/runnc/c1/pids.max"), "max\n").unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(
        s,
        Stats {
            cpu_usage_ns: 12345,
            memory_usage: 4096,
            memory_limit: 8192,
            pids_current: 1,
            pids_limit: 0,
        }
    );
}

#[test]
fn remove_is_idempotent() {
    let t = v1_tree();
    let cg = Cgroup::resolve_in(t.path(), SELF_V1, None, "c1", false).unwrap();
    cg.remove().unwrap();
    for d in &cg.dirs {
        fs::create_dir_all(d.join("child")).unwrap();
    }
    cg.remove().unwrap();
    assert!(cg.dirs.iter().all(|d| !d.exists()));
    cg.remove().unwrap();
}

#[test]
fn v2_create_enables_controllers_and_apply_writes_files() {
    let t = v2_tree();
    let r = t.path();
    let cg = Cgroup::resolve_in(r, "0::/\n", Some("/k/c1"), "c1", false).unwrap();
    assert!(cg.unified);
    assert_eq!(cg.dirs, vec![r.join("k/c1")]);
    cg.create().unwrap();
    assert_eq!(
        read(r.join("cgroup.subtree_control")),
        "+cpu +cpuset +memory +pids"
    );
    assert_eq!(
        read(r.join("k/cgroup.subtree_control")),
        "+cpu +cpuset +memory +pids"
    );
    assert!(!r.join("k/c1/cgroup.subtree_control").exists());
    let d = r.join("k/c1");
    fs::write(d.join("memory.swap.max"), "max").unwrap();
    cg.apply(&Resources {
        memory_limit: Some(64 << 20),
        memory_swap: Some(96 << 20),
        cpu_shares: Some(1024),
        cpu_quota: Some(20_000),
        cpu_period: None,
        cpuset_cpus: Some("1".into()),
        pids_limit: Some(-1),
    })
    .unwrap();
    assert_eq!(read(d.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(d.join("memory.swap.max")), (32u64 << 20).to_string());
    assert_eq!(read(d.join("cpu.weight")), "39");
    assert_eq!(read(d.join("cpu.max")), "20000 100000");
    assert_eq!(read(d.join("cpuset.cpus")), "1");
    assert_eq!(read(d.join("pids.max")), "max");
    cg.apply(&Resources {
        memory_limit: Some(-1),
        memory_swap: Some(-1),
        cpu_quota: Some(-1),
        cpu_period: Some(50_000),
        pids_limit: Some(10),
        ..Resources::default()
    })
    .unwrap();
    assert_eq!(read(d.join("memory.max")), "max");
    assert_eq!(read(d.join("memory.swap.max")), "max");
    assert_eq!(read(d.join("cpu.max")), "max 50000");
    assert_eq!(read(d.join("pids.max")), "10");
    let e = cg
        .apply(&Resources {
            memory_limit: Some(100),
            memory_swap: Some(50),
            ..Resources::default()
        })
        .unwrap_err();
    assert!(matches!(e, Error::InvalidResources { .. }), "{e}");
}

#[test]
fn v2_relative_path_below_own_cgroup() {
    let t = v2_tree();
    let r = t.path();
    let cg = Cgroup::resolve_in(r, "0::/user.slice/me.scope\n", Some("sub"), "c1", false).unwrap();
    assert_eq!(cg.dirs, vec![r.join("user.slice/me.scope/sub")]);
}

#[test]
fn v2_freeze_kill_stats() {
    let t = v2_tree();
    let r = t.path();
    let cg = Cgroup::resolve_in(r, "0::/\n", None, "c1", false).unwrap();
    cg.create().unwrap();
    let d = r.join("runnc/c1");
    fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    cg.set_frozen(true).unwrap();
    assert_eq!(read(d.join("cgroup.freeze")), "1");
    assert!(cg.is_frozen().unwrap());
    fs::write(d.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    cg.set_frozen(false).unwrap();
    assert_eq!(read(d.join("cgroup.freeze")), "0");
    fs::write(d.join("cgroup.kill"), "0").unwrap();
    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(read(d.join("cgroup.kill")), "1");
    fs::write(d.join("cpu.stat"), "usage_usec 250\nuser_usec 200\n").unwrap();
    fs::write(d.join("memory.current"), "100\n").unwrap();
    fs::write(d.join("memory.max"), "max\n").unwrap();
    fs::write(d.join("pids.current"), "2\n").unwrap();
    fs::write(d.join("pids.max"), "50\n").unwrap();
    assert_eq!(
        cg.stats().unwrap(),
        Stats {
            cpu_usage_ns: 250_000,
            memory_usage: 100,
            memory_limit: u64::MAX,
            pids_current: 2,
            pids_limit: 50,
        }
    );
}

#[test]
fn weight_conversion_matches_runc() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
}
