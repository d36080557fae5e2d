//! Ingress qdiscs and the match-all redirect filter, as `tc` sends them:
//!
//! ```text
//! tc qdisc add dev X ingress
//! tc qdisc del dev X ingress
//! tc filter add dev X parent ffff: protocol all u32 match u32 0 0 \
//!     action mirred egress redirect dev Y
//! ```
//!
//! (u32 with a zero mask matches everything; this kernel has no `matchall`.)

use super::message::{self, c_str, u32_at, Message};
use super::{change_flags, dump_flags, Error, Socket, CREATE_EXCL};

/// The size of `struct tcmsg` (family, 3 pad bytes, ifindex, handle, parent, info).
const TCMSG_LEN: usize = 20;
/// `TC_H_INGRESS`: the ingress qdisc's parent.
const TC_H_INGRESS: u32 = 0xffff_fff1;
/// `ffff:0`, the ingress qdisc's handle (and the parent of its filters).
const INGRESS_HANDLE: u32 = 0xffff_0000;
/// `TCA_KIND`, `TCA_OPTIONS` of qdisc and filter messages.
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
/// u32 classifier options (`TCA_U32_*`).
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
/// `TC_U32_TERMINAL`: a matching key runs the actions (rather than following a link).
const TC_U32_TERMINAL: u8 = 1;
/// Action attributes (`TCA_ACT_*`).
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
/// `TCA_MIRRED_PARMS`: a `struct tc_mirred`.
const TCA_MIRRED_PARMS: u16 = 2;
/// `TCA_EGRESS_REDIR`: send the packet out of the target device, once.
const TCA_EGRESS_REDIR: i32 = 1;
/// `TC_ACT_STOLEN`: the packet is consumed (what `tc` sets for `redirect`).
const TC_ACT_STOLEN: i32 = 4;
/// `ETH_P_ALL` in network byte order, as `tcm_info`'s low 16 bits want it.
const PROTOCOL_ALL: u16 = (libc::ETH_P_ALL as u16).to_be();

/// The `tcmsg` header.
fn tcmsg(m: &mut Message, ifindex: u32, handle: u32, parent: u32, info: u32) {
    m.u8(libc::AF_UNSPEC as u8)
        .u8(0)
        .u16(0)
        .u32(ifindex)
        .u32(handle)
        .u32(parent)
        .u32(info);
}

/// Adds an ingress qdisc to link `ifindex`; fails if there is one (`EEXIST`).
pub(crate) fn add_ingress(sock: &mut Socket, ifindex: u32) -> Result<(), Error> {
    let mut m = Message::new(libc::RTM_NEWQDISC, change_flags(CREATE_EXCL));
    tcmsg(&mut m, ifindex, INGRESS_HANDLE, TC_H_INGRESS, 0);
    m.attr_str(TCA_KIND, "ingress");
    sock.change(m)
}

/// Deletes link `ifindex`'s ingress qdisc, with its filters.
pub(crate) fn delete_ingress(sock: &mut Socket, ifindex: u32) -> Result<(), Error> {
    let mut m = Message::new(libc::RTM_DELQDISC, change_flags(0));
    tcmsg(&mut m, ifindex, INGRESS_HANDLE, TC_H_INGRESS, 0);
    m.attr_str(TCA_KIND, "ingress");
    sock.change(m)
}

/// Whether link `ifindex` has an ingress qdisc (`RTM_GETQDISC` dump).
pub(crate) fn has_ingress(sock: &mut Socket, ifindex: u32) -> Result<bool, Error> {
    let mut found = false;
    sock.dump(
        || {
            let mut m = Message::new(libc::RTM_GETQDISC, dump_flags());
            tcmsg(&mut m, 0, 0, 0, 0);
            m
        },
        |kind, payload| {
            found |= kind == libc::RTM_NEWQDISC && is_ingress_of(payload, ifindex);
        },
    )?;
    Ok(found)
}

fn is_ingress_of(payload: &[u8], ifindex: u32) -> bool {
    u32_at(payload, 4) == Some(ifindex)
        && payload
            .get(TCMSG_LEN..)
            .and_then(|a| message::attr(a, TCA_KIND))
            .and_then(c_str)
            .as_deref()
            == Some("ingress")
}

/// Adds to link `from`'s ingress qdisc a u32 filter matching every frame, with a mirred
/// action redirecting it out of link `to`. Priority 0: the kernel picks one (49152
/// for the first filter, as with `tc` without `pref`).
pub(crate) fn add_redirect(sock: &mut Socket, from: u32, to: u32) -> Result<(), Error> {
    sock.change(redirect_message(from, to))
}

fn redirect_message(from: u32, to: u32) -> Message {
    let mut m = Message::new(libc::RTM_NEWTFILTER, change_flags(CREATE_EXCL));
    tcmsg(&mut m, from, 0, INGRESS_HANDLE, u32::from(PROTOCOL_ALL));
    m.attr_str(TCA_KIND, "u32");
    m.begin_nest(TCA_OPTIONS);
    m.attr(TCA_U32_SEL, &match_all_selector());
    m.begin_nest(TCA_U32_ACT);
    m.begin_nest(1); // the first action of the list
    m.attr_str(TCA_ACT_KIND, "mirred");
    m.begin_nest(TCA_ACT_OPTIONS);
    m.attr(TCA_MIRRED_PARMS, &mirred_redirect(to));
    m.end_nest().end_nest().end_nest().end_nest();
    m
}

/// `struct tc_u32_sel` with one `struct tc_u32_key` (`match u32 0 0 at 0`):
///
/// ```text
/// u8 flags, u8 offshift, u8 nkeys, (pad), __be16 offmask, u16 off, s16 offoff,
/// s16 hoff, __be32 hmask                                        16 bytes
/// key: __be32 mask, __be32 val, int off, int offmask             16 bytes
/// ```
///
/// Everything zero except `flags` (terminal) and `nkeys` (1).
fn match_all_selector() -> [u8; 32] {
    let mut sel = [0u8; 32];
    sel[0] = TC_U32_TERMINAL;
    sel[2] = 1;
    sel
}

/// `struct tc_mirred` for an egress redirect to link `to`:
///
/// ```text
/// tc_gen: u32 index, u32 capab, int action, int refcnt, int bindcnt   20 bytes
/// int eaction, u32 ifindex                                             8 bytes
/// ```
///
/// Index 0: the kernel allocates one.
fn mirred_redirect(to: u32) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[8..12].copy_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
    p[20..24].copy_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
    p[24..28].copy_from_slice(&to.to_ne_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_filter_is_nested_as_tc_sends_it() {
        let b = redirect_message(3, 9).finish(1);
        let body = &b[16..];
        assert_eq!(u32_at(body, 4), Some(3)); // ifindex
        assert_eq!(u32_at(body, 12), Some(INGRESS_HANDLE)); // parent ffff:
        assert_eq!(u32_at(body, 16), Some(u32::from(3u16.to_be()))); // prio 0, htons(ETH_P_ALL)
        let attrs = &body[TCMSG_LEN..];
        assert_eq!(
            c_str(message::attr(attrs, TCA_KIND).unwrap()).as_deref(),
            Some("u32")
        );
        let opts = message::attr(attrs, TCA_OPTIONS).unwrap();
        let sel = message::attr(opts, TCA_U32_SEL).unwrap();
        assert_eq!(sel.len(), 32);
        assert_eq!((sel[0], sel[2]), (TC_U32_TERMINAL, 1));
        let first = message::attr(message::attr(opts, TCA_U32_ACT).unwrap(), 1).unwrap();
        assert_eq!(
            c_str(message::attr(first, TCA_ACT_KIND).unwrap()).as_deref(),
            Some("mirred")
        );
        let parms = message::attr(
            message::attr(first, TCA_ACT_OPTIONS).unwrap(),
            TCA_MIRRED_PARMS,
        )
        .unwrap();
        assert_eq!(parms.len(), 28);
        assert_eq!(message::i32_at(parms, 8), Some(TC_ACT_STOLEN));
        assert_eq!(message::i32_at(parms, 20), Some(TCA_EGRESS_REDIR));
        assert_eq!(u32_at(parms, 24), Some(9));
    }
}
