//! The log against an in-memory disk that records every write, so crashes can be
//! simulated at any write and in the middle of one.

use super::*;
use crate::{execute, Store};
use std::collections::BTreeMap;
use std::format;
use std::string::ToString;
use std::vec::Vec;

/// A disk in memory; every write is also kept in `history`.
#[derive(Clone, Debug, Default)]
struct MemDisk {
    data: Vec<u8>,
    history: Vec<(u64, Vec<u8>)>,
}

impl MemDisk {
    fn new(size: usize) -> MemDisk {
        MemDisk {
            data: vec![0; size],
            history: Vec::new(),
        }
    }
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        assert!(
            offset.is_multiple_of(SECTOR) && (buf.len() as u64).is_multiple_of(SECTOR),
            "unaligned read"
        );
        let o = offset as usize;
        buf.copy_from_slice(&self.data[o..o + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        assert!(
            offset.is_multiple_of(SECTOR) && (data.len() as u64).is_multiple_of(SECTOR),
            "unaligned write"
        );
        let o = offset as usize;
        self.data[o..o + data.len()].copy_from_slice(data);
        self.history.push((offset, data.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn state(store: &Store, now: u64) -> State {
    store
        .entries(now)
        .map(|(k, v, t)| (k.to_vec(), (v.to_vec(), t)))
        .collect()
}

const NOW: u64 = 1_700_000_000_000;

fn open(disk: MemDisk) -> (Log<MemDisk>, Recovery, Store) {
    let mut store = Store::new();
    let (log, rec) = Log::open(disk, &mut store, NOW, 42).expect("open");
    store.enable_journal();
    (log, rec, store)
}

/// Runs one round of commands and commits it.
fn round(log: &mut Log<MemDisk>, store: &mut Store, cmds: &[&[&str]]) {
    let mut out = Vec::new();
    for c in cmds {
        let args: Vec<&[u8]> = c.iter().map(|a| a.as_bytes()).collect();
        execute(store, &args, NOW, &mut out);
    }
    let ops = store.take_journal();
    log.commit(&ops, store, NOW).expect("commit");
}

fn reopen(log: Log<MemDisk>) -> (Log<MemDisk>, Recovery, Store) {
    let mut disk = log.disk().clone();
    disk.history.clear();
    open(disk)
}

#[test]
fn crc32_matches_zlib() {
    assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
}

#[test]
fn ops_round_trip() {
    let mut b = Vec::new();
    encode_set(&mut b, b"k", b"v", Some(7));
    encode_del(&mut b, b"gone");
    encode_expire(&mut b, b"k", None);
    encode_flush(&mut b);
    assert_eq!(
        decode(&b).unwrap(),
        [
            Op::Set(b"k", b"v", Some(7)),
            Op::Del(b"gone"),
            Op::Expire(b"k", None),
            Op::Flush
        ]
    );
    assert_eq!(decode(&b[..b.len() - 2]), None);
    assert_eq!(decode(&[9]), None);
}

#[test]
fn a_blank_device_gets_a_log_and_replay_restores_every_command() {
    let (mut log, rec, mut store) = open(MemDisk::new(1 << 20));
    assert!(rec.created);
    round(
        &mut log,
        &mut store,
        &[&["SET", "a", "1"], &["SET", "b", "2"]],
    );
    round(
        &mut log,
        &mut store,
        &[&["INCR", "n"], &["INCR", "n"], &["DEL", "b"]],
    );
    round(
        &mut log,
        &mut store,
        &[
            &["MSET", "x", "1", "y", "2"],
            &["SET", "t", "v", "EX", "100"],
        ],
    );
    round(
        &mut log,
        &mut store,
        &[&["EXPIRE", "x", "50"], &["PEXPIRE", "y", "-1"]],
    );
    round(&mut log, &mut store, &[&["GET", "a"]]); // nothing to write
    round(
        &mut log,
        &mut store,
        &[&["INCRBY", "n", "40"], &["SET", "a", "again", "KEEPTTL"]],
    );
    let want = state(&store, NOW);
    assert_eq!(want.get(&b"n"[..]).unwrap().0, b"42");
    assert_eq!(want.get(&b"t"[..]).unwrap().1, Some(NOW + 100_000));
    assert_eq!(want.get(&b"x"[..]).unwrap().1, Some(NOW + 50_000));
    assert!(!want.contains_key(&b"y"[..]) && !want.contains_key(&b"b"[..]));
    let (log, rec, store) = reopen(log);
    assert!(!rec.created);
    assert_eq!(rec.records, 5);
    assert_eq!(rec.torn_at, None);
    assert_eq!(state(&store, NOW), want);
    // FLUSHALL is replayed too, and keys that expired meanwhile are gone.
    let (mut log, _, mut store) = (log, rec, store);
    round(
        &mut log,
        &mut store,
        &[
            &["FLUSHALL"],
            &["SET", "after", "1"],
            &["SET", "soon", "1", "PX", "10"],
        ],
    );
    let mut s2 = Store::new();
    let (_, rec) = Log::open(log.disk().clone(), &mut s2, NOW + 11, 1).unwrap();
    assert_eq!(rec.records, 6);
    let keys: Vec<Vec<u8>> = state(&s2, NOW + 11).into_keys().collect();
    assert_eq!(keys, [b"after".to_vec()]);
}

#[test]
fn a_torn_last_write_is_cut_reported_and_the_log_goes_on() {
    let (mut log, _, mut store) = open(MemDisk::new(1 << 20));
    for i in 0..20 {
        let v = "v".repeat(i * 37);
        round(&mut log, &mut store, &[&["SET", &i.to_string(), &v]]);
    }
    let before = state(&store, NOW);
    let base = log.disk().clone();
    let big = "z".repeat(1500);
    round(
        &mut log,
        &mut store,
        &[&["SET", "big", &big], &["DEL", "3"]],
    );
    let after = state(&store, NOW);
    let (off, data) = log.disk().history.last().unwrap().clone();
    // Every prefix of the last write, as if the monitor died in the middle of it.
    for cut in (0..=data.len()).step_by(13).chain([data.len()]) {
        let mut d = base.clone();
        d.data[off as usize..off as usize + cut].copy_from_slice(&data[..cut]);
        d.history.clear();
        let (mut l2, rec, mut s2) = open(d);
        let got = state(&s2, NOW);
        if got == after {
            assert_eq!(rec.records, 21);
            assert_eq!(rec.torn_at, None, "cut {cut}");
        } else {
            assert!(
                got == before,
                "cut {cut}: neither the old nor the new state: {:?} vs {:?} ({rec:?})",
                got.keys().collect::<Vec<_>>(),
                before.keys().collect::<Vec<_>>()
            );
            assert_eq!(rec.records, 20);
            // Torn when the new record's header made it.
            if rec.torn_at.is_some() {
                assert!(rec.torn_bytes > 0);
            }
        }
        // The log continues after the cut, and the next boot sees no tear.
        round(&mut l2, &mut s2, &[&["SET", "next", "1"]]);
        let want = state(&s2, NOW);
        let (_, rec, s3) = reopen(l2);
        assert_eq!(rec.torn_at, None, "cut {cut}: the tear was not cleared");
        assert_eq!(state(&s3, NOW), want, "cut {cut}");
    }
}

#[test]
fn a_bad_checksum_ends_the_log_there() {
    let (mut log, _, mut store) = open(MemDisk::new(1 << 20));
    let mut states = Vec::new();
    for i in 0..10 {
        round(&mut log, &mut store, &[&["SET", &format!("k{i}"), "value"]]);
        states.push((state(&store, NOW), log.len()));
    }
    // Corrupt one byte inside record 6 (0-based).
    let (_, end5) = states[5];
    let mut d = log.disk().clone();
    let at = (REGIONS_START + end5 + 10) as usize;
    d.data[at] ^= 0x40;
    let (_, rec, s) = open(d);
    assert_eq!(rec.records, 6);
    assert_eq!(rec.torn_at, Some(end5));
    assert_eq!(rec.torn_reason, "checksum mismatch");
    assert_eq!(state(&s, NOW), states[5].0);
}

#[test]
fn other_devices_are_refused() {
    let mut store = Store::new();
    let e = Log::open(MemDisk::new(64 * 1024), &mut store, NOW, 1).unwrap_err();
    assert!(matches!(e, Error::TooSmall(_)), "{e}");
    let mut tar = MemDisk::new(1 << 20);
    tar.data[..5].copy_from_slice(b"hello");
    assert_eq!(
        Log::open(tar, &mut store, NOW, 1).unwrap_err(),
        Error::NotALog
    );
    // A log from a device of another size.
    let (log, _, _) = open(MemDisk::new(1 << 20));
    let mut bigger = log.disk().clone();
    bigger.data.resize(2 << 20, 0);
    assert!(matches!(
        Log::open(bigger, &mut store, NOW, 1).unwrap_err(),
        Error::Mismatch(_)
    ));
}

#[test]
fn data_larger_than_a_region_is_refused_and_the_old_log_stays() {
    let (mut log, _, mut store) = open(MemDisk::new(MIN_DEVICE as usize));
    round(&mut log, &mut store, &[&["SET", "keep", "me"]]);
    let kept = state(&store, NOW);
    let huge = "h".repeat(80 * 1024);
    let mut out = Vec::new();
    execute(
        &mut store,
        &[b"SET", b"huge", huge.as_bytes()],
        NOW,
        &mut out,
    );
    let ops = store.take_journal();
    let e = log.commit(&ops, &store, NOW).unwrap_err();
    assert!(matches!(e, Error::Full { .. }), "{e}");
    let (_, rec, s) = reopen(log);
    assert_eq!(state(&s, NOW), kept);
    assert_eq!(rec.torn_at, None);
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn a_crash_at_any_write_of_rounds_and_compactions_leaves_the_old_or_new_state() {
    // A small device (two 64 KiB regions): compactions come often.
    let (mut log, _, mut store) = open(MemDisk::new(MIN_DEVICE as usize));
    let skip = log.disk().history.len();
    let start = log.disk().clone();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // states[j]: what was acknowledged after round j; owner[w]: round of write w.
    let mut states = vec![state(&store, NOW)];
    let mut owner = Vec::new();
    for r in 0..300 {
        let mut cmds: Vec<Vec<String>> = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let k = format!("key{}", rng.below(40));
            let c = match rng.below(10) {
                0 => vec!["DEL".into(), k],
                1 => vec!["INCR".into(), format!("n{}", rng.below(4))],
                2 => vec!["EXPIRE".into(), k, "1000".into()],
                3 if r % 97 == 96 => vec!["FLUSHALL".into()],
                _ => vec!["SET".into(), k, "v".repeat(rng.below(900) as usize)],
            };
            cmds.push(c);
        }
        let refs: Vec<Vec<&str>> = cmds
            .iter()
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
        let before = log.disk().history.len();
        round(&mut log, &mut store, &refs);
        owner.extend(std::iter::repeat_n(
            r + 1,
            log.disk().history.len() - before,
        ));
        states.push(state(&store, NOW));
    }
    assert!(log.stats.compactions >= 5, "{:?}", log.stats);
    let history = log.disk().history[skip..].to_vec();
    let mut image = start;
    let mut checked = 0;
    for (w, (off, data)) in history.iter().enumerate() {
        let j = owner[w];
        // Crash before this write, in its middle (several places), after it.
        let cuts = [0, data.len() / 3, data.len() / 2 + 5, data.len()];
        for cut in cuts {
            let mut d = image.clone();
            d.data[*off as usize..*off as usize + cut].copy_from_slice(&data[..cut]);
            let mut s = Store::new();
            let (_, rec) = Log::open(d, &mut s, NOW, 7).expect("a crashed log opens");
            let got = state(&s, NOW);
            assert!(
                got == states[j - 1] || got == states[j],
                "write {w} (round {j}) cut at {cut}: not the state before or after the round ({rec:?})"
            );
            checked += 1;
        }
        image.data[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    assert!(checked > 1000, "{checked}");
}
