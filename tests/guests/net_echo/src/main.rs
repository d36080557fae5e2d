//! Proves the net hypercalls end to end with raw calls only (no network stack):
//! prints its device table, checks a few bad requests, sends a broadcast "hello" frame
//! (EtherType 0x88b5, local experimental) every second until a 0x88b5 frame arrives,
//! and echoes every 0x88b5 frame it receives back to its sender, batching replies,
//! until it receives one whose payload starts with `quit`. Exits 0 then, 2 when
//! nothing arrives for 30 s, 1 on an error.
#![no_std]
#![no_main]

use septem_libos::abi::{
    BootDevice, DeviceKind, GuestAddr, HcError, Hypercall, NetFrame, NetReadArgs, NetWriteArgs,
    NET_HAS_ADDRESS, NET_HAS_DNS, NET_HAS_GATEWAY,
};
use septem_libos::hypercall::{hypercall, yield_until};
use septem_libos::{println, time};

septem_libos::main!(main);

const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const BATCH: usize = 8;
const BUF: usize = 2048;
const IDLE_NS: u64 = 30_000_000_000;

fn devices() -> &'static [BootDevice] {
    let Some(info) = septem_libos::boot::boot_info() else {
        return &[];
    };
    if info.device_count == 0 {
        return &[];
    }
    // SAFETY: the monitor wrote `device_count` BootDevices at `devices` in the boot
    // area, which stays mapped and unchanged for the guest's life (guest address ==
    // pointer in the guest).
    unsafe {
        core::slice::from_raw_parts(
            info.devices.raw() as *const BootDevice,
            info.device_count as usize,
        )
    }
}

fn ip(a: [u8; 4]) -> [u8; 4] {
    a
}

fn net_write(device: u32, frames: &mut [NetFrame]) -> i64 {
    let mut a = NetWriteArgs {
        device,
        count: frames.len() as u32,
        frames: GuestAddr::new(frames.as_mut_ptr() as u64),
        done: 0,
        _pad: 0,
    };
    // SAFETY: `a` is a live NetWriteArgs whose table and frames are live buffers.
    unsafe { hypercall(Hypercall::NetWrite, &mut a) }
}

fn net_read(device: u32, frames: &mut [NetFrame]) -> i64 {
    let mut a = NetReadArgs {
        device,
        count: frames.len() as u32,
        frames: GuestAddr::new(frames.as_mut_ptr() as u64),
        done: 0,
        _pad: 0,
    };
    // SAFETY: `a` is a live NetReadArgs whose table and buffers are live and writable.
    unsafe { hypercall(Hypercall::NetRead, &mut a) }
}

fn frame_of(bytes: &[u8]) -> NetFrame {
    NetFrame {
        data: GuestAddr::new(bytes.as_ptr() as u64),
        len: bytes.len() as u32,
        _pad: 0,
    }
}

fn check(what: &str, got: i64, want: HcError) -> bool {
    let ok = got == want.code();
    println!(
        "net_echo: check {what}: {}",
        if ok { "ok" } else { "WRONG" }
    );
    ok
}

fn main() -> i32 {
    let devs = devices();
    let mut net = None;
    for (i, d) in devs.iter().enumerate() {
        let n = &d.net;
        let m = n.mac;
        println!(
            "net_echo: device {i}: kind {} name {} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} mtu {}",
            d.kind,
            d.name_str(),
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            n.mtu
        );
        if n.flags & NET_HAS_ADDRESS != 0 {
            let a = ip(n.ipv4);
            println!(
                "net_echo: device {i}: address {}.{}.{}.{}/{}",
                a[0], a[1], a[2], a[3], n.prefix_len
            );
        }
        if n.flags & NET_HAS_GATEWAY != 0 {
            let a = n.gateway;
            println!(
                "net_echo: device {i}: gateway {}.{}.{}.{}",
                a[0], a[1], a[2], a[3]
            );
        }
        if n.flags & NET_HAS_DNS != 0 {
            let a = n.dns;
            println!(
                "net_echo: device {i}: dns {}.{}.{}.{}",
                a[0], a[1], a[2], a[3]
            );
        }
        if d.kind == DeviceKind::Net as u32 && net.is_none() {
            net = Some((i as u32, m));
        }
    }
    let Some((dev, mac)) = net else {
        println!("net_echo: no net device");
        return 1;
    };

    // A few requests the monitor must refuse.
    let hello_bytes = {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&mac);
        f[12..14].copy_from_slice(&ETHERTYPE);
        f[14..35].copy_from_slice(b"septem net_echo hello");
        f
    };
    let mut wild = [NetFrame {
        data: GuestAddr::new(0xdead_0000_0000),
        len: 60,
        _pad: 0,
    }];
    let mut ok = check(
        "wild frame pointer",
        net_write(dev, &mut wild),
        HcError::BadAddress,
    );
    ok &= check(
        "device without net",
        net_write(dev + 1, &mut [frame_of(&hello_bytes)]),
        HcError::NoDevice,
    );
    ok &= check("empty batch", net_write(dev, &mut []), HcError::Invalid);
    ok &= check(
        "runt frame",
        net_write(dev, &mut [frame_of(&hello_bytes[..10])]),
        HcError::Invalid,
    );
    if !ok {
        return 1;
    }

    if net_write(dev, &mut [frame_of(&hello_bytes)]) != 1 {
        println!("net_echo: hello not sent");
        return 1;
    }
    println!("net_echo: hello sent");

    let mut bufs = [[0u8; BUF]; BATCH];
    let mut replies = [[0u8; BUF]; BATCH];
    let mut echoed = 0u64;
    let mut last = time::Instant::now();
    let mut heard = false;
    let mut hellos = 1u32;
    loop {
        let now = time::Instant::now();
        if now.duration_since(last).as_nanos() as u64 > IDLE_NS {
            println!("net_echo: nothing received for 30 s");
            return 2;
        }
        let deadline = septem_libos::hypercall::clock_monotonic().unwrap_or(0) + 1_000_000_000;
        match yield_until(deadline, 1 << dev) {
            Ok(_) => {}
            Err(e) => {
                println!("net_echo: yield failed: {e}");
                return 1;
            }
        }
        let mut table: [NetFrame; BATCH] = core::array::from_fn(|i| NetFrame {
            data: GuestAddr::new(bufs[i].as_mut_ptr() as u64),
            len: BUF as u32,
            _pad: 0,
        });
        let got = net_read(dev, &mut table);
        if got < 0 {
            println!("net_echo: net_read failed: {got}");
            return 1;
        }
        if got == 0 && !heard {
            if net_write(dev, &mut [frame_of(&hello_bytes)]) != 1 {
                println!("net_echo: hello not sent");
                return 1;
            }
            hellos += 1;
        }
        let mut out: [NetFrame; BATCH] = [NetFrame::default(); BATCH];
        let mut n_out = 0;
        let mut quit = false;
        for (i, f) in table.iter().take(got as usize).enumerate() {
            let frame = &bufs[i][..f.len as usize];
            if frame.len() < 14 || frame[12..14] != ETHERTYPE {
                continue;
            }
            last = time::Instant::now();
            heard = true;
            if frame[14..].starts_with(b"quit") {
                quit = true;
                continue;
            }
            let r = &mut replies[n_out];
            r[..6].copy_from_slice(&frame[6..12]);
            r[6..12].copy_from_slice(&mac);
            r[12..frame.len()].copy_from_slice(&frame[12..]);
            out[n_out] = frame_of(&r[..frame.len()]);
            n_out += 1;
        }
        let mut sent = 0;
        while sent < n_out {
            let n = net_write(dev, &mut out[sent..n_out]);
            if n < 0 {
                println!("net_echo: net_write failed: {n}");
                return 1;
            }
            sent += n as usize;
        }
        echoed += n_out as u64;
        if quit {
            println!("net_echo: quit after echoing {echoed} frames ({hellos} hellos)");
            return 0;
        }
    }
}
