//! `state`, `list`, `ps`.

use super::{Ctx, Error};
use crate::cli::{Format, List, Ps};
use crate::state::{State, Status, STATE_FILE};

/// `state ID`: runc's JSON.
pub fn state(ctx: &Ctx, id: &str) -> Result<(), Error> {
    let (_dir, st) = ctx.open(id)?;
    let json = st.runc_json(st.status());
    println!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    Ok(())
}

/// runnc's own containers (read without locks: state files are replaced atomically).
fn own(ctx: &Ctx) -> Vec<State> {
    let Ok(entries) = std::fs::read_dir(&ctx.root) else {
        return Vec::new();
    };
    let mut out: Vec<State> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read(e.path().join(STATE_FILE)).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// `list`: runnc's containers and runc's (under `<root>/.runc`).
pub fn list(ctx: &Ctx, l: &List) -> Result<(), Error> {
    let mut all: Vec<serde_json::Value> =
        own(ctx).iter().map(|s| s.runc_json(s.status())).collect();
    match crate::runc::list(&ctx.settings.runc, &ctx.root) {
        Ok(v) => all.extend(v),
        Err(e) => tracing::warn!("{e}"),
    }
    let field = |v: &serde_json::Value, k: &str| match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if l.quiet {
        for v in &all {
            println!("{}", field(v, "id"));
        }
        return Ok(());
    }
    match l.format {
        Format::Json => println!("{}", serde_json::Value::Array(all)),
        Format::Table => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for v in &all {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    field(v, "id"),
                    field(v, "pid"),
                    field(v, "status"),
                    field(v, "bundle"),
                    field(v, "created"),
                    field(v, "owner")
                );
            }
        }
    }
    Ok(())
}

/// The container's pids: the cgroup's, else the container process when alive.
pub fn pids(st: &State) -> Result<Vec<i32>, Error> {
    if let Some(cg) = &st.cgroup {
        return Ok(cg.pids()?);
    }
    Ok(if st.status() == Status::Stopped {
        Vec::new()
    } else {
        vec![st.pid]
    })
}

/// `ps ID`.
pub fn ps(ctx: &Ctx, p: &Ps) -> Result<(), Error> {
    let (_dir, st) = ctx.open(&p.id)?;
    let pids = pids(&st)?;
    match p.format {
        Format::Json => println!("{}", serde_json::to_string(&pids).unwrap_or_default()),
        Format::Table => {
            println!("{:>8} CMD", "PID");
            for pid in pids {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                println!("{pid:>8} {}", comm.trim());
            }
        }
    }
    Ok(())
}
