//! The durable side of `kv`: an append-only log of checksummed records on a block
//! device, replayed on boot, compacted into the other half of the device when it grows.
//!
//! # On the device
//!
//! ```text
//! byte 0      header slot 0 (one 512-byte sector)
//! byte 512    header slot 1
//! byte 4096   region 0 ─┐ two equal halves of the rest of the device
//!             region 1 ─┘ (whole sectors each)
//! ```
//!
//! A **header** is `magic "SEPTKVLG"`, version, the log's random `id`, `seq` (a
//! generation, +1 per compaction), the active `region`, the region length, then a
//! CRC-32 of those bytes. The valid header with the highest `seq` wins; generation `s`
//! is written to slot `s % 2`, so a new header never overwrites the one in use.
//!
//! A **record** is `len: u32 LE`, `crc: u32 LE`, `len` bytes of payload; the CRC-32
//! covers `id`, `seq`, `len` and the payload, so bytes left in a region by an older
//! generation (or another log) never read as valid. Records are packed back to back
//! from the start of the active region; every write ends with 8 zero bytes, and a `len`
//! of 0 ends the log (no record is empty).
//! The payload is a list of operations with absolute expiry times (Unix
//! milliseconds, 0 = none):
//!
//! ```text
//! 1 SET    klen:u32 key vlen:u32 value expires:u64
//! 2 DEL    klen:u32 key
//! 3 EXPIRE klen:u32 key expires:u64
//! 4 FLUSH
//! ```
//!
//! # Writing
//!
//! The server gathers the operations of every command of one poll round and
//! [`Log::commit`]s them as **one record in one write** (the partial last sector is
//! rewritten with the same leading bytes, then zero padding) before any reply of that
//! round is sent: group commit. A reply thus never leaves before its change is on
//! the device (durable when the monitor opened it with `,sync`).
//!
//! # Replay and torn tails
//!
//! [`Log::open`] reads the active region's records in order. The first record whose
//! length runs past the region, whose checksum fails or whose operations do not
//! decode ends the log: it is **cut** (its header is zeroed on the device, and
//! [`Recovery`] reports where and how many) and new records are appended from there.
//! Only the round being written when the server died can be torn, and none of its
//! replies had been sent.
//!
//! # Compaction
//!
//! When the log reaches 3/4 of its region (and at least twice the last snapshot), or
//! a round does not fit, the live data is written as a snapshot (SET records) into the
//! *other* region, flushed, and then a header of the next generation pointing at it is
//! written into the other slot and flushed. Until that header is on the device the old
//! header, region and log are untouched and valid; after it, the new ones are. A crash
//! at any point therefore leaves either the old or the new state. The round that
//! triggered the compaction is part of the snapshot.

use crate::Store;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// Where region 0 starts.
pub const REGIONS_START: u64 = 4096;
/// Smallest usable device.
pub const MIN_DEVICE: u64 = REGIONS_START + 2 * 64 * 1024;
const MAGIC: &[u8; 8] = b"SEPTKVLG";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 44;
/// Largest piece read or written at once.
const IO_CHUNK: usize = 1 << 20;
/// Snapshot records are cut at about this size.
const SNAPSHOT_RECORD: usize = 256 * 1024;

const OP_SET: u8 = 1;
const OP_DEL: u8 = 2;
const OP_EXPIRE: u8 = 3;
const OP_FLUSH: u8 = 4;

/// A block device as the log sees it: byte offsets and lengths are whole sectors.
pub trait Disk {
    /// Size in bytes (a multiple of [`SECTOR`]).
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String>;
    /// Waits until earlier writes are complete.
    fn flush(&mut self) -> Result<(), String>;
}

/// Why the log cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device is too small.
    TooSmall(u64),
    /// The device holds something else than a kv log (and is not blank).
    NotALog,
    /// The header does not match the device (it was resized, or another version).
    Mismatch(&'static str),
    /// The live data does not fit in half of the device.
    Full {
        /// Bytes the snapshot needs.
        need: u64,
        /// Bytes a region has.
        have: u64,
    },
    /// The device failed.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooSmall(n) => write!(
                f,
                "the device has {n} bytes; a kv log needs at least {MIN_DEVICE} (e.g. truncate -s 64M kv.img)"
            ),
            Error::NotALog => f.write_str(
                "the device holds no kv log and is not blank (use a new image: truncate -s 64M kv.img)",
            ),
            Error::Mismatch(why) => write!(f, "the kv log does not match the device: {why}"),
            Error::Full { need, have } => write!(
                f,
                "the data ({need} bytes) does not fit in half of the device ({have} bytes per region)"
            ),
            Error::Io(e) => write!(f, "block device: {e}"),
        }
    }
}

/// What [`Log::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The device was blank: a new log was made.
    pub created: bool,
    /// Generation of the header in use.
    pub seq: u64,
    /// Active region.
    pub region: u8,
    /// Records replayed.
    pub records: u64,
    /// Operations replayed.
    pub ops: u64,
    /// Bytes of log replayed (the log's end).
    pub bytes: u64,
    /// A torn or corrupt record was cut at this region offset.
    pub torn_at: Option<u64>,
    /// Bytes cut there.
    pub torn_bytes: u64,
    /// Why it was cut.
    pub torn_reason: &'static str,
    /// A header slot that did not check out (a compaction interrupted while writing it).
    pub bad_header_slots: u8,
}

/// Counters since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rounds committed (one write each, unless a compaction took its place).
    pub commits: u64,
    /// Payload bytes committed.
    pub bytes: u64,
    /// Compactions done.
    pub compactions: u64,
}

// ---- CRC-32 (IEEE, reflected, as zlib) ----------------------------------------------

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Continues a CRC-32 (start with 0).
#[must_use]
pub fn crc32(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// ---- operations ---------------------------------------------------------------------

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends a SET.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8], expires: Option<u64>) {
    out.push(OP_SET);
    put_bytes(out, key);
    put_bytes(out, value);
    out.extend_from_slice(&expires.unwrap_or(0).to_le_bytes());
}

/// Appends a DEL.
pub fn encode_del(out: &mut Vec<u8>, key: &[u8]) {
    out.push(OP_DEL);
    put_bytes(out, key);
}

/// Appends an EXPIRE (None: no expiry).
pub fn encode_expire(out: &mut Vec<u8>, key: &[u8], expires: Option<u64>) {
    out.push(OP_EXPIRE);
    put_bytes(out, key);
    out.extend_from_slice(&expires.unwrap_or(0).to_le_bytes());
}

/// Appends a FLUSH.
pub fn encode_flush(out: &mut Vec<u8>) {
    out.push(OP_FLUSH);
}

/// One decoded operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Set `key` to `value` with an absolute expiry.
    Set(&'a [u8], &'a [u8], Option<u64>),
    /// Delete `key`.
    Del(&'a [u8]),
    /// Change `key`'s expiry.
    Expire(&'a [u8], Option<u64>),
    /// Delete everything.
    Flush,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn expiry(t: u64) -> Option<u64> {
    (t != 0).then_some(t)
}

/// Decodes a record's operations; `None` if they do not decode.
#[must_use]
pub fn decode(payload: &[u8]) -> Option<Vec<Op<'_>>> {
    let mut r = Reader(payload);
    let mut ops = Vec::new();
    while let Some(&[op]) = r.take(1) {
        ops.push(match op {
            OP_SET => Op::Set(r.bytes()?, r.bytes()?, expiry(r.u64()?)),
            OP_DEL => Op::Del(r.bytes()?),
            OP_EXPIRE => Op::Expire(r.bytes()?, expiry(r.u64()?)),
            OP_FLUSH => Op::Flush,
            _ => return None,
        });
    }
    Some(ops)
}

/// Applies one operation to `store` (not journaled); entries already expired at `now`
/// are dropped.
pub fn apply(store: &mut Store, op: Op<'_>, now: u64) {
    match op {
        Op::Set(k, v, t) => {
            if t.is_some_and(|t| t <= now) {
                store.remove(k);
            } else {
                store.put(k, v.to_vec(), t);
            }
        }
        Op::Del(k) => {
            store.remove(k);
        }
        Op::Expire(k, t) => {
            if t.is_some_and(|t| t <= now) {
                store.remove(k);
            } else {
                let j = store.journal.take();
                store.set_expiry(k, t);
                store.journal = j;
            }
        }
        Op::Flush => {
            store.map.clear();
            store.volatile = 0;
        }
    }
}

// ---- header -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    id: u64,
    seq: u64,
    region: u8,
    region_len: u64,
}

impl Header {
    fn encode(&self) -> [u8; SECTOR as usize] {
        let mut s = [0u8; SECTOR as usize];
        s[0..8].copy_from_slice(MAGIC);
        s[8..12].copy_from_slice(&VERSION.to_le_bytes());
        s[12..20].copy_from_slice(&self.id.to_le_bytes());
        s[20..28].copy_from_slice(&self.seq.to_le_bytes());
        s[28..32].copy_from_slice(&u32::from(self.region).to_le_bytes());
        s[32..40].copy_from_slice(&self.region_len.to_le_bytes());
        let crc = crc32(0, &s[..40]);
        s[40..44].copy_from_slice(&crc.to_le_bytes());
        s
    }

    fn decode(s: &[u8]) -> Option<Header> {
        if &s[0..8] != MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(s[40..44].try_into().ok()?);
        if crc32(0, &s[..40]) != crc {
            return None;
        }
        let region = u32::from_le_bytes(s[28..32].try_into().ok()?);
        if u32::from_le_bytes(s[8..12].try_into().ok()?) != VERSION || region > 1 {
            return None;
        }
        Some(Header {
            id: u64::from_le_bytes(s[12..20].try_into().ok()?),
            seq: u64::from_le_bytes(s[20..28].try_into().ok()?),
            region: region as u8,
            region_len: u64::from_le_bytes(s[32..40].try_into().ok()?),
        })
    }
}

const _: () = assert!(HEADER_LEN <= SECTOR as usize);

fn region_len_for(size: u64) -> u64 {
    (size - REGIONS_START) / 2 / SECTOR * SECTOR
}

// ---- the log ------------------------------------------------------------------------

/// An open log on a [`Disk`].
#[derive(Debug)]
pub struct Log<D: Disk> {
    disk: D,
    head: Header,
    /// Bytes of records in the active region.
    end: u64,
    /// The bytes of the partial sector at `end` (`end % 512` of them).
    tail: Vec<u8>,
    /// Size of the last snapshot (0 before the first compaction).
    snapshot: u64,
    /// Reused buffer for a round's write.
    buf: Vec<u8>,
    /// Counters.
    pub stats: Stats,
}

fn io(e: String) -> Error {
    Error::Io(e)
}

fn record_crc(head: &Header, len: u32, payload: &[u8]) -> u32 {
    let mut c = crc32(0, &head.id.to_le_bytes());
    c = crc32(c, &head.seq.to_le_bytes());
    c = crc32(c, &len.to_le_bytes());
    crc32(c, payload)
}

/// Appends a framed record to `out`.
fn frame(out: &mut Vec<u8>, head: &Header, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(head, len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

impl<D: Disk> Log<D> {
    /// Opens the log on `disk` and replays it into `store` (which should be empty and
    /// not journaling), at Unix time `now` (ms); a blank device gets a new log with
    /// identity `id` (any value unlikely to repeat, e.g. the boot time's nanoseconds).
    pub fn open(
        mut disk: D,
        store: &mut Store,
        now: u64,
        id: u64,
    ) -> Result<(Log<D>, Recovery), Error> {
        let size = disk.size();
        if size < MIN_DEVICE {
            return Err(Error::TooSmall(size));
        }
        let region_len = region_len_for(size);
        let mut hs = vec![0u8; 2 * SECTOR as usize];
        disk.read(0, &mut hs).map_err(io)?;
        let slots = [
            Header::decode(&hs[..SECTOR as usize]),
            Header::decode(&hs[SECTOR as usize..]),
        ];
        let mut rec = Recovery::default();
        let best = slots.iter().flatten().max_by_key(|h| h.seq).copied();
        let Some(head) = best else {
            if hs.iter().any(|&b| b != 0) {
                return Err(Error::NotALog);
            }
            let head = Header {
                id,
                seq: 1,
                region: 0,
                region_len,
            };
            // A blank first sector of region 0 first, then the header.
            disk.write(REGIONS_START, &[0u8; SECTOR as usize])
                .map_err(io)?;
            disk.write(SECTOR, &head.encode()).map_err(io)?;
            disk.flush().map_err(io)?;
            rec.created = true;
            rec.seq = 1;
            let log = Log {
                disk,
                head,
                end: 0,
                tail: Vec::new(),
                snapshot: 0,
                buf: Vec::new(),
                stats: Stats::default(),
            };
            return Ok((log, rec));
        };
        if head.region_len != region_len {
            return Err(Error::Mismatch(
                "its region size is not the one of this device (was the image resized?)",
            ));
        }
        // A slot that is neither valid nor blank: a header write was interrupted.
        for (i, s) in slots.iter().enumerate() {
            let raw = &hs[i * SECTOR as usize..(i + 1) * SECTOR as usize];
            if s.is_none() && raw.iter().any(|&b| b != 0) {
                rec.bad_header_slots += 1;
            }
        }
        rec.seq = head.seq;
        rec.region = head.region;
        let mut log = Log {
            disk,
            head,
            end: 0,
            tail: Vec::new(),
            snapshot: 0,
            buf: Vec::new(),
            stats: Stats::default(),
        };
        log.replay(store, now, &mut rec)?;
        Ok((log, rec))
    }

    fn region_start(&self) -> u64 {
        REGIONS_START + u64::from(self.head.region) * self.head.region_len
    }

    fn other_start(&self) -> u64 {
        REGIONS_START + u64::from(1 - self.head.region) * self.head.region_len
    }

    fn replay(&mut self, store: &mut Store, now: u64, rec: &mut Recovery) -> Result<(), Error> {
        let start = self.region_start();
        let len = self.head.region_len;
        // A window over the region: `win` holds region bytes [win_at, win_at + win.len()).
        let mut win: Vec<u8> = Vec::new();
        let mut win_at = 0u64;
        let mut pos = 0u64;
        // Makes [at, at + n) readable in the window (n fits the region).
        let ensure = |disk: &mut D, win: &mut Vec<u8>, win_at: &mut u64, at: u64, n: u64| {
            if at >= *win_at && at + n <= *win_at + win.len() as u64 {
                return Ok(());
            }
            let from = at / SECTOR * SECTOR;
            let want = (at + n - from).div_ceil(SECTOR) * SECTOR;
            let want = want.max(IO_CHUNK as u64).min(len - from);
            win.clear();
            win.resize(want as usize, 0);
            for (i, chunk) in win.chunks_mut(IO_CHUNK).enumerate() {
                disk.read(start + from + (i * IO_CHUNK) as u64, chunk)?;
            }
            *win_at = from;
            Ok::<(), String>(())
        };
        let cut = loop {
            if pos + 8 > len {
                break None;
            }
            ensure(&mut self.disk, &mut win, &mut win_at, pos, 8).map_err(io)?;
            let h = &win[(pos - win_at) as usize..(pos - win_at) as usize + 8];
            let rlen = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            if rlen == 0 {
                // The end marker (no record is empty).
                let _ = crc;
                break None;
            }
            if u64::from(rlen) > len - pos - 8 {
                break Some((len - pos, "a record runs past the end of the region"));
            }
            ensure(
                &mut self.disk,
                &mut win,
                &mut win_at,
                pos,
                8 + u64::from(rlen),
            )
            .map_err(io)?;
            let at = (pos - win_at) as usize + 8;
            let payload = &win[at..at + rlen as usize];
            if record_crc(&self.head, rlen, payload) != crc {
                break Some((8 + u64::from(rlen), "checksum mismatch"));
            }
            let Some(ops) = decode(payload) else {
                break Some((8 + u64::from(rlen), "operations do not decode"));
            };
            rec.records += 1;
            rec.ops += ops.len() as u64;
            for op in ops {
                apply(store, op, now);
            }
            pos += 8 + u64::from(rlen);
        };
        self.end = pos;
        rec.bytes = pos;
        let keep = (pos % SECTOR) as usize;
        self.tail.clear();
        if keep > 0 {
            ensure(
                &mut self.disk,
                &mut win,
                &mut win_at,
                pos - keep as u64,
                keep as u64,
            )
            .map_err(io)?;
            let at = (pos - keep as u64 - win_at) as usize;
            self.tail.extend_from_slice(&win[at..at + keep]);
        }
        if let Some((n, why)) = cut {
            rec.torn_at = Some(pos);
            rec.torn_bytes = n;
            rec.torn_reason = why;
            // Zero the cut record's header: a length of 0 is the end marker. (The
            // header may straddle two sectors.)
            let from = pos - keep as u64;
            let sectors = if keep as u64 + 8 > SECTOR && from + 2 * SECTOR <= len {
                2
            } else {
                1
            };
            let mut blank = vec![0u8; sectors * SECTOR as usize];
            blank[..keep].copy_from_slice(&self.tail);
            self.disk.write(start + from, &blank).map_err(io)?;
            self.disk.flush().map_err(io)?;
        }
        Ok(())
    }

    /// Bytes of records in the active region.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.end
    }

    /// True when the active region holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Bytes a region holds.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.head.region_len
    }

    /// Generation of the header in use.
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.head.seq
    }

    /// Makes `ops` (operations encoded by the store during one round) durable as one
    /// record, compacting first when the log is getting full (the snapshot then holds
    /// `store`, which already includes `ops`). Returns once the write completed.
    pub fn commit(&mut self, ops: &[u8], store: &Store, now: u64) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let need = self.end + 8 + ops.len() as u64 + 8;
        let len = self.head.region_len;
        if need > len || (need > len / 4 * 3 && self.end >= 2 * self.snapshot.max(SECTOR)) {
            self.stats.commits += 1;
            self.stats.bytes += ops.len() as u64;
            return self.compact(store, now);
        }
        let mut buf = core::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&self.tail);
        frame(&mut buf, &self.head, ops);
        // The end marker, overwritten by the next record.
        buf.extend_from_slice(&[0u8; 8]);
        let written_end = self.end + 8 + ops.len() as u64;
        let keep = (written_end % SECTOR) as usize;
        let padded = buf.len().div_ceil(SECTOR as usize) * SECTOR as usize;
        buf.resize(padded, 0);
        let buf_start = self.end - self.tail.len() as u64;
        let at = self.region_start() + buf_start;
        let r = self.disk.write(at, &buf).map_err(io);
        if r.is_ok() {
            self.end = written_end;
            self.tail.clear();
            // The partial sector at the new end (the end marker may reach further).
            let rel_end = (written_end - buf_start) as usize;
            self.tail.extend_from_slice(&buf[rel_end - keep..rel_end]);
            self.stats.commits += 1;
            self.stats.bytes += ops.len() as u64;
        }
        self.buf = buf;
        r
    }

    /// Writes `store` as a snapshot into the other region and switches to it.
    pub fn compact(&mut self, store: &Store, now: u64) -> Result<(), Error> {
        let next = Header {
            seq: self.head.seq + 1,
            region: 1 - self.head.region,
            ..self.head
        };
        let start = self.other_start();
        let len = self.head.region_len;
        let mut out: Vec<u8> = Vec::with_capacity(IO_CHUNK + SNAPSHOT_RECORD + 64);
        let mut ops: Vec<u8> = Vec::with_capacity(SNAPSHOT_RECORD + 64);
        let mut written = 0u64;
        let mut total = 0u64;
        let flush_out = |out: &mut Vec<u8>, last: bool, disk: &mut D, written: &mut u64| {
            let whole = if last {
                out.len().div_ceil(SECTOR as usize) * SECTOR as usize
            } else {
                out.len() / SECTOR as usize * SECTOR as usize
            };
            if *written + whole as u64 > len {
                return Err(());
            }
            out.resize(out.len().max(whole), 0);
            disk.write(start + *written, &out[..whole])
                .map_err(|_| ())?;
            *written += whole as u64;
            out.drain(..whole);
            Ok(())
        };
        let mut failed: Option<Error> = None;
        let mut entries = store.entries(now).peekable();
        while entries.peek().is_some() || !ops.is_empty() {
            if let Some((k, v, t)) = entries.next() {
                encode_set(&mut ops, k, v, t);
                if ops.len() < SNAPSHOT_RECORD && entries.peek().is_some() {
                    continue;
                }
            }
            frame(&mut out, &next, &ops);
            total += 8 + ops.len() as u64;
            ops.clear();
            if out.len() >= IO_CHUNK
                && flush_out(&mut out, false, &mut self.disk, &mut written).is_err()
            {
                failed = Some(Error::Full {
                    need: total,
                    have: len,
                });
                break;
            }
        }
        if failed.is_none() && total + 8 > len {
            failed = Some(Error::Full {
                need: total + 8,
                have: len,
            });
        }
        if let Some(e) = failed {
            // The old log is untouched and stays in use.
            let need = store
                .entries(now)
                .map(|(k, v, _)| 25 + k.len() + v.len())
                .sum::<usize>() as u64;
            return Err(match e {
                Error::Full { have, .. } => Error::Full { need, have },
                e => e,
            });
        }
        // The end marker.
        out.extend_from_slice(&[0u8; 8]);
        flush_out(&mut out, true, &mut self.disk, &mut written)
            .map_err(|()| Error::Io(String::from("snapshot write failed")))?;
        self.disk.flush().map_err(io)?;
        // The switch: one sector in the slot not in use.
        let slot = next.seq % 2;
        self.disk.write(slot * SECTOR, &next.encode()).map_err(io)?;
        self.disk.flush().map_err(io)?;
        self.head = next;
        self.end = total;
        self.snapshot = total;
        self.tail.clear();
        if !total.is_multiple_of(SECTOR) {
            let mut last = vec![0u8; SECTOR as usize];
            self.disk
                .read(start + total / SECTOR * SECTOR, &mut last)
                .map_err(io)?;
            self.tail
                .extend_from_slice(&last[..(total % SECTOR) as usize]);
        }
        self.stats.compactions += 1;
        Ok(())
    }

    /// The device.
    pub fn disk(&self) -> &D {
        &self.disk
    }
}

#[cfg(test)]
mod tests;
