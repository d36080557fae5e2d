//! VM set-up: guest RAM, the monitor area (page tables, descriptor tables, stubs,
//! trampoline), the image, the boot area, and the vCPU's initial state.
//!
//! One VM, one vCPU, one memory slot: guest-physical `[0, mem_size)` = guest-virtual,
//! backed by one anonymous private mapping of the monitor.

use super::{gdt, idt, lowmem, paging, stubs, tss};
use crate::boot::{self, BootParams};
use crate::layout::Layout;
use crate::memory::{GuestMemory, Region, RegionKind};
use kvm_bindings::{
    kvm_dtable, kvm_msr_entry, kvm_segment, kvm_userspace_memory_region, Msrs,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, SyncReg, VcpuFd, VmFd};
use septem_abi::{GuestAddr, HYPERCALL_PORT_BASE, PAGE_SIZE};
use septem_image::Image;

/// A set-up failure: what failed and the OS error (0 when not an OS error).
#[derive(Debug, Clone)]
pub struct SetupError {
    /// What failed.
    pub what: String,
    /// The errno, or 0.
    pub errno: i32,
}

impl SetupError {
    fn os(what: impl Into<String>, e: kvm_ioctls::Error) -> Self {
        SetupError {
            what: what.into(),
            errno: e.errno(),
        }
    }

    pub(crate) fn other(what: impl Into<String>) -> Self {
        SetupError {
            what: what.into(),
            errno: 0,
        }
    }
}

/// CR0: protection, monitor coprocessor (SSE), extension type, numeric error, write
/// protect, paging.
pub const CR0: u64 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
/// CR4: PAE, OSFXSR, OSXMMEXCPT (SSE usable, SSE exceptions as #XM).
pub const CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10);
/// EFER: SCE (so `syscall` goes to LSTAR), LME, LMA, NXE.
pub const EFER: u64 = 1 | (1 << 8) | (1 << 10) | (1 << 11);

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;

/// Guest RAM: an anonymous private mapping. Never unmapped: the process that owns it
/// exits right after the guest does (see [`super::process`]).
#[derive(Debug)]
pub struct GuestRam {
    ptr: *mut u8,
    size: u64,
}

impl GuestRam {
    /// Maps `size` bytes of zeroed memory (no swap reservation).
    pub fn new(size: u64) -> Result<GuestRam, SetupError> {
        let len = usize::try_from(size).map_err(|_| SetupError::other("guest memory size"))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses; it does
        // not alias any Rust object. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SetupError {
                what: format!("cannot map {size} bytes of guest memory"),
                errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
        }
        Ok(GuestRam {
            ptr: ptr.cast(),
            size,
        })
    }

    /// Host address of guest-physical 0.
    #[must_use]
    pub fn host_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// How much of the heap's start and the stack's top [`warm_first_pages`] populates.
const WARM_HEAP: u64 = 1 << 20;
const WARM_STACK: u64 = 256 << 10;

/// Populates the host pages behind the start of the heap and the top of the stack,
/// where every guest begins to write. Under shadow paging (`kvm_pvm` here) the guest's
/// first touch of a page is a VM exit (~25 µs); when the host page is already there,
/// KVM maps its present neighbours in the same exit, so a server guest reached its
/// first request 2.5 ms sooner here (`First touch` in docs/kvm-backend.md) for ~1.25 MiB
/// of memory it would mostly have touched anyway. Populating costs ~0.8 ms, so it is
/// done only while a start gate hides it (`--start-fifo`: runnc, septem-cri). Best
/// effort: an old kernel without `MADV_POPULATE_WRITE` only skips it.
pub fn warm_first_pages(ram: &GuestRam, layout: &Layout) {
    let stack = WARM_STACK.min(layout.stack_top - layout.stack_bottom);
    let ranges = [
        (
            layout.heap_start,
            WARM_HEAP.min(layout.heap_end - layout.heap_start),
        ),
        (layout.stack_top - stack, stack),
    ];
    for (start, len) in ranges {
        if start.checked_add(len).is_none_or(|end| end > ram.size()) {
            continue;
        }
        let (Ok(offset), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
            continue;
        };
        // SAFETY: `[start, start + len)` lies inside the guest RAM mapping (checked
        // above); MADV_POPULATE_WRITE only faults its pages in, it changes no content.
        let rc = unsafe {
            libc::madvise(
                ram.host_ptr().add(offset).cast(),
                len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc != 0 {
            tracing::debug!("MADV_POPULATE_WRITE: {}", std::io::Error::last_os_error());
        }
    }
}

/// The guest's memory map for the page tables: the monitor area and every guest region.
#[must_use]
pub fn mappings(regions: &[Region]) -> Vec<paging::Mapping> {
    let mut maps: Vec<paging::Mapping> = lowmem::mappings().to_vec();
    maps.extend(regions.iter().map(|r| paging::Mapping {
        start: r.start,
        end: r.end,
        user: true,
        write: r.write,
        exec: r.exec,
    }));
    paging::coalesce(&maps)
}

/// Writes the monitor area into `mem` (set-up access): page tables for `regions`,
/// GDT, IDT, TSS, stubs, trampoline. Returns CR3.
pub fn write_monitor_area(
    mem: &mut GuestMemory,
    mem_size: u64,
    regions: &[Region],
) -> Result<u64, SetupError> {
    let tables = paging::build(
        mem_size,
        &mappings(regions),
        lowmem::PAGE_TABLES,
        lowmem::PAGE_TABLES_END,
    )
    .map_err(|e| SetupError::other(format!("guest page tables: {e}")))?;
    let tss_bytes = tss::bytes(lowmem::STACK0_TOP, lowmem::IST1_TOP, &[HYPERCALL_PORT_BASE]);
    let pieces: [(u64, Vec<u8>); 7] = [
        (tables.base, tables.bytes),
        (lowmem::GDT, gdt::bytes(lowmem::TSS, tss::LIMIT)),
        (
            lowmem::IDT,
            idt::bytes(|v| stubs::stub_address(lowmem::STUBS, v)),
        ),
        (lowmem::TSS, tss_bytes),
        (lowmem::STUBS, stubs::exception_stubs()),
        (lowmem::SYSCALL_PAGE, stubs::syscall_page()),
        (lowmem::TRAMPOLINE, stubs::trampoline()),
    ];
    for (at, bytes) in pieces {
        mem.setup_slice_mut(at, bytes.len() as u64)
            .map_err(|e| SetupError::other(format!("monitor area: {e}")))?
            .copy_from_slice(&bytes);
    }
    Ok(lowmem::PAGE_TABLES)
}

/// Copies the image's segments into guest memory (the rest of each segment is zero:
/// the memory is fresh).
pub fn load_image(
    mem: &mut GuestMemory,
    image: &Image,
    image_bytes: &[u8],
) -> Result<(), SetupError> {
    for s in &image.segments {
        let data = s.data(image_bytes);
        mem.setup_slice_mut(s.vaddr, data.len() as u64)
            .map_err(|e| SetupError::other(format!("loading segment at {:#x}: {e}", s.vaddr)))?
            .copy_from_slice(data);
    }
    Ok(())
}

/// The bounds-checked view of guest memory the dispatcher uses: the guest's regions
/// only (nothing of the monitor area).
pub fn guest_memory(ram: &GuestRam, regions: &[Region]) -> Result<GuestMemory, SetupError> {
    // SAFETY: `ram` maps `size` bytes read-write for the life of the process (it is
    // never unmapped), which covers every region added below.
    let mut mem = unsafe { GuestMemory::new(ram.host_ptr(), 0, ram.size()) };
    for r in regions {
        mem.add_region(*r)
            .map_err(|e| SetupError::other(format!("guest region: {e}")))?;
    }
    Ok(mem)
}

/// A read-only view of the fault record page, for the run loop.
pub fn fault_record_view(ram: &GuestRam) -> Result<GuestMemory, SetupError> {
    // SAFETY: as in `guest_memory`: the mapping lives as long as the process.
    let mut mem = unsafe { GuestMemory::new(ram.host_ptr(), 0, ram.size()) };
    mem.add_region(Region {
        start: lowmem::FAULT_RECORD,
        end: lowmem::FAULT_RECORD + PAGE_SIZE,
        read: true,
        write: false,
        exec: false,
        kind: RegionKind::Boot,
    })
    .map_err(|e| SetupError::other(format!("fault record view: {e}")))?;
    Ok(mem)
}

/// Opens `/dev/kvm` and checks the API version.
pub fn open_kvm() -> Result<Kvm, SetupError> {
    let kvm = Kvm::new().map_err(|e| SetupError::os("cannot open /dev/kvm", e))?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(SetupError::other(format!(
            "/dev/kvm speaks API version {v}, not 12"
        )));
    }
    Ok(kvm)
}

/// A VM with its memory slot registered and one vCPU, not yet started.
#[derive(Debug)]
pub struct Machine {
    /// The KVM system fd (kept open; needed by nothing after set-up).
    pub kvm: Kvm,
    /// The VM.
    pub vm: VmFd,
    /// The vCPU.
    pub vcpu: VcpuFd,
}

/// Creates the VM and vCPU and registers `ram` as slot 0 at guest-physical 0.
pub fn create(kvm: Kvm, ram: &GuestRam) -> Result<Machine, SetupError> {
    let vm = kvm
        .create_vm()
        .map_err(|e| SetupError::os("cannot create a KVM virtual machine", e))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.size(),
        userspace_addr: ram.host_ptr() as u64,
    };
    // SAFETY: `ram` is a live mapping of `memory_size` bytes that stays mapped for the
    // life of the process (and so of the VM).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| SetupError::os("cannot register guest memory with KVM", e))?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| SetupError::os("cannot create a KVM vCPU", e))?;
    Ok(Machine { kvm, vm, vcpu })
}

fn segment(selector: u16, type_: u8, dpl: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU in 64-bit mode at CPL3 at `entry` with `rsp` and RDI = `boot_info`.
pub fn init_vcpu(
    m: &mut Machine,
    cr3: u64,
    entry: u64,
    rsp: u64,
    boot_info: u64,
) -> Result<(), SetupError> {
    let cpuid = m
        .kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| SetupError::os("KVM_GET_SUPPORTED_CPUID", e))?;
    m.vcpu
        .set_cpuid2(&cpuid)
        .map_err(|e| SetupError::os("KVM_SET_CPUID2", e))?;

    let mut sregs = m
        .vcpu
        .get_sregs()
        .map_err(|e| SetupError::os("KVM_GET_SREGS", e))?;
    let user_data = segment(gdt::USER_DS, gdt::TYPE_DATA, 3, false);
    sregs.cs = segment(gdt::USER_CS, gdt::TYPE_CODE, 3, true);
    sregs.ss = user_data;
    sregs.ds = user_data;
    sregs.es = user_data;
    sregs.fs = user_data;
    sregs.gs = user_data;
    sregs.tr = kvm_segment {
        base: lowmem::TSS,
        limit: tss::LIMIT,
        selector: gdt::TSS_SEL,
        type_: gdt::TYPE_TSS_BUSY,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        present: 0,
        type_: 2,
        ..sregs.ldt
    };
    sregs.gdt = kvm_dtable {
        base: lowmem::GDT,
        limit: (gdt::ENTRIES * 8 - 1) as u16,
        padding: [0; 3],
    };
    sregs.idt = kvm_dtable {
        base: lowmem::IDT,
        limit: (256 * 16 - 1) as u16,
        padding: [0; 3],
    };
    sregs.cr0 = CR0;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4;
    sregs.efer = EFER;
    m.vcpu
        .set_sregs(&sregs)
        .map_err(|e| SetupError::os("KVM_SET_SREGS (long mode at CPL3)", e))?;

    let star = (u64::from(gdt::KERNEL_CS) << 32) | ((u64::from(gdt::USER_DS & !3) - 8) << 48);
    let msrs = Msrs::from_entries(&[
        msr(MSR_STAR, star),
        msr(MSR_LSTAR, lowmem::SYSCALL_PAGE),
        msr(MSR_CSTAR, lowmem::SYSCALL_PAGE),
        msr(MSR_SFMASK, 0x4_7700), // clear TF, IF, DF, AC, NT, IOPL on entry
    ])
    .map_err(|_| SetupError::other("MSR list"))?;
    let set = m
        .vcpu
        .set_msrs(&msrs)
        .map_err(|e| SetupError::os("KVM_SET_MSRS", e))?;
    if set != msrs.as_slice().len() {
        return Err(SetupError::other(format!(
            "KVM_SET_MSRS: only {set} of {} syscall MSRs accepted",
            msrs.as_slice().len()
        )));
    }

    let mut regs = m
        .vcpu
        .get_regs()
        .map_err(|e| SetupError::os("KVM_GET_REGS", e))?;
    regs.rip = entry;
    regs.rsp = rsp;
    regs.rdi = boot_info;
    regs.rflags = 0x2;
    m.vcpu
        .set_regs(&regs)
        .map_err(|e| SetupError::os("KVM_SET_REGS", e))?;

    // Registers (and, for failure reports, special registers and events) come back in
    // the kvm_run page on every exit: no GET_REGS ioctl in the run loop.
    m.vcpu.set_sync_valid_reg(SyncReg::Register);
    m.vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
    m.vcpu.set_sync_valid_reg(SyncReg::VcpuEvents);
    Ok(())
}

fn msr(index: u32, data: u64) -> kvm_msr_entry {
    kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }
}

/// Everything the run loop needs, set up.
#[derive(Debug)]
pub struct Prepared {
    /// VM and vCPU.
    pub machine: Machine,
    /// Guest RAM.
    pub ram: GuestRam,
    /// The dispatcher's view of guest memory.
    pub mem: GuestMemory,
    /// The monitor's view of the fault record.
    pub fault_view: GuestMemory,
    /// Where `BootInfo` is (for [`crate::boot::restamp_clocks`]).
    pub boot_info: GuestAddr,
}

/// Builds the whole machine for `image` in `layout`, with the boot area from `params`
/// (whose `hypercall` and `backend` are filled in here).
pub fn prepare(
    image: &Image,
    image_bytes: &[u8],
    layout: &Layout,
    args: &[String],
    env: &[String],
    devices: &[septem_abi::BootDevice],
    clocks: (u64, u64),
) -> Result<Prepared, SetupError> {
    let kvm = open_kvm()?;
    let ram = GuestRam::new(layout.mem_size)?;
    let regions = layout.regions(image);
    let mut setup = guest_memory(&ram, &[])?;
    let cr3 = write_monitor_area(&mut setup, layout.mem_size, &regions)?;
    load_image(&mut setup, image, image_bytes)?;
    let mem = guest_memory(&ram, &regions)?;
    let params = BootParams {
        args,
        env,
        devices,
        hypercall: lowmem::TRAMPOLINE,
        backend: septem_abi::boot::backend::KVM,
        monotonic_ns: clocks.0,
        wall_ns: clocks.1,
    };
    let info: GuestAddr = boot::write_boot_area(&mem, layout, &params)
        .map_err(|e| SetupError::other(format!("boot area: {e}")))?;
    let mut machine = create(kvm, &ram)?;
    // As after a `call`: 16-byte aligned minus the return address slot.
    init_vcpu(
        &mut machine,
        cr3,
        image.entry,
        layout.stack_top - 8,
        info.raw(),
    )?;
    let fault_view = fault_record_view(&ram)?;
    Ok(Prepared {
        machine,
        ram,
        mem,
        fault_view,
        boot_info: info,
    })
}
