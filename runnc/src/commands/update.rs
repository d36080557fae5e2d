//! `update`: new cpu and pids limits for the cgroup; memory is refused (the guest's
//! memory is fixed when it boots).

use super::{io, Ctx, Error};
use crate::cli::Update;
use oci_spec::runtime::LinuxResources;
use std::io::Read as _;

const MEMORY: &str =
    "memory limits cannot be updated: not supported by unikernels: guest memory is fixed at boot";

/// `update`.
pub fn update(ctx: &Ctx, u: &Update) -> Result<(), Error> {
    if u.memory.is_some() || u.memory_swap.is_some() || u.memory_reservation.is_some() {
        return Err(Error::Refused(MEMORY.into()));
    }
    let mut r = crate::cgroup::Resources::default();
    if let Some(src) = &u.resources {
        let mut text = String::new();
        if src == "-" {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(io("cannot read resources from stdin"))?;
        } else {
            text = std::fs::read_to_string(src).map_err(io(format!("cannot read {src}")))?;
        }
        let lr: LinuxResources = serde_json::from_str(&text)
            .map_err(|e| Error::Refused(format!("invalid resources JSON: {e}")))?;
        r = crate::bundle::plan::resources(Some(&lr));
        if r.memory_limit.is_some() || r.memory_swap.is_some() {
            return Err(Error::Refused(MEMORY.into()));
        }
    }
    r.cpu_quota = u.cpu_quota.or(r.cpu_quota);
    r.cpu_period = u.cpu_period.or(r.cpu_period);
    r.cpu_shares = u.cpu_shares.or(r.cpu_shares);
    r.cpuset_cpus = u.cpuset_cpus.clone().or(r.cpuset_cpus);
    r.pids_limit = u.pids_limit.or(r.pids_limit);
    let (_dir, st) = ctx.open(&u.id)?;
    let Some(cg) = &st.cgroup else {
        return Err(Error::Refused(format!("container {} has no cgroup", u.id)));
    };
    cg.apply(&r)?;
    Ok(())
}
