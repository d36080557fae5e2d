//! Ordinary (non-Septem) containers: the runc config.json of a sidecar, and ExecSync
//! through runc.
//!
//! The bundle starts as the Septem one (args, env, namespaces with the pod's netns,
//! cgroupsPath, resources, hostname) and is then made a standard runc container: no
//! `org.septem.*` annotations (so runnc hands it to runc), a writable rootfs, the
//! image's user and working directory, containerd's default capabilities, mounts and
//! masked paths, and the pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`.

use crate::images::ImageConfig;
use crate::runtime::{self, Error, Pod};
use k8s_cri::v1 as cri;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// containerd's default capabilities for a container.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The mounts every Linux container gets (runc's `spec` defaults).
fn default_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ]
}

/// Looks `name` up in the rootfs' `/etc/passwd` (or `/etc/group` with `group`): its
/// numeric id and, for a user, its primary group.
fn lookup(rootfs: &Path, file: &str, name: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(rootfs.join("etc").join(file)).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&name) || f.len() < 3 {
            return None;
        }
        let id = f[2].parse().ok()?;
        let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
        Some((id, gid))
    })
}

/// The image's `User` (`uid`, `uid:gid`, `name`, `name:group`) as numeric ids; names
/// come from the rootfs' `/etc/passwd` and `/etc/group`.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), Error> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            std::fs::read_to_string(rootfs.join("etc/passwd"))
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() > 3 && f[2].parse::<u32>().ok() == Some(uid))
                            .then(|| f[3].parse().ok())
                            .flatten()
                    })
                })
                .unwrap_or(0),
        ),
        Err(_) => lookup(rootfs, "passwd", u).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the image's user {u:?} is not in the image's /etc/passwd"
            ))
        })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(rootfs, "group", g)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "the image's group {g:?} is not in the image's /etc/group"
                        ))
                    })?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

fn bind(dest: &str, source: &Path, ro: bool) -> Value {
    json!({
        "destination": dest,
        "source": source,
        "type": "bind",
        "options": ["rbind", "rprivate", if ro { "ro" } else { "rw" }],
    })
}

/// Turns the Septem `spec` of container directory `dir` into an ordinary runc one.
pub fn adapt(
    spec: &mut Value,
    dir: &Path,
    rootfs: &Path,
    pod: &Pod,
    config: &cri::ContainerConfig,
    ic: &ImageConfig,
) -> Result<(), Error> {
    let internal = |what: &str, e: std::io::Error| Error::Internal(format!("{what}: {e}"));
    // No Septem annotation: runnc hands the bundle to runc.
    spec["annotations"] = json!({ "io.kubernetes.cri.sandbox-id": pod.id });
    spec["root"] = json!({ "path": "rootfs", "readonly": false });

    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let (mut uid, mut gid) = resolve_user(rootfs, &ic.user)?;
    if let Some(u) = sc.and_then(|s| s.run_as_user.as_ref()) {
        uid = u32::try_from(u.value)
            .map_err(|_| Error::InvalidArgument(format!("runAsUser {} is not a uid", u.value)))?;
    }
    if let Some(g) = sc.and_then(|s| s.run_as_group.as_ref()) {
        gid = u32::try_from(g.value)
            .map_err(|_| Error::InvalidArgument(format!("runAsGroup {} is not a gid", g.value)))?;
    }
    let process = &mut spec["process"];
    process["user"] = json!({ "uid": uid, "gid": gid });
    process["cwd"] = json!(if !config.working_dir.is_empty() {
        config.working_dir.as_str()
    } else if !ic.working_dir.is_empty() {
        ic.working_dir.as_str()
    } else {
        "/"
    });
    if let Some(env) = process["env"].as_array_mut() {
        if !env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("PATH=")))
        {
            env.insert(
                0,
                json!("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            );
        }
    }
    if process["args"].as_array().is_none_or(Vec::is_empty) {
        return Err(Error::InvalidArgument(
            "the container has nothing to run: the image has no Entrypoint or Cmd and the \
             request no command"
                .into(),
        ));
    }
    process["capabilities"] = json!({
        "bounding": CAPS, "effective": CAPS, "permitted": CAPS,
    });
    process["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }]);

    // The pod's hostname, hosts and resolv.conf.
    let hostname = spec["hostname"].as_str().unwrap_or_default().to_string();
    let hostname_file = dir.join("hostname");
    std::fs::write(&hostname_file, format!("{hostname}\n"))
        .map_err(|e| internal("writing hostname", e))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !pod.ip.is_empty() && !hostname.is_empty() {
        hosts += &format!("{}\t{hostname}\n", pod.ip);
    }
    let hosts_file = dir.join("hosts");
    std::fs::write(&hosts_file, hosts).map_err(|e| internal("writing hosts", e))?;
    let mut mounts = default_mounts();
    let theirs =
        runtime::mounts(dir, pod, config).map_err(|e| internal("writing resolv.conf", e))?;
    let has = |dest: &str| {
        theirs
            .iter()
            .any(|m| m["destination"].as_str() == Some(dest))
    };
    if !has("/etc/hostname") {
        mounts.push(bind("/etc/hostname", &hostname_file, false));
    }
    if !has("/etc/hosts") {
        mounts.push(bind("/etc/hosts", &hosts_file, false));
    }
    mounts.extend(theirs);
    spec["mounts"] = Value::Array(mounts);

    let linux = &mut spec["linux"];
    linux["maskedPaths"] = json!([
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]);
    linux["readonlyPaths"] = json!([
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]);
    devices(spec, config)
}

/// The request's devices as runc's: each host device node becomes an OCI
/// `linux.devices` entry at its container path (type, major/minor, mode and owner of
/// the node) and a cgroup rule allowing it with the request's permissions, after a
/// deny-all rule, as containerd does (runc appends its default devices after them).
pub fn devices(spec: &mut Value, config: &cri::ContainerConfig) -> Result<(), Error> {
    if config.devices.is_empty() {
        return Ok(());
    }
    let mut nodes = Vec::new();
    let mut rules = vec![json!({ "allow": false, "access": "rwm" })];
    for d in &config.devices {
        let node = DeviceNode::of(d)?;
        rules.push(json!({
            "allow": true,
            "type": node.kind,
            "major": node.major,
            "minor": node.minor,
            "access": node.access,
        }));
        nodes.push(json!({
            "path": d.container_path,
            "type": node.kind,
            "major": node.major,
            "minor": node.minor,
            "fileMode": node.mode,
            "uid": node.uid,
            "gid": node.gid,
        }));
    }
    let linux = &mut spec["linux"];
    linux["devices"] = Value::Array(nodes);
    if !linux["resources"].is_object() {
        linux["resources"] = json!({});
    }
    linux["resources"]["devices"] = Value::Array(rules);
    Ok(())
}

/// A host device node as runc wants it.
#[derive(Debug, PartialEq, Eq)]
struct DeviceNode {
    /// `b` or `c`.
    kind: &'static str,
    major: u64,
    minor: u64,
    /// Permission bits of the node.
    mode: u32,
    uid: u32,
    gid: u32,
    /// cgroup access (`rwm` letters).
    access: String,
}

impl DeviceNode {
    fn of(d: &cri::Device) -> Result<DeviceNode, Error> {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        let bad = |why: String| {
            Error::InvalidArgument(format!(
                "device {:?} → {:?}: {why}",
                d.host_path, d.container_path
            ))
        };
        if !d.container_path.starts_with('/') {
            return Err(bad("the container path must be absolute".into()));
        }
        let access = if d.permissions.is_empty() {
            "rwm".to_string()
        } else {
            d.permissions.clone()
        };
        if access.chars().any(|c| !"rwm".contains(c)) {
            return Err(bad(format!(
                "permissions {access:?} are not cgroup device permissions (letters of rwm)"
            )));
        }
        let meta = std::fs::metadata(&d.host_path).map_err(|e| bad(e.to_string()))?;
        let kind = if meta.file_type().is_block_device() {
            "b"
        } else if meta.file_type().is_char_device() {
            "c"
        } else {
            return Err(bad("the host path is not a device node".into()));
        };
        let rdev = meta.rdev();
        Ok(DeviceNode {
            kind,
            major: ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
            minor: (rdev & 0xff) | ((rdev >> 12) & !0xff),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            access,
        })
    }
}

/// What ExecSync ran.
#[derive(Debug)]
pub struct Exec {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit code (128+N when killed by signal N).
    pub exit_code: i32,
}

/// Why an ExecSync failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command did not finish in time (it and runc were killed).
    #[error("the command did not finish within {0:?} (killed)")]
    Timeout(Duration),
    /// runc could not be run.
    #[error("running runc exec: {0}")]
    Io(#[from] std::io::Error),
}

/// `runc --root <root> exec <id> <cmd…>` with a timeout (none when zero); on timeout
/// the command (by its pid file) and runc are killed.
pub fn exec_sync(
    runc: &Path,
    root: &Path,
    id: &str,
    dir: &Path,
    cmd: &[String],
    timeout: Duration,
) -> Result<Exec, ExecError> {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let pid_file = dir.join(format!(
        "exec-{}.pid",
        crate::util::random_id().map_err(ExecError::Io)?
    ));
    let mut c = Command::new(runc);
    c.arg("--root")
        .arg(root)
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = crate::reaper::spawn(&mut c)?;
    let pid = i32::try_from(child.id()).unwrap_or(-1);
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let limit = if timeout.is_zero() {
        crate::util::COMMAND_TIMEOUT * 30
    } else {
        timeout
    };
    let status = crate::util::wait_timeout(&mut child, limit);
    crate::reaper::forget(pid);
    let result = match status {
        Ok(s) => {
            let code = match s.code() {
                Some(c) => c,
                None => {
                    use std::os::unix::process::ExitStatusExt as _;
                    128 + s.signal().unwrap_or(0)
                }
            };
            Ok(Exec {
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
                exit_code: code,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            // runc is gone; the command it started may still run in the container.
            if let Some(p) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|p| *p > 0)
            {
                // SAFETY: kill(2) with a pid and a signal number; no pointers.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            Err(ExecError::Timeout(timeout))
        }
        Err(e) => Err(ExecError::Io(e)),
    };
    let _ = std::fs::remove_file(&pid_file);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_nodes_become_oci_devices_and_cgroup_rules() {
        let mut spec = json!({ "linux": { "resources": { "cpu": { "shares": 2 } } } });
        let config = cri::ContainerConfig {
            devices: vec![
                cri::Device {
                    container_path: "/dev/mynull".into(),
                    host_path: "/dev/null".into(),
                    permissions: "rw".into(),
                },
                cri::Device {
                    container_path: "/dev/z".into(),
                    host_path: "/dev/zero".into(),
                    permissions: String::new(),
                },
            ],
            ..Default::default()
        };
        devices(&mut spec, &config).unwrap();
        let linux = &spec["linux"];
        assert_eq!(linux["devices"][0]["path"], "/dev/mynull");
        assert_eq!(linux["devices"][0]["type"], "c");
        assert_eq!(linux["devices"][0]["major"], 1);
        assert_eq!(linux["devices"][0]["minor"], 3);
        assert_eq!(linux["devices"][1]["minor"], 5);
        let rules = &linux["resources"]["devices"];
        assert_eq!(rules[0], json!({ "allow": false, "access": "rwm" }));
        assert_eq!(
            rules[1],
            json!({ "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw" })
        );
        assert_eq!(rules[2]["access"], "rwm");
        assert_eq!(
            linux["resources"]["cpu"]["shares"], 2,
            "other resources kept"
        );

        let refuse = |host: &str, container: &str, perms: &str| {
            let config = cri::ContainerConfig {
                devices: vec![cri::Device {
                    container_path: container.into(),
                    host_path: host.into(),
                    permissions: perms.into(),
                }],
                ..Default::default()
            };
            match devices(&mut json!({ "linux": {} }), &config) {
                Err(Error::InvalidArgument(m)) => m,
                other => panic!("{host} {container} {perms}: {other:?}"),
            }
        };
        assert!(refuse("/etc/hostname", "/dev/x", "rw").contains("not a device node"));
        assert!(refuse("/dev/null", "dev/x", "rw").contains("absolute"));
        assert!(refuse("/dev/null", "/dev/x", "rwx").contains("rwm"));
        assert!(!refuse("/nonexistent", "/dev/x", "r").is_empty());
        let mut none = json!({ "linux": {} });
        devices(&mut none, &cri::ContainerConfig::default()).unwrap();
        assert!(none["linux"].get("devices").is_none());
    }

    #[test]
    fn users_resolve_numerically_and_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(root, "").unwrap(), (0, 0));
        assert_eq!(resolve_user(root, "1000").unwrap(), (1000, 0));
        assert_eq!(resolve_user(root, "33").unwrap(), (33, 34));
        assert_eq!(resolve_user(root, "1000:1001").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(root, "www").unwrap(), (33, 34));
        assert_eq!(resolve_user(root, "www:staff").unwrap(), (33, 50));
        assert!(matches!(
            resolve_user(root, "nobody"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve_user(root, "www:nogroup"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
