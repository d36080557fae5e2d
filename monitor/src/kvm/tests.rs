//! End-to-end tests of the KVM machine on hand-assembled CPL3 code: a hypercall round
//! trip through the trampoline, SSE, faults of every kind, a `syscall`. They run the
//! vCPU in the test process (no fork, no seal) with a recording host, and skip with a
//! printed reason when `/dev/kvm` is not usable.

use super::fault::Context;
use super::{vcpu, vm};
use crate::boot::boot_area_size;
use crate::dispatch::{DispatchConfig, Host, Stream};
use crate::exit_status;
use crate::layout::Layout;
use septem_abi::manifest::{ManifestNote, NOTE_SIZE};
use septem_abi::{HcError, IMAGE_BASE};
use septem_image::Image;

const TEXT: u64 = IMAGE_BASE;
const DATA: u64 = IMAGE_BASE + 0x1000;
const TRAMPOLINE: u32 = super::lowmem::TRAMPOLINE as u32;

/// Console and clock, recorded.
#[derive(Debug, Default)]
struct Recorder {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    clock: u64,
}

impl Host for Recorder {
    fn console_write(&mut self, stream: Stream, data: &[u8]) -> Result<usize, HcError> {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(data),
            Stream::Stderr => self.stderr.extend_from_slice(data),
        }
        Ok(data.len())
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
    fn wall_ns(&mut self) -> u64 {
        1
    }
    fn wait_until(&mut self, _deadline_ns: u64, _wait_set: u64) -> u64 {
        0
    }
}

/// A few instruction encodings (checked with `objdump -D -b binary -mi386:x86-64`).
#[derive(Default)]
struct Code(Vec<u8>);

impl Code {
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn imm(&mut self, op: &[u8], v: u32) -> &mut Self {
        self.b(op).b(&v.to_le_bytes())
    }
    /// `mov edi, nr; mov esi, arg; mov eax, TRAMPOLINE; call rax`
    fn hypercall(&mut self, nr: u32, arg: u64) -> &mut Self {
        self.imm(&[0xbf], nr)
            .imm(&[0xbe], arg as u32)
            .imm(&[0xb8], TRAMPOLINE)
            .b(&[0xff, 0xd0])
    }
    /// `mov [DATA], eax; mov dword [DATA+4], 0` then the exit hypercall on DATA.
    fn exit_with_eax(&mut self) -> &mut Self {
        self.imm(&[0x89, 0x04, 0x25], DATA as u32)
            .imm(&[0xc7, 0x04, 0x25], DATA as u32 + 4)
            .b(&0u32.to_le_bytes())
            .hypercall(septem_abi::Hypercall::Exit as u32, DATA)
            .b(&[0x0f, 0x0b]) // ud2: exit must not return
    }
}

/// An ELF image: `code` at TEXT (r-x), 8 KiB of data at DATA (rw-), the manifest note.
fn image(code: &[u8]) -> (Vec<u8>, Image) {
    let mut f = vec![0u8; 0x3000 + NOTE_SIZE];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[24..32].copy_from_slice(&TEXT.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&3u16.to_le_bytes());
    let phs: [(u32, u32, u64, u64, u64, u64); 3] = [
        (1, 5, 0x1000, TEXT, code.len() as u64, code.len() as u64),
        (1, 6, 0x2000, DATA, 0x10, 0x2000),
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
    f[0x1000..0x1000 + code.len()].copy_from_slice(code);
    let n = ManifestNote::UNFINALIZED;
    let mut note = Vec::new();
    note.extend_from_slice(&n.namesz.to_le_bytes());
    note.extend_from_slice(&n.descsz.to_le_bytes());
    note.extend_from_slice(&n.note_type.to_le_bytes());
    note.extend_from_slice(&n.name);
    note.extend_from_slice(&n.desc.to_bytes());
    f[0x3000..].copy_from_slice(&note);
    let img = Image::parse(&f).expect("test image parses");
    (f, img)
}

fn kvm_usable() -> bool {
    match super::probe() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIP: KVM not usable here: {why}");
            false
        }
    }
}

/// Runs `code` in a fresh VM; returns (status, stdout, stderr).
fn run(code: &Code) -> (u8, String, String) {
    run_with(code, |_| {})
}

/// As [`run`], after `tweak` adjusts the prepared vCPU.
fn run_with(code: &Code, tweak: impl FnOnce(&mut vm::Machine)) -> (u8, String, String) {
    let (bytes, img) = image(&code.0);
    let args = vec!["test".to_string()];
    let layout = Layout::compute(&img, 16 << 20, boot_area_size(&args, &[], 0), u64::MAX).unwrap();
    let mut p = vm::prepare(&img, &bytes, &layout, &args, &[], &[], (1, 2)).expect("VM set-up");
    tweak(&mut p.machine);
    let mut host = Recorder::default();
    let ctx = Context {
        image: &img,
        layout: &layout,
        mem: &p.mem,
    };
    let stopped = vcpu::run(
        &mut p.machine.vcpu,
        &p.mem,
        &p.fault_view,
        &mut host,
        DispatchConfig::default(),
        &ctx,
    );
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    (stopped.status, text(&host.stdout), text(&host.stderr))
}

#[test]
fn hypercall_round_trip_preserves_registers_and_sse_works() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0xbb], 0x1234) // mov ebx, 0x1234 (callee-saved)
        .hypercall(0x99, DATA + 0x100) // unknown number: rax = -3
        .b(&[0xf7, 0xd8]) // neg eax
        .imm(&[0x81, 0xfb], 0x1234) // cmp ebx, 0x1234
        .b(&[0x74, 0x02, 0x0f, 0x0b]) // je +2; ud2
        .b(&[0x66, 0x48, 0x0f, 0x6e, 0xc0]) // movq xmm0, rax
        .b(&[0x66, 0x0f, 0xd4, 0xc0]) // paddq xmm0, xmm0
        .b(&[0x66, 0x48, 0x0f, 0x7e, 0xc0]) // movq rax, xmm0
        .exit_with_eax();
    let (status, _, err) = run(&c);
    assert_eq!(status, 6, "stderr: {err}");
}

#[test]
fn console_write_reaches_the_host() {
    if !kvm_usable() {
        return;
    }
    // ConsoleWriteArgs at DATA+0x100 { data: DATA+0x200, len: 3, stream: 1 }, "hi\n".
    let args = DATA as u32 + 0x100;
    let mut c = Code::default();
    c.imm(&[0xc7, 0x04, 0x25], args)
        .b(&(DATA as u32 + 0x200).to_le_bytes())
        .imm(&[0xc7, 0x04, 0x25], args + 8)
        .b(&3u32.to_le_bytes())
        .imm(&[0xc7, 0x04, 0x25], args + 16)
        .b(&1u32.to_le_bytes())
        .imm(&[0xc7, 0x04, 0x25], DATA as u32 + 0x200)
        .b(b"hi\n\0")
        .hypercall(1, u64::from(args))
        .exit_with_eax(); // rax = 3 bytes written
    let (status, out, err) = run(&c);
    assert_eq!((status, out.as_str()), (3, "hi\n"), "stderr: {err}");
}

fn hypercall_loop(n: u32) -> Code {
    let mut c = Code::default();
    c.imm(&[0xbb], n); // mov ebx, n
    let top = c.0.len();
    c.hypercall(2, DATA + 0x100).b(&[0xff, 0xcb]); // dec ebx
    let back = top as i64 - (c.0.len() as i64 + 2);
    c.b(&[0x75, back as i8 as u8]); // jnz top
    c.imm(&[0xb8], 7).exit_with_eax();
    c
}

#[test]
fn hypercall_cost() {
    if !kvm_usable() {
        return;
    }
    const N: u32 = 2000;
    let timed = |n| {
        let t = std::time::Instant::now();
        let (status, _, err) = run(&hypercall_loop(n));
        assert_eq!(status, 7, "stderr: {err}");
        t.elapsed().as_secs_f64()
    };
    let base = timed(1);
    let per = (timed(N + 1) - base) * 1e6 / f64::from(N);
    eprintln!(
        "KVM hypercall round trip: {per:.1} us; one VM set-up + run + drop: {:.1} ms",
        base * 1e3
    );
}

fn expect_fault(c: &Code, status: u8, words: &[&str]) {
    let (got, _, err) = run(c);
    assert_eq!(got, status, "stderr: {err}");
    for w in words {
        assert!(err.contains(w), "{w:?} not in report: {err}");
    }
}

#[test]
fn null_read_is_a_page_fault() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0x48, 0x8b, 0x04, 0x25], 0); // mov rax, [0]
    expect_fault(
        &c,
        exit_status::GUEST_FAULT,
        &[
            "page fault at address 0x0",
            "read of unmapped memory",
            "rip=0x100000",
        ],
    );
}

#[test]
fn write_to_text_is_a_protection_fault() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0xc6, 0x04, 0x25], TEXT as u32).b(&[1]); // mov byte [TEXT], 1
    expect_fault(
        &c,
        exit_status::GUEST_FAULT,
        &[
            "page fault at address 0x100000",
            "write to read-only memory",
        ],
    );
}

#[test]
fn executing_data_is_an_nx_fault() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0xb8], DATA as u32).b(&[0xff, 0xe0]); // mov eax, DATA; jmp rax
    expect_fault(
        &c,
        exit_status::GUEST_FAULT,
        &[
            "page fault at address 0x101000",
            "instruction fetch from non-executable memory",
        ],
    );
}

#[test]
fn monitor_pages_are_not_guest_accessible() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(
        &[0x48, 0x8b, 0x04, 0x25],
        super::lowmem::FAULT_RECORD as u32,
    ); // mov rax, [rec]
    expect_fault(
        &c,
        exit_status::GUEST_FAULT,
        &[
            "page fault at address 0x9000",
            "read of non-readable memory",
        ],
    );
    let mut c = Code::default();
    c.imm(&[0xc6, 0x04, 0x25], TRAMPOLINE).b(&[0x90]); // patch the trampoline
    expect_fault(&c, exit_status::GUEST_FAULT, &["write to read-only memory"]);
}

#[test]
fn ud2_is_an_invalid_opcode() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.b(&[0x90, 0x0f, 0x0b]); // nop; ud2
    expect_fault(
        &c,
        exit_status::GUEST_FAULT,
        &["invalid opcode", "rip=0x100001"],
    );
}

#[test]
fn closed_ports_and_privileged_instructions_are_gp_faults() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0xba], u32::from(super::lowmem::FAULT_PORT))
        .b(&[0xee]); // out to the fault port
    expect_fault(&c, exit_status::GUEST_FAULT, &["general protection fault"]);
    let mut c = Code::default();
    c.b(&[0xf4]); // hlt
    expect_fault(&c, exit_status::GUEST_FAULT, &["general protection fault"]);
    // `int 14`: the gate's DPL is 0, so hardware raises #GP; kvm_pvm raises #UD.
    // Either way the stub is not entered as if it were a page fault.
    let mut c = Code::default();
    c.b(&[0xcd, 0x0e]);
    let (status, _, err) = run(&c);
    assert_eq!(status, exit_status::GUEST_FAULT);
    assert!(
        err.contains("general protection fault") || err.contains("invalid opcode"),
        "{err}"
    );
}

#[test]
fn reading_the_hypercall_port_stops_the_vm() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0xba], 0x500).b(&[0xec]); // mov edx, 0x500; in al, dx
    expect_fault(
        &c,
        exit_status::VM_FAILURE,
        &["guest read from I/O port (0x500)"],
    );
}

#[test]
fn divide_by_zero_is_reported() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.b(&[0x31, 0xc9, 0x31, 0xd2, 0xf7, 0xf1]); // xor ecx,ecx; xor edx,edx; div ecx
    expect_fault(&c, exit_status::GUEST_FAULT, &["divide error"]);
}

#[test]
fn syscall_is_caught() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0xb8], 39).b(&[0x0f, 0x05]); // mov eax, 39; syscall
    expect_fault(
        &c,
        exit_status::FORBIDDEN_SYSCALL,
        &["guest executed a syscall instruction (rax = 39, getpid?) at 0x100005"],
    );
}

#[test]
fn int80_and_sysenter_are_syscall_attempts() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.imm(&[0xb8], 20).b(&[0xcd, 0x80]); // mov eax, 20; int 0x80
    expect_fault(
        &c,
        exit_status::FORBIDDEN_SYSCALL,
        &["guest executed int 0x80 (a 32-bit syscall) (eax = 20) at 0x100005"],
    );
    let mut c = Code::default();
    c.imm(&[0xb8], 20).b(&[0x0f, 0x34]); // mov eax, 20; sysenter
    expect_fault(&c, exit_status::FORBIDDEN_SYSCALL, &["sysenter"]);
}

#[test]
fn stack_overflow_hits_the_guard_page() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.b(&[0x50, 0xeb, 0xfd]); // 1: push rax; jmp 1b
    expect_fault(&c, exit_status::GUEST_FAULT, &["stack overflow"]);
}

#[test]
fn without_an_idt_a_fault_is_a_reported_triple_fault() {
    if !kvm_usable() {
        return;
    }
    let mut c = Code::default();
    c.b(&[0x90, 0x90, 0x0f, 0x0b]); // nop; nop; ud2
    let (status, _, err) = run_with(&c, |m| {
        let mut sregs = m.vcpu.get_sregs().unwrap();
        sregs.idt.limit = 0;
        m.vcpu.set_sregs(&sregs).unwrap();
    });
    assert_eq!(status, exit_status::VM_FAILURE, "{err}");
    assert!(
        err.contains("virtual machine failure: triple fault"),
        "{err}"
    );
    eprintln!("{err}");
}
