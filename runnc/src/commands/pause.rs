//! `pause` / `resume`: freeze or thaw the container's cgroup.

use super::{Ctx, Error};
use crate::state::Status;

/// `pause ID` (`freeze` true) or `resume ID`.
pub fn pause(ctx: &Ctx, id: &str, freeze: bool) -> Result<(), Error> {
    let (_dir, st) = ctx.open(id)?;
    let Some(cg) = &st.cgroup else {
        return Err(Error::Refused(format!(
            "container {id} has no cgroup to freeze"
        )));
    };
    match (st.status(), freeze) {
        (Status::Running, true) | (Status::Paused, false) => {}
        (s, true) => {
            return Err(Error::Refused(format!(
                "container {id} is not running: {}",
                s.name()
            )))
        }
        (s, false) => {
            return Err(Error::Refused(format!(
                "container {id} is not paused: {}",
                s.name()
            )))
        }
    }
    cg.set_frozen(freeze)?;
    Ok(())
}
