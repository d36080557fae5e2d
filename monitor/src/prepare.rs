//! From run options to a [`GuestSpec`]: read and validate the image, match its declared
//! devices against the device options, choose the memory size and lay it out, attach
//! the devices (taps). All backend-independent, before any fork: a failure is a
//! [`RunError`] with its exit status, reported the same way on both backends.

use crate::backend::GuestSpec;
use crate::block;
use crate::boot::boot_area_size;
use crate::cli::{DeviceOpt, RunOptions};
use crate::dispatch::DispatchConfig;
use crate::layout::{self, Layout};
use crate::net::{self, AttachedDevice, Devices};
use crate::RunError;
use septem_abi::{DeviceKind, Manifest, NetConfig, NET_HAS_ADDRESS, NET_HAS_DNS, NET_HAS_GATEWAY};
use septem_image::Image;
use std::net::Ipv4Addr;
use std::path::Path;

/// Reads and validates the image at `path` (structure, finalized, our ABI version).
pub fn load_image(path: &Path) -> Result<(Vec<u8>, Image), RunError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| RunError::ReadImage {
        path: shown.clone(),
        source,
    })?;
    let image = Image::parse(&bytes).map_err(|source| RunError::BadImage {
        path: shown.clone(),
        source,
    })?;
    image
        .check_runnable()
        .map_err(|source| RunError::BadImage {
            path: shown,
            source,
        })?;
    Ok((bytes, image))
}

/// Matches the device options against the devices the manifest declares: every option
/// must name a declared device of the same kind, and every declared device must be
/// given. Returns each declared device's option, in manifest order.
pub fn match_devices<'a>(
    manifest: &Manifest,
    given: &'a [DeviceOpt],
) -> Result<Vec<&'a DeviceOpt>, RunError> {
    let declared: Vec<(&str, Option<DeviceKind>)> = manifest
        .devices()
        .iter()
        .map(|d| (d.name_str(), d.device_kind()))
        .collect();
    let list = || {
        if declared.is_empty() {
            "none".to_string()
        } else {
            declared
                .iter()
                .map(|(n, k)| format!("{} '{n}'", k.map_or("?", DeviceKind::name)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for opt in given {
        match declared.iter().find(|(n, _)| *n == opt.name) {
            None => {
                return Err(RunError::Config(format!(
                    "{}: the image declares no {} device '{}' (it declares: {}); remove the option or rebuild the image with that device",
                    opt.spelled(),
                    opt.kind.name(),
                    opt.name,
                    list()
                )))
            }
            Some((_, Some(kind))) if *kind != opt.kind => {
                return Err(RunError::Config(format!(
                    "{}: the image declares '{}' as a {} device; use --{}:{}=…",
                    opt.spelled(),
                    opt.name,
                    kind.name(),
                    kind.name(),
                    opt.name
                )))
            }
            Some(_) => {}
        }
    }
    let mut matched = Vec::with_capacity(declared.len());
    for (name, kind) in &declared {
        let missing = match kind {
            Some(DeviceKind::Net) => format!(
                "image declares net device '{name}' but no --net:{name}=TAP is given; add --net:{name}=TAP naming an existing tap interface (see docs/networking.md)"
            ),
            Some(DeviceKind::Block) => format!(
                "image declares block device '{name}' but no --block:{name}=FILE is given; add --block:{name}=FILE[,ro] naming a disk image (see docs/storage.md)"
            ),
            None => {
                return Err(RunError::Config(format!(
                    "image declares device '{name}' of a kind this septem-run does not know"
                )))
            }
        };
        let Some(opt) = given.iter().find(|o| o.name == *name) else {
            return Err(RunError::Config(missing));
        };
        matched.push(opt);
    }
    Ok(matched)
}

/// Attaches the matched devices (see [`match_devices`]): opens each net device's tap
/// and builds its configuration (MAC given or random, MTU from the tap, address,
/// gateway, `dns`); opens each block device's file ([`block::open_block`]).
pub fn attach_devices(matched: &[&DeviceOpt], dns: Option<Ipv4Addr>) -> Result<Devices, RunError> {
    let mut devices = Devices::default();
    for opt in matched {
        if opt.kind == DeviceKind::Block {
            let file =
                block::open_block(&opt.name, &opt.target, opt.block.read_only, opt.block.sync)?;
            tracing::debug!(
                device = %opt.name,
                file = %opt.target,
                sectors = file.sectors,
                read_only = file.read_only,
                sync = opt.block.sync,
                "block device attached"
            );
            devices.list.push(AttachedDevice {
                boot: block::block_boot_device(&opt.name, &file),
                tap: None,
                block: Some(file.fd),
            });
            continue;
        }
        let tap = net::attach_tap(&opt.target)?;
        if !tap.up {
            tracing::warn!(
                "tap '{0}' is down: the guest's frames are dropped until `ip link set {0} up`",
                opt.target
            );
        }
        let mac = match opt.net.mac {
            Some(mac) => mac,
            None => net::random_mac().map_err(|source| RunError::HostSetup {
                what: "cannot draw a random MAC address (getrandom)".into(),
                source,
            })?,
        };
        let mut config = NetConfig {
            mac,
            mtu: tap.mtu,
            ..NetConfig::default()
        };
        if let Some((ip, prefix)) = opt.net.ipv4 {
            config.ipv4 = ip.octets();
            config.prefix_len = prefix;
            config.flags |= NET_HAS_ADDRESS;
        }
        if let Some(gw) = opt.net.gateway {
            config.gateway = gw.octets();
            config.flags |= NET_HAS_GATEWAY;
        }
        if let Some(dns) = dns {
            config.dns = dns.octets();
            config.flags |= NET_HAS_DNS;
        }
        tracing::debug!(
            device = %opt.name,
            tap = %opt.target,
            mac = %net::format_mac(&mac),
            mtu = tap.mtu,
            "net device attached"
        );
        devices.list.push(AttachedDevice {
            boot: net::net_boot_device(&opt.name, config),
            tap: Some(tap.fd),
            block: None,
        });
    }
    Ok(devices)
}

/// The guest memory size: `--mem`, else the manifest's default, else [`layout::DEFAULT_MEM`].
#[must_use]
pub fn memory_size(opt: Option<u64>, manifest: &Manifest) -> u64 {
    opt.unwrap_or(match manifest.header.default_mem_mib {
        0 => layout::DEFAULT_MEM,
        mib => u64::from(mib) << 20,
    })
}

/// argv\[0\] for the guest: the image's file name.
#[must_use]
pub fn argv0(path: &Path) -> String {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// Prepares everything backend-independent for a run.
pub fn prepare(opts: &RunOptions) -> Result<GuestSpec, RunError> {
    prepare_with_host_limit(opts, layout::host_memory_limit())
}

/// [`prepare`] with an explicit host memory limit (for tests).
pub fn prepare_with_host_limit(opts: &RunOptions, host_limit: u64) -> Result<GuestSpec, RunError> {
    if let Some(fifo) = &opts.start_fifo {
        crate::gate::check(fifo).map_err(|e| RunError::Config(e.to_string()))?;
    }
    let (image_bytes, image) = load_image(&opts.image)?;
    let matched = match_devices(&image.manifest, &opts.devices)?;
    let args: Vec<String> = std::iter::once(argv0(&opts.image))
        .chain(opts.args.iter().cloned())
        .collect();
    let env = opts.env.clone();
    let mem = memory_size(opts.mem, &image.manifest);
    let layout = Layout::compute(
        &image,
        mem,
        boot_area_size(&args, &env, matched.len()),
        host_limit,
    )?;
    let devices = attach_devices(&matched, opts.dns)?;
    tracing::debug!(
        image = %opts.image.display(),
        mem,
        entry = image.entry,
        segments = image.segments.len(),
        symbols = image.symbol_count(),
        "image validated"
    );
    Ok(GuestSpec {
        image_bytes,
        image,
        layout,
        args,
        env,
        dispatch: DispatchConfig {
            trace: opts.trace,
            net_devices: devices.net_mask(),
            blocks: devices.block_limits(),
        },
        devices,
        start_fifo: opts.start_fifo.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RunOptions;
    use crate::exit_status;
    use crate::select::BackendChoice;
    use septem_abi::manifest::{ManifestNote, FLAG_FINALIZED, NOTE_SIZE};
    use septem_abi::IMAGE_BASE;
    use std::path::PathBuf;

    /// A minimal finalized image: an r-x page, an rw- page (plus bss) and the note.
    fn image_bytes(manifest: &Manifest) -> Vec<u8> {
        let mut f = vec![0u8; 0x3000 + NOTE_SIZE];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4..7].copy_from_slice(&[2, 1, 1]);
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&IMAGE_BASE.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&3u16.to_le_bytes());
        let phs: [(u32, u32, u64, u64, u64, u64); 3] = [
            (1, 5, 0x1000, IMAGE_BASE, 0x10, 0x10),
            (1, 6, 0x2000, IMAGE_BASE + 0x1000, 0x10, 0x2000),
            (4, 4, 0x3000, 0, NOTE_SIZE as u64, 0),
        ];
        for (i, (ty, flags, off, vaddr, filesz, memsz)) in phs.into_iter().enumerate() {
            let at = 64 + i * 56;
            f[at..at + 4].copy_from_slice(&ty.to_le_bytes());
            f[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            f[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            f[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            f[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        f[0x1000] = 0xf4;
        let n = ManifestNote::UNFINALIZED;
        let mut note = Vec::new();
        for v in [n.namesz, n.descsz, n.note_type] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(&n.name);
        note.extend_from_slice(&n.desc.to_bytes());
        f[0x3000..].copy_from_slice(&note);
        septem_image::write_manifest(&mut f, manifest).unwrap();
        f
    }

    struct TempImage(PathBuf);

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp_image(tag: &str, manifest: &Manifest) -> TempImage {
        let path = std::env::temp_dir().join(format!(
            "septem-prepare-{}-{tag}.septem",
            std::process::id()
        ));
        std::fs::write(&path, image_bytes(manifest)).unwrap();
        TempImage(path)
    }

    fn manifest(devices: &[(DeviceKind, &str)], default_mem_mib: u32) -> Manifest {
        let mut m = Manifest::EMPTY;
        for (k, n) in devices {
            m.push_device(*k, n).unwrap();
        }
        m.header.flags = FLAG_FINALIZED;
        m.header.default_mem_mib = default_mem_mib;
        m
    }

    fn opts(image: &Path) -> RunOptions {
        RunOptions {
            backend: BackendChoice::Seccomp,
            mem: None,
            env: vec!["A=1".into()],
            trace: true,
            image: image.to_path_buf(),
            args: vec!["x".into()],
            devices: Vec::new(),
            dns: None,
            start_fifo: None,
        }
    }

    fn net(name: &str) -> DeviceOpt {
        net_on(name, "tap0")
    }

    fn net_on(name: &str, tap: &str) -> DeviceOpt {
        DeviceOpt {
            kind: DeviceKind::Net,
            name: name.into(),
            target: tap.into(),
            net: crate::cli::NetParams::default(),
            block: crate::cli::BlockParams::default(),
        }
    }

    #[test]
    fn prepares_a_plain_image() {
        let img = temp_image("plain", &manifest(&[], 0));
        let spec = prepare_with_host_limit(&opts(&img.0), u64::MAX).unwrap();
        let name = img.0.file_name().unwrap().to_str().unwrap();
        assert_eq!(spec.args, [name, "x"]);
        assert_eq!(spec.env, ["A=1"]);
        assert!(spec.dispatch.trace);
        assert_eq!(spec.layout.mem_size, layout::DEFAULT_MEM);
        assert_eq!(spec.layout.image_start, IMAGE_BASE);
    }

    #[test]
    fn memory_size_comes_from_option_then_manifest() {
        let img = temp_image("mem", &manifest(&[], 16));
        let spec = prepare_with_host_limit(&opts(&img.0), u64::MAX).unwrap();
        assert_eq!(spec.layout.mem_size, 16 << 20);
        let o = RunOptions {
            mem: Some(32 << 20),
            ..opts(&img.0)
        };
        assert_eq!(
            prepare_with_host_limit(&o, u64::MAX)
                .unwrap()
                .layout
                .mem_size,
            32 << 20
        );
    }

    #[test]
    fn memory_too_small_or_too_large_is_a_config_error() {
        let img = temp_image("limits", &manifest(&[], 0));
        for (mem, host, words) in [
            (1 << 20, u64::MAX, "too small"),
            (layout::MAX_MEM + 4096, u64::MAX, "Septem's maximum"),
            (8 << 30, 4 << 30, "the host's total memory"),
        ] {
            let o = RunOptions {
                mem: Some(mem),
                ..opts(&img.0)
            };
            let e = prepare_with_host_limit(&o, host).unwrap_err();
            assert_eq!(e.exit_status(), exit_status::BAD_CONFIG);
            assert!(e.to_string().contains(words), "{e}");
        }
    }

    #[test]
    fn declared_devices_must_be_given() {
        let img = temp_image("dev", &manifest(&[(DeviceKind::Net, "service")], 0));
        let e = prepare_with_host_limit(&opts(&img.0), u64::MAX).unwrap_err();
        assert_eq!(e.exit_status(), exit_status::BAD_CONFIG);
        assert_eq!(
            e.to_string(),
            "image declares net device 'service' but no --net:service=TAP is given; add --net:service=TAP naming an existing tap interface (see docs/networking.md)"
        );
        let o = RunOptions {
            devices: vec![DeviceOpt {
                kind: DeviceKind::Block,
                name: "service".into(),
                target: "disk.img".into(),
                net: crate::cli::NetParams::default(),
                block: crate::cli::BlockParams::default(),
            }],
            ..opts(&img.0)
        };
        let e = prepare_with_host_limit(&o, u64::MAX).unwrap_err();
        assert!(
            e.to_string().contains("declares 'service' as a net device"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_tap_is_refused_by_name() {
        let img = temp_image("notap", &manifest(&[(DeviceKind::Net, "service")], 0));
        let o = RunOptions {
            devices: vec![net_on("service", "septem-nx1")],
            ..opts(&img.0)
        };
        let e = prepare_with_host_limit(&o, u64::MAX).unwrap_err();
        assert_eq!(e.exit_status(), exit_status::BAD_CONFIG);
        assert!(
            e.to_string()
                .starts_with("tap 'septem-nx1' does not exist; create it with: ip tuntap add"),
            "{e}"
        );
    }

    #[test]
    fn block_devices_are_attached() {
        let img = temp_image(
            "blk",
            &manifest(&[(DeviceKind::Net, "n"), (DeviceKind::Block, "disk")], 0),
        );
        let mut o = opts(&img.0);
        o.devices = vec![DeviceOpt {
            kind: DeviceKind::Block,
            name: "disk".into(),
            target: "x.img".into(),
            net: crate::cli::NetParams::default(),
            block: crate::cli::BlockParams::default(),
        }];
        // Without --net:n the net device is missing; the block device alone is not enough.
        let e = prepare_with_host_limit(&o, u64::MAX).unwrap_err();
        assert!(e.to_string().contains("no --net:n=TAP"), "{e}");
        let img = temp_image("blk2", &manifest(&[(DeviceKind::Block, "disk")], 0));
        let e = prepare_with_host_limit(&opts(&img.0), u64::MAX).unwrap_err();
        assert_eq!(e.exit_status(), exit_status::BAD_CONFIG);
        assert_eq!(
            e.to_string(),
            "image declares block device 'disk' but no --block:disk=FILE is given; add --block:disk=FILE[,ro] naming a disk image (see docs/storage.md)"
        );
        let disk = img.0.with_extension("img");
        std::fs::write(&disk, vec![0u8; 8192]).unwrap();
        let mut o = opts(&img.0);
        o.devices = vec![DeviceOpt {
            kind: DeviceKind::Block,
            name: "disk".into(),
            target: disk.to_str().unwrap().into(),
            net: crate::cli::NetParams::default(),
            block: crate::cli::BlockParams {
                read_only: true,
                sync: false,
            },
        }];
        let spec = prepare_with_host_limit(&o, u64::MAX).unwrap();
        let _ = std::fs::remove_file(&disk);
        let table = spec.devices.boot_table();
        assert_eq!(table[0].block.sectors, 16);
        assert_eq!(table[0].block.flags, septem_abi::BLOCK_READ_ONLY);
        assert_eq!(spec.devices.block_fds().len(), 1);
        assert_eq!(
            spec.dispatch.block(0),
            Some(crate::dispatch::BlockLimits {
                sectors: 16,
                read_only: true
            })
        );
        assert_eq!(spec.dispatch.net_devices, 0);
    }

    #[test]
    fn undeclared_device_options_are_refused() {
        let img = temp_image("nodev", &manifest(&[], 0));
        let o = RunOptions {
            devices: vec![net("other")],
            ..opts(&img.0)
        };
        let e = prepare_with_host_limit(&o, u64::MAX).unwrap_err();
        assert_eq!(e.exit_status(), exit_status::BAD_CONFIG);
        assert!(
            e.to_string().starts_with(
                "--net:other=tap0: the image declares no net device 'other' (it declares: none)"
            ),
            "{e}"
        );
    }

    #[test]
    fn unreadable_and_invalid_images_are_bad_images() {
        let o = opts(Path::new("/nonexistent/septem.img"));
        let e = prepare_with_host_limit(&o, u64::MAX).unwrap_err();
        assert_eq!(e.exit_status(), exit_status::BAD_IMAGE);
        let mut m = manifest(&[], 0);
        m.header.flags = 0;
        let img = temp_image("unfinalized", &m);
        let e = prepare_with_host_limit(&opts(&img.0), u64::MAX).unwrap_err();
        assert_eq!(e.exit_status(), exit_status::BAD_IMAGE);
    }
}
