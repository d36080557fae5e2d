//! Building and reading rtnetlink messages, byte by byte.
//!
//! A message is a 16-byte `nlmsghdr` (length, type, flags, sequence, port id), a
//! family header (`ifinfomsg`, `tcmsg`, …), then attributes: each a 4-byte
//! `rtattr`/`nlattr` header (length including the header, type) and its payload,
//! padded to 4 bytes. A nested attribute's payload is more attributes. Everything is in
//! the host's byte order except where the kernel's structs say `__be` (noted where
//! used). No `unsafe`: structs are written and read field by field at the offsets of
//! the kernel's UAPI headers.

/// Netlink's alignment of headers and attributes.
const ALIGN: usize = 4;
/// The size of `struct nlmsghdr`.
pub(super) const NLMSG_HDRLEN: usize = 16;
/// The size of an attribute header.
const ATTR_HDRLEN: usize = 4;
/// Attribute type bits (the top two are NLA_F_NESTED and NLA_F_NET_BYTEORDER).
const NLA_TYPE_MASK: u16 = 0x3fff;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A request being built; [`Message::finish`] fills in the length and sequence.
#[derive(Debug)]
pub(crate) struct Message {
    buf: Vec<u8>,
    /// Offsets of the nests not closed yet.
    open: Vec<usize>,
}

impl Message {
    /// A message of type `kind` (`RTM_*`) with `flags` (`NLM_F_*`).
    pub(crate) fn new(kind: u16, flags: u16) -> Message {
        let mut m = Message {
            buf: Vec::with_capacity(256),
            open: Vec::new(),
        };
        m.u32(0); // nlmsg_len, set by finish
        m.u16(kind);
        m.u16(flags);
        m.u32(0); // nlmsg_seq, set by finish
        m.u32(0); // nlmsg_pid: 0, the kernel fills in ours
        m
    }

    /// Appends a native-endian `u8` (family headers are written field by field).
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a native-endian `u16`.
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends a native-endian `u32`.
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// Appends raw bytes (a struct already laid out).
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    fn pad(&mut self) {
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// An attribute of type `kind` carrying `payload`.
    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        self.pad();
        let len = u16::try_from(ATTR_HDRLEN + payload.len()).expect("attribute too long");
        self.u16(len).u16(kind).bytes(payload);
        self.pad();
        self
    }

    /// A native-endian `u32` attribute.
    pub(crate) fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute (`IFLA_IFNAME`, `TCA_KIND`, …).
    pub(crate) fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut z = Vec::with_capacity(s.len() + 1);
        z.extend_from_slice(s.as_bytes());
        z.push(0);
        self.attr(kind, &z)
    }

    /// Opens a nested attribute; attributes until the matching [`Message::end_nest`] go
    /// inside it. (No NLA_F_NESTED flag, as iproute2 sends them: the tc parsers of the
    /// kernel accept both.)
    pub(crate) fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.pad();
        self.open.push(self.buf.len());
        self.u16(0).u16(kind)
    }

    /// Closes the innermost open nest, writing its length.
    pub(crate) fn end_nest(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end_nest without begin_nest");
        self.pad();
        let len = u16::try_from(self.buf.len() - start).expect("nest too long");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The finished bytes, with the total length and sequence number `seq`.
    pub(crate) fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.open.is_empty(), "unclosed nest");
        self.pad();
        let len = u32::try_from(self.buf.len()).expect("message too long");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message of a datagram the kernel sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

/// Splits a datagram into its messages; `None` when a length is inconsistent.
pub(crate) fn messages(mut buf: &[u8]) -> Option<Vec<Received<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = usize::try_from(u32_at(buf, 0)?).ok()?;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        out.push(Received {
            kind: u16_at(buf, 4)?,
            flags: u16_at(buf, 6)?,
            seq: u32_at(buf, 8)?,
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    Some(out)
}

/// The attributes in `buf` (after a family header, or a nest's payload), as
/// `(type, payload)`; stops at the first malformed one.
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(rest, 0)?);
        let kind = u16_at(rest, 2)? & NLA_TYPE_MASK;
        if len < ATTR_HDRLEN || len > rest.len() {
            return None;
        }
        let payload = &rest[ATTR_HDRLEN..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, payload))
    })
}

/// The payload of the first attribute of type `kind` in `buf`.
pub(crate) fn attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// A native-endian `u16` at `off`.
pub(crate) fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}

/// A native-endian `u32` at `off`.
pub(crate) fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

/// A native-endian `i32` at `off`.
pub(crate) fn i32_at(buf: &[u8], off: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

/// A string attribute's text (up to its NUL).
pub(crate) fn c_str(payload: &[u8]) -> Option<String> {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    std::str::from_utf8(&payload[..end])
        .ok()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_attributes_and_nests_are_laid_out_as_the_kernel_expects() {
        let mut m = Message::new(44, 0x0605);
        m.u8(0).u8(0).u16(0).u32(7);
        m.attr_str(1, "u32");
        m.begin_nest(2).attr_u32(5, 0xdead_beef).end_nest();
        let b = m.finish(9);
        // nlmsghdr
        assert_eq!(u32_at(&b, 0), Some(u32::try_from(b.len()).unwrap()));
        assert_eq!(u16_at(&b, 4), Some(44));
        assert_eq!(u16_at(&b, 6), Some(0x0605));
        assert_eq!(u32_at(&b, 8), Some(9));
        // family header: 8 bytes, then "u32\0" (len 8), then the nest (4 + 8).
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&b[24..32], &[8, 0, 1, 0, b'u', b'3', b'2', 0]);
        assert_eq!(u16_at(&b, 32), Some(12));
        assert_eq!(u16_at(&b, 34), Some(2));
        assert_eq!(b.len(), 44);
        let msgs = messages(&b).unwrap();
        assert_eq!(msgs.len(), 1);
        let body = &msgs[0].payload[8..];
        let all: Vec<_> = attrs(body).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(c_str(all[0].1).as_deref(), Some("u32"));
        assert_eq!(all[1].0, 2);
        assert_eq!(u32_at(attr(all[1].1, 5).unwrap(), 0), Some(0xdead_beef));
    }

    #[test]
    fn odd_lengths_are_padded() {
        let mut m = Message::new(1, 0);
        m.attr(3, &[1, 2, 3]).attr(4, &[9]);
        let b = m.finish(1);
        assert_eq!(b.len(), 16 + 8 + 8);
        let all: Vec<_> = attrs(&b[16..]).collect();
        assert_eq!(all, vec![(3, &[1u8, 2, 3][..]), (4, &[9u8][..])]);
    }

    #[test]
    fn malformed_input_is_rejected_not_trusted() {
        // A length beyond the buffer.
        let mut b = Message::new(16, 0).finish(1);
        b[0] = 200;
        assert!(messages(&b).is_none());
        // An attribute claiming more than there is, or less than its header.
        assert_eq!(attrs(&[40, 0, 1, 0, 0, 0]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
        // The nested flag is masked off the type.
        assert_eq!(attrs(&[4, 0, 2, 0x80]).next().map(|a| a.0), Some(2));
        assert_eq!(c_str(b"eth0\0\0"), Some("eth0".to_string()));
    }
}
