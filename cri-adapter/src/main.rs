//! septem-cri: a Kubernetes CRI v1 server (runtime and image services) that runs pods as
//! Septem unikernels: a pod is a network namespace wired by CNI, a container is a runnc
//! bundle running under septem-run (docs/cri.md).

mod cni;
mod config;
#[cfg(test)]
mod deploy_tests;
mod images;
mod logs;
mod netns;
mod ordinary;
mod reaper;
mod runtime;
mod service;
mod shim;
mod unpack;
mod util;

use anyhow::Context as _;
use clap::Parser;
use config::{Config, FileConfig};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use std::path::PathBuf;
use std::sync::Arc;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "septem-cri",
    version,
    about = "A Kubernetes CRI v1 server that runs pods as Septem unikernels (through runnc, with CNI networking)."
)]
struct Args {
    /// TOML configuration file (optional when it is the default and absent).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket to serve on [default: /run/septem/cri.sock].
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// State directory (images, pods, containers) [default: /var/lib/septem-cri].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// CNI configuration directory [default: /etc/cni/net.d].
    #[arg(long, value_name = "DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directories, colon-separated [default: /usr/lib/cni].
    #[arg(long, value_name = "DIRS")]
    cni_bin_dir: Option<String>,
    /// The runnc binary [default: next to septem-cri, else on PATH].
    #[arg(long, value_name = "FILE")]
    runnc: Option<PathBuf>,
    /// The runc binary runnc hands ordinary bundles to [default: runnc's choice].
    #[arg(long, value_name = "FILE")]
    runc: Option<PathBuf>,
    /// Backend of the `septem` runtime handler: auto, kvm or seccomp [default: auto].
    #[arg(long, value_name = "BACKEND")]
    default_backend: Option<String>,
    /// An image reported as pinned (kept by the kubelet's image GC, RemoveImage refused);
    /// repeatable, replaces the file's `pinned-images`.
    #[arg(long = "pinned-image", value_name = "REF")]
    pinned_images: Vec<String>,
}

fn settings(args: Args) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p, false)?,
        None => FileConfig::load(std::path::Path::new(config::DEFAULT_CONFIG), true)?,
    };
    let backend = args
        .default_backend
        .or(file.default_backend)
        .unwrap_or_else(|| "auto".into());
    Ok(Config {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| config::DEFAULT_LISTEN.into()),
        state_dir: args
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| config::DEFAULT_STATE_DIR.into()),
        cni_conf_dir: args
            .cni_conf_dir
            .or(file.cni_conf_dir)
            .unwrap_or_else(|| config::DEFAULT_CNI_CONF_DIR.into()),
        cni_bin_dir: args
            .cni_bin_dir
            .or(file.cni_bin_dir)
            .unwrap_or_else(|| config::DEFAULT_CNI_BIN_DIR.into()),
        runnc: args
            .runnc
            .or(file.runnc)
            .unwrap_or_else(config::default_runnc),
        runc: args.runc.or(file.runc),
        default_backend: config::check_backend(&backend)?,
        pinned_images: if args.pinned_images.is_empty() {
            file.pinned_images.unwrap_or_default()
        } else {
            args.pinned_images
        },
    })
}

/// One septem-cri per state directory: an exclusive `flock` on `<state>/lock`, held
/// for the life of the process.
fn lock_state_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no pointers.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "{} is in use by another septem-cri ({})",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(file)
}

async fn shutdown_signal(rt: Arc<runtime::Runtime>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name}: shutting down (no new connections; in-flight calls finish)");
    rt.close_events();
}

fn main() -> anyhow::Result<()> {
    // The per-container shim is this binary in a hidden mode (shim.rs): no new path to
    // configure, and it never goes through clap, the config file or tracing.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == shim::ARG) {
        std::process::exit(shim::main(&argv[2..]));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEPTEM_CRI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = settings(Args::parse())?;
    let _lock = lock_state_dir(&config.state_dir)?;
    reaper::init().context("becoming a child subreaper")?;
    let rt = runtime::Runtime::open(config.clone())?;
    rt.images.pin(&config.pinned_images)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    tokio.block_on(serve(config, rt))
}

async fn serve(config: Config, rt: Arc<runtime::Runtime>) -> anyhow::Result<()> {
    let sock = &config.listen;
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(sock) {
        Ok(()) => tracing::info!("replaced a stale socket {}", sock.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", sock.display())),
    }
    let listener = tokio::net::UnixListener::bind(sock)
        .with_context(|| format!("listening on {}", sock.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Like containerd's socket: owner and group only.
        std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("chmod {}", sock.display()))?;
    }
    tracing::info!(
        socket = %sock.display(),
        state = %config.state_dir.display(),
        runnc = %config.runnc.display(),
        backend = %config.default_backend,
        "septem-cri serving CRI v1"
    );
    let svc = Arc::new(service::Cri::new(Arc::clone(&rt)));
    let result = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::from_arc(Arc::clone(&svc)))
        .add_service(ImageServiceServer::from_arc(svc))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown_signal(rt),
        )
        .await;
    let _ = std::fs::remove_file(sock);
    result.context("serving gRPC")?;
    tracing::info!("stopped");
    Ok(())
}
