//! `create`: set up everything, fork the container process, place it in its cgroup,
//! run the create hooks, release it (it executes septem-run, which sets the guest up
//! and waits at the exec fifo for `start`), record the state, write the pid file. Any
//! failure undoes what was done.

use super::{io, teardown, Ctx, Error};
use crate::bundle::plan::{plan, NetMode, Plan};
use crate::bundle::{self, Bundle};
use crate::cgroup::Cgroup;
use crate::cli::Create;
use crate::state::{self, proc, Dir, State, EXEC_FIFO, NETNS_FILE};
use crate::{hooks, network, process};
use std::os::fd::OwnedFd;
use std::path::Path;

/// A created container (its directory still locked).
#[derive(Debug)]
pub struct Created {
    /// The locked directory.
    pub dir: Dir,
    /// Its state.
    pub state: State,
    /// The parsed config (for hooks).
    pub spec: oci_spec::runtime::Spec,
}

/// `create` (also the first half of `run`).
pub fn create(ctx: &Ctx, c: &Create) -> Result<Created, Error> {
    match create_in_process(ctx, c)? {
        Some(created) => Ok(created),
        None => Err(ctx.forward()),
    }
}

/// `create` for a library caller (septem-cri's shim, in its own process): the same as
/// the command for a Septem bundle; None for any other bundle, which the caller hands
/// to the runnc binary (runnc would replace the calling process with runc). Nothing has
/// been done when it returns None. The returned [`Created`] holds the container's
/// lock: drop it before anything else touches the container.
pub fn create_in_process(ctx: &Ctx, c: &Create) -> Result<Option<Created>, Error> {
    state::check_id(&c.id)?;
    let bundle = match bundle::load(&c.bundle) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(bundle::Error::Config { path, source }) => {
            tracing::debug!("{}: {source}; handing the bundle to runc", path.display());
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if crate::runc::runc_root(&ctx.root).join(&c.id).exists() {
        return Err(state::Error::Exists(c.id.clone()).into());
    }
    let plan = plan(&bundle, &ctx.settings.backend)?;
    if !ctx.settings.septem_run.is_file() {
        return Err(Error::Refused(format!(
            "septem-run not found at {}: install it next to runnc, or set septem_run in {} or RUNNC_SEPTEM_RUN",
            ctx.settings.septem_run.display(),
            crate::settings::DEFAULT_CONFIG
        )));
    }
    let dir = Dir::create(&ctx.root, &c.id)?;
    let mut st = State {
        id: c.id.clone(),
        pid: 0,
        pid_start_time: 0,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: crate::time::now_rfc3339(),
        annotations: bundle.annotations.clone(),
        argv: Vec::new(),
        cgroup: None,
        wiring: None,
        own_netns: false,
        started: false,
    };
    match build(ctx, c, &bundle, &plan, &dir, &mut st) {
        Ok(()) => Ok(Some(Created {
            dir,
            state: st,
            spec: bundle.spec,
        })),
        Err(e) => {
            tracing::debug!("create of {} failed, undoing: {e}", c.id);
            if let Err(undo) = teardown(dir, &st) {
                tracing::warn!("undoing the failed create of {}: {undo}", c.id);
            }
            Err(e)
        }
    }
}

fn cgroup_for(ctx: &Ctx, id: &str, plan: &Plan) -> Result<Option<Cgroup>, Error> {
    Ok(Some(Cgroup::resolve(
        plan.cgroups_path.as_deref(),
        id,
        ctx.systemd,
    )?))
}

fn open_ns(path: &Path) -> Result<OwnedFd, Error> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(io(format!(
            "cannot open network namespace {}",
            path.display()
        )))
}

fn build(
    ctx: &Ctx,
    c: &Create,
    bundle: &Bundle,
    plan: &Plan,
    dir: &Dir,
    st: &mut State,
) -> Result<(), Error> {
    dir.save(st)?;
    let mut primer = None;
    if let Some(cg) = cgroup_for(ctx, &c.id, plan)? {
        st.cgroup = Some(cg.clone());
        dir.save(st)?;
        cg.create()?;
        cg.apply(&plan.resources)?;
        // After the mkdirs (the priming write holds the cgroup mutex while it waits):
        // the grace period the first move waits for passes while the network is wired.
        primer = crate::cgroup::prime::start();
    }

    let mut unshare_flags = plan.unshare_flags;
    let mut netns_fd = None;
    match &plan.net {
        NetMode::Host => {}
        NetMode::Join(path) => {
            if !plan.net_devices.is_empty() {
                st.wiring = Some(network::wire(path, &plan.net_devices)?);
                dir.save(st)?;
            }
            netns_fd = Some(open_ns(path)?);
        }
        NetMode::New if plan.net_devices.is_empty() => unshare_flags |= libc::CLONE_NEWNET,
        NetMode::New => {
            let path = dir.path.join(NETNS_FILE);
            st.own_netns = true;
            dir.save(st)?;
            crate::netns::create(&path)?;
            st.wiring = Some(network::wire(&path, &plan.net_devices)?);
            dir.save(st)?;
            netns_fd = Some(open_ns(&path)?);
        }
    }

    let fifo = dir.path.join(EXEC_FIFO);
    st.argv = plan.argv(&ctx.settings.septem_run, st.wiring.as_ref(), &fifo);
    tracing::debug!("septem-run argv for {}: {:?}", c.id, st.argv);

    let console = if plan.terminal {
        match &c.console_socket {
            Some(sock) => Some(process::console::setup(sock)?),
            None => {
                return Err(Error::Refused(
                    "process.terminal is true but no --console-socket was given".into(),
                ))
            }
        }
    } else {
        None
    };
    let mut child = process::Prepared::new(&st.argv, &process::monitor_env(), &fifo)?;
    child.netns = netns_fd;
    child.unshare_flags = unshare_flags;
    child.console = console;
    child.preserve_fds = c.preserve_fds;
    child.close_first = dir.lock_fd();
    let pid = child.spawn()?;
    st.pid = pid;
    st.pid_start_time = proc::start_time(pid)
        .ok_or_else(|| Error::Refused(format!("the container process {pid} died at once")))?;
    dir.save(st)?;
    if let Some(cg) = &st.cgroup {
        if let Some(p) = primer {
            p.finish();
        }
        cg.add_process(pid)?;
    }

    let json = st.oci_json(state::Status::Created);
    if let Some(h) = bundle.spec.hooks() {
        hooks::run("createRuntime", h.create_runtime().as_ref(), &json)?;
        #[allow(deprecated)]
        hooks::run("prestart", h.prestart().as_ref(), &json)?;
        hooks::run("createContainer", h.create_container().as_ref(), &json)?;
    }
    // In its cgroup, hooks done: septem-run may start setting the guest up.
    child.release()?;
    drop(child);
    if let Some(pid_file) = &c.pid_file {
        let pid_file = bundle::absolute(pid_file);
        state::write_atomic(&pid_file, pid.to_string().as_bytes())?;
    }
    Ok(())
}
