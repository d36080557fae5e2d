//! Pod start latency through CRI (issue #8's benchmark): RunPodSandbox →
//! CreateContainer → StartContainer → first HTTP 200 at the pod IP, timed by this
//! client, for
//! (a) septem-cri with the `httpd` unikernel (handlers `septem-seccomp`, `septem-kvm`),
//! (b) containerd's CRI with runnc as the handler `septem` and the same image (backend
//!     by the pod annotation `org.septem.runnc.backend`),
//! (c) containerd's CRI with runc (the default handler) and a busybox httpd
//!     (`busybox httpd -f -p 80 -h /www`),
//! N pods each, one at a time, each stopped and removed before the next; the
//! configurations take turns (round-robin) so load changes hit all alike. Images are
//! pulled before timing. Prints median, mean, min, max and the median ratio against (c).
//!
//!   cargo run --release -p septem-tests --example cri_bench -- [PODS] [ONLY]   (root; bench/cri.sh)
//!
//! `ONLY` (e.g. `septem-cri`) keeps the configurations whose label contains it, for
//! profiling one path; without containerd + runc among them, ratios are against the
//! last one kept and no target verdict is printed.
//! `CRI_BENCH_KEEP=1` keeps the servers' directories (logs, state) and prints where.

use k8s_cri::v1 as cri;
use septem_tests::call;
use septem_tests::cri::{
    container_config, pod_config, push_busybox_image, push_example, push_pause_image,
    skip_lifecycle, write_bridge_conflist, Bridge, Clients, ContainerdCri, Registry, Server,
};
use septem_tests::{bin, kvm_usable};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

struct Config {
    label: &'static str,
    clients: usize,
    handler: &'static str,
    image: String,
    backend: Option<&'static str>,
    samples: Vec<Duration>,
    /// Per pod: RunPodSandbox (+ status), CreateContainer, StartContainer, to 200.
    phases: Vec<[Duration; 4]>,
}

/// How long one probe waits for the answer's first bytes .
const READ_TIMEOUT_MS: u64 = 1000;

/// True once `GET /` at `ip:80` answers 200.
fn http_200(ip: &str) -> bool {
    let addr: SocketAddr = format!("{ip}:80").parse().expect("pod address");
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(READ_TIMEOUT_MS)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// One pod: returns the time from RunPodSandbox to the first 200, then removes it.
fn one_pod(c: &Clients, cfg: &Config, n: usize, log_dir: &Path) -> (Duration, [Duration; 4]) {
    let name = format!("bench-{}-{n}", cfg.clients);
    let mut sandbox = pod_config(&name, log_dir);
    sandbox.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: "/septem-cri-bench".into(),
        ..Default::default()
    });
    if let Some(b) = cfg.backend {
        sandbox.annotations = [("org.septem.runnc.backend".to_string(), b.to_string())].into();
    }
    let t0 = Instant::now();
    let pod_id = c.run_pod(&sandbox, cfg.handler);
    let ip = c.pod_ip(&pod_id);
    let t_run = t0.elapsed();
    let cid = c.create(
        &pod_id,
        &sandbox,
        cri::ContainerConfig {
            log_path: format!("httpd-{n}.log"),
            ..container_config("httpd", &cfg.image)
        },
    );
    let t_create = t0.elapsed();
    c.start(&cid);
    let t_start = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_200(&ip) {
        assert!(
            Instant::now() < deadline,
            "{}: no 200 from {ip} in 30 s",
            cfg.label
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = t0.elapsed();
    call!(
        c,
        runtime.stop_container(cri::StopContainerRequest {
            container_id: cid.clone(),
            timeout: 1,
        })
    )
    .expect("StopContainer");
    call!(
        c,
        runtime.remove_container(cri::RemoveContainerRequest { container_id: cid })
    )
    .expect("RemoveContainer");
    call!(
        c,
        runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
    )
    .expect("StopPodSandbox");
    call!(
        c,
        runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
    )
    .expect("RemovePodSandbox");
    (
        took,
        [t_run, t_create - t_run, t_start - t_create, took - t_start],
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let pods: usize = std::env::args()
        .nth(1)
        .map_or(10, |a| a.parse().expect("PODS: a number"));
    if skip_lifecycle() {
        std::process::exit(1);
    }
    let mut tmp = tempfile::tempdir().expect("tempdir");
    let keep = std::env::var_os("CRI_BENCH_KEEP").is_some();
    if keep {
        // The servers' logs and state stay for a look (printed at the end).
        tmp.disable_cleanup(true);
    }
    let reg = Registry::start();
    let httpd = push_example(&reg, "httpd");
    let pause = push_pause_image(&reg, tmp.path());
    let busybox_httpd = push_busybox_image(
        &reg,
        tmp.path(),
        "bbhttpd",
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );

    // (a) septem-cri.
    let sdir = tmp.path().join("septem-cri");
    std::fs::create_dir_all(&sdir).expect("mkdir");
    let mut server = Server::new(&sdir);
    let sbridge = Bridge(format!("sptbs{}", std::process::id() % 10_000));
    write_bridge_conflist(
        &server.cni_conf,
        "septem-bench-a",
        &sbridge.0,
        "10.95.1.0/24",
        &sdir.join("ipam"),
    );
    server.start();
    let septem = server.clients();
    septem.pull(&httpd);

    // (b), (c) containerd.
    let cdir = tmp.path().join("containerd");
    std::fs::create_dir_all(&cdir).expect("mkdir");
    let mut ctrd = ContainerdCri::new(&cdir);
    let cbridge = Bridge(format!("sptbc{}", std::process::id() % 10_000));
    write_bridge_conflist(
        &ctrd.cni_conf,
        "septem-bench-c",
        &cbridge.0,
        "10.95.2.0/24",
        &cdir.join("ipam"),
    );
    ctrd.start(&reg.addr, &pause, &bin("runnc"));
    let containerd = ctrd.clients();
    for image in [&httpd, &pause, &busybox_httpd] {
        containerd.pull(image);
    }
    let all = [&septem, &containerd];

    let kvm = kvm_usable().is_ok();
    let mut configs = vec![Config {
        label: "septem-cri, httpd unikernel (seccomp)",
        clients: 0,
        handler: "septem-seccomp",
        image: httpd.clone(),
        backend: None,
        samples: vec![],
        phases: vec![],
    }];
    if kvm {
        configs.push(Config {
            label: "septem-cri, httpd unikernel (kvm)",
            clients: 0,
            handler: "septem-kvm",
            image: httpd.clone(),
            backend: None,
            samples: vec![],
            phases: vec![],
        });
    }
    configs.push(Config {
        label: "containerd + runnc, httpd unikernel (seccomp)",
        clients: 1,
        handler: "septem",
        image: httpd.clone(),
        backend: Some("seccomp"),
        samples: vec![],
        phases: vec![],
    });
    if kvm {
        configs.push(Config {
            label: "containerd + runnc, httpd unikernel (kvm)",
            clients: 1,
            handler: "septem",
            image: httpd.clone(),
            backend: Some("kvm"),
            samples: vec![],
            phases: vec![],
        });
    }
    configs.push(Config {
        label: "containerd + runc, busybox httpd",
        clients: 1,
        handler: "",
        image: busybox_httpd.clone(),
        backend: None,
        samples: vec![],
        phases: vec![],
    });
    if let Some(only) = std::env::args().nth(2) {
        configs.retain(|c| c.label.contains(&only));
        assert!(
            !configs.is_empty(),
            "no configuration's label contains {only:?}"
        );
    }
    let log_dir = tmp.path().join("logs");
    // One warm-up pod each (not counted), then the rounds.
    for n in 0..=pods {
        for cfg in &mut configs {
            let (took, phases) = one_pod(all[cfg.clients], cfg, n, &log_dir.join(n.to_string()));
            if n > 0 {
                cfg.samples.push(took);
                cfg.phases.push(phases);
            }
        }
        if n > 0 {
            eprint!("\rround {n}/{pods}");
        }
    }
    eprintln!();
    let base_cfg = configs.last().expect("a configuration");
    let base = {
        let mut s = base_cfg.samples.clone();
        s.sort();
        s[s.len() / 2]
    };
    let base_label = base_cfg.label;
    // Against containerd + runc unless ONLY left it out.
    let against_runc = base_label.starts_with("containerd + runc,");
    let ratio_column = if against_runc {
        "runc/this"
    } else {
        "last/this"
    };
    println!(
        "pod start → first HTTP 200, {pods} pods each (kvm {}):",
        if kvm { "usable" } else { "not usable" }
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "configuration", "median", "mean", "min", "max", ratio_column
    );
    for cfg in &configs {
        let mut s = cfg.samples.clone();
        s.sort();
        let median = s[s.len() / 2];
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        println!(
            "{:<48} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>8.2}x",
            cfg.label,
            ms(median),
            ms(mean),
            ms(s[0]),
            ms(s[s.len() - 1]),
            ms(base) / ms(median)
        );
    }
    println!(
        "\nmedian per phase: {:<32} {:>9} {:>9} {:>9} {:>9}",
        "", "RunPod", "Create", "Start", "to 200"
    );
    for cfg in &configs {
        let phase = |i: usize| {
            let mut s: Vec<Duration> = cfg.phases.iter().map(|p| p[i]).collect();
            s.sort();
            ms(s[s.len() / 2])
        };
        println!(
            "{:<50} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms",
            cfg.label,
            phase(0),
            phase(1),
            phase(2),
            phase(3)
        );
    }
    println!("\nslowest pod per configuration (RunPod, Create, Start, to 200):");
    for cfg in &configs {
        if let Some(p) = cfg.phases.iter().max_by_key(|p| p.iter().sum::<Duration>()) {
            println!(
                "{:<50} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms",
                cfg.label,
                ms(p[0]),
                ms(p[1]),
                ms(p[2]),
                ms(p[3])
            );
        }
    }
    println!();
    for cfg in &configs[..configs.len() - 1] {
        let mut s = cfg.samples.clone();
        s.sort();
        let ratio = ms(base) / ms(s[s.len() / 2]);
        let verdict = match (against_runc, ratio >= 4.0) {
            (false, _) => "",
            (true, true) => " (target >= 4x: met)",
            (true, false) => " (target >= 4x: missed)",
        };
        println!(
            "{}: {ratio:.1}x faster than {base_label}{verdict}",
            cfg.label
        );
    }
    if keep {
        println!("kept: {}", tmp.path().display());
    }
    drop(septem);
    drop(containerd);
    let _ = server.stop();
    drop(ctrd);
    for dir in ["/sys/fs/cgroup"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join("septem-cri-bench"));
            }
        }
        let _ = std::fs::remove_dir(Path::new(dir).join("septem-cri-bench"));
    }
}
