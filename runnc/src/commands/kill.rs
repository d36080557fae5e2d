//! `kill ID [SIGNAL] [--all]`.

use super::{io, Ctx, Error};
use crate::cli::Kill;
use crate::state::Status;

/// `kill`.
pub fn kill(ctx: &Ctx, k: &Kill) -> Result<(), Error> {
    let (_dir, st) = ctx.open(&k.id)?;
    let sig = crate::signal::parse(&k.signal)?;
    if st.status() == Status::Stopped {
        return Err(Error::Refused("container not running".into()));
    }
    if k.all {
        if let Some(cg) = &st.cgroup {
            cg.kill_all(sig)?;
            return Ok(());
        }
    }
    // SAFETY: kill has no memory preconditions; the pid was checked against its start
    // time just above.
    if unsafe { libc::kill(st.pid, sig) } != 0 {
        return Err(io(format!("cannot signal process {}", st.pid))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
