//! Arguments and environment, as the monitor passed them in `BootInfo`.
//!
//! The strings live in guest memory for the guest's whole life, so they are
//! `&'static str`. Entries that are not valid UTF-8 are skipped (as are environment
//! entries without `=` or with an empty key).

use crate::boot;
use septem_abi::{BootStr, GuestAddr};

fn table(addr: GuestAddr, count: u64) -> &'static [BootStr] {
    if addr.is_null() || count == 0 {
        return &[];
    }
    // SAFETY: the monitor's contract (abi/src/boot.rs) is that `argv`/`envp` point at
    // `argc`/`envc` BootStr entries in guest memory that live as long as the guest and
    // are never written again.
    unsafe { core::slice::from_raw_parts(addr.raw() as *const BootStr, count as usize) }
}

fn boot_str(s: &BootStr) -> Option<&'static str> {
    if s.len == 0 {
        return Some("");
    }
    if s.addr.is_null() {
        return None;
    }
    // SAFETY: as for `table`: each entry describes `len` bytes of immutable guest
    // memory that live as long as the guest.
    let bytes = unsafe { core::slice::from_raw_parts(s.addr.raw() as *const u8, s.len as usize) };
    core::str::from_utf8(bytes).ok()
}

/// Iterator over the strings of a boot table, skipping invalid ones.
#[derive(Clone, Debug)]
pub struct Strings {
    rest: core::slice::Iter<'static, BootStr>,
}

impl Iterator for Strings {
    type Item = &'static str;

    fn next(&mut self) -> Option<&'static str> {
        self.rest.by_ref().find_map(boot_str)
    }
}

/// The arguments; the first is the image name.
#[must_use]
pub fn args() -> Strings {
    let t = boot::boot_info().map_or(&[][..], |b| table(b.argv, b.argc));
    Strings { rest: t.iter() }
}

/// Splits `KEY=VALUE` at the first `=`; `None` without `=` or with an empty key.
#[must_use]
pub fn split_entry(entry: &str) -> Option<(&str, &str)> {
    let (k, v) = entry.split_once('=')?;
    (!k.is_empty()).then_some((k, v))
}

/// Iterator over the environment's `(key, value)` pairs.
#[derive(Clone, Debug)]
pub struct Vars {
    inner: Strings,
}

impl Iterator for Vars {
    type Item = (&'static str, &'static str);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.by_ref().find_map(split_entry)
    }
}

/// The environment, in the order the monitor passed it.
#[must_use]
pub fn vars() -> Vars {
    let t = boot::boot_info().map_or(&[][..], |b| table(b.envp, b.envc));
    Vars {
        inner: Strings { rest: t.iter() },
    }
}

/// Same as [`vars`].
#[must_use]
pub fn env() -> Vars {
    vars()
}

/// The value of environment variable `key` (the last one if repeated).
#[must_use]
pub fn var(key: &str) -> Option<&'static str> {
    vars().filter(|(k, _)| *k == key).map(|(_, v)| v).last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use std::vec::Vec;

    #[test]
    fn split() {
        assert_eq!(split_entry("A=b=c"), Some(("A", "b=c")));
        assert_eq!(split_entry("A="), Some(("A", "")));
        assert_eq!(split_entry("=x"), None);
        assert_eq!(split_entry("x"), None);
    }

    #[test]
    fn args_and_env_from_boot_info() {
        testing::install();
        let a: Vec<_> = args().collect();
        assert_eq!(a, ["image", "one", "three"]);
        let e: Vec<_> = vars().collect();
        assert_eq!(e, [("HOME", "/"), ("EMPTY", ""), ("A", "b=c")]);
        assert_eq!(var("HOME"), Some("/"));
        assert_eq!(var("EMPTY"), Some(""));
        assert_eq!(var("NOEQUALS"), None);
        assert_eq!(var("nope"), None);
    }
}
