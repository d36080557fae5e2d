//! Hand-assembled guest code: the hypercall trampoline, the ring-0 exception stubs and
//! the `syscall` catcher. Each instruction is emitted by a tiny encoder below whose
//! comment shows the assembly; a unit test disassembles the result with `objdump` and
//! compares it with the expected listing.
//!
//! # Hypercall scheme (one exit per hypercall, no extra ioctl)
//!
//! The guest calls `BootInfo::hypercall(nr, arg)` (sysv64: `nr` in RDI, `arg` in RSI).
//! The trampoline is
//!
//! ```text
//! mov edx, 0x500      ; HYPERCALL_PORT_BASE, the one port the TSS bitmap opens
//! out dx, al          ; exit to the monitor (a 1-byte access: only bit 0x500 is checked)
//! ret                 ; RAX = the result the monitor put there
//! ```
//!
//! The vCPU runs with `KVM_CAP_SYNC_REGS`: on every exit KVM copies the general
//! registers into the shared `kvm_run` page, and on the next `KVM_RUN` copies them back
//! when the monitor marks them dirty. So the monitor reads RDI/RSI (all 64 bits: guest
//! memory may be up to 64 GiB) and writes RAX without a single extra ioctl, and no page
//! below `IMAGE_BASE` is ever guest-writable. RDX is clobbered, which sysv64 allows.
//! Guest code that does `out` to the port by itself just makes a hypercall with
//! whatever its RDI/RSI hold (the same as calling the trampoline).
//!
//! # Exception stubs (ring 0, no SSE: under `kvm_pvm` they are emulated)
//!
//! Vector `v`'s stub pushes a zero error code when the CPU does not push one, then `v`,
//! and jumps to the common tail, which stores the general registers, then pops vector,
//! error code, RIP, CS, RFLAGS, RSP, SS into the [`FaultRecord`](super::fault::FaultRecord)
//! page, adds CR2, and does `out` to the fault port (closed to CPL3). The monitor never
//! resumes the vCPU after that.
//!
//! # `syscall`
//!
//! `LSTAR` points at a supervisor page. Under `kvm_pvm` a CPL3 `syscall` jumps there at
//! CPL3, which is a #PF on an instruction fetch at exactly that address (RAX = number,
//! RCX = return address). On hardware KVM `syscall` enters ring 0 there with the user
//! stack, so the page holds a stub that needs no stack: it records the registers with
//! vector [`SYSCALL_VECTOR`] and reports on the fault port.

use super::fault::rec;
use super::idt;
use super::lowmem::{FAULT_PORT, FAULT_RECORD};
use septem_abi::HYPERCALL_PORT_BASE;

/// Pseudo-vector recorded by the hardware-path `syscall` stub.
pub const SYSCALL_VECTOR: u64 = 0x100;
/// Bytes per vector stub.
pub const STUB_SIZE: u64 = 16;
/// Offset of the common tail in the stub page.
pub const COMMON_OFFSET: u64 = STUB_SIZE * idt::VECTORS as u64;

/// General-purpose register numbers (as in ModRM.reg with REX.R).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Reg {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

/// Where each saved general register goes in the fault record.
const SAVED: [(Reg, u64); 15] = [
    (Reg::Rax, rec::RAX),
    (Reg::Rbx, rec::RBX),
    (Reg::Rcx, rec::RCX),
    (Reg::Rdx, rec::RDX),
    (Reg::Rsi, rec::RSI),
    (Reg::Rdi, rec::RDI),
    (Reg::Rbp, rec::RBP),
    (Reg::R8, rec::R8),
    (Reg::R9, rec::R9),
    (Reg::R10, rec::R10),
    (Reg::R11, rec::R11),
    (Reg::R12, rec::R12),
    (Reg::R13, rec::R13),
    (Reg::R14, rec::R14),
    (Reg::R15, rec::R15),
];

/// A byte buffer with one method per instruction form we need.
#[derive(Debug, Default)]
struct Asm {
    code: Vec<u8>,
}

impl Asm {
    fn emit(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
    }

    fn here(&self) -> u64 {
        self.code.len() as u64
    }

    /// `push imm8` (sign-extended to 64 bits): `6a ib`.
    fn push_imm8(&mut self, v: u8) {
        self.emit(&[0x6a, v]);
    }

    /// `jmp rel32` to `target` (an offset in this buffer): `e9 cd`.
    fn jmp_to(&mut self, target: u64) {
        let rel = target as i64 - (self.here() as i64 + 5);
        self.emit(&[0xe9]);
        self.emit(&(rel as i32).to_le_bytes());
    }

    /// `mov qword [abs32], reg`: `REX.W(+R) 89 /r` with ModRM mod=00 r/m=100 and
    /// SIB 0x25 (no base, no index: an absolute sign-extended disp32).
    fn store(&mut self, addr: u64, reg: Reg) {
        let r = reg as u8;
        let rex = 0x48 | if r >= 8 { 0x04 } else { 0 };
        self.emit(&[rex, 0x89, ((r & 7) << 3) | 0x04, 0x25]);
        self.emit(&(addr as u32).to_le_bytes());
    }

    /// `pop rax`: `58`.
    fn pop_rax(&mut self) {
        self.emit(&[0x58]);
    }

    /// `mov rax, cr2`: `0f 20 d0`.
    fn mov_rax_cr2(&mut self) {
        self.emit(&[0x0f, 0x20, 0xd0]);
    }

    /// `mov eax, imm32` (zero-extends into RAX): `b8 id`.
    fn mov_eax(&mut self, v: u32) {
        self.emit(&[0xb8]);
        self.emit(&v.to_le_bytes());
    }

    /// `mov edx, imm32`: `ba id`.
    fn mov_edx(&mut self, v: u32) {
        self.emit(&[0xba]);
        self.emit(&v.to_le_bytes());
    }

    /// `out dx, al`: `ee`.
    fn out_dx_al(&mut self) {
        self.emit(&[0xee]);
    }

    /// `1: hlt; jmp 1b`: `f4 eb fd` (never resumed; a safe place to stop if it were).
    fn halt_forever(&mut self) {
        self.emit(&[0xf4, 0xeb, 0xfd]);
    }

    /// `ret`: `c3`.
    fn ret(&mut self) {
        self.emit(&[0xc3]);
    }

    /// `int3` padding: `cc`.
    fn pad_to(&mut self, len: u64) {
        while self.here() < len {
            self.emit(&[0xcc]);
        }
    }

    fn save_gprs(&mut self) {
        for (reg, off) in SAVED {
            self.store(FAULT_RECORD + off, reg);
        }
    }

    fn report(&mut self) {
        self.mov_edx(u32::from(FAULT_PORT));
        self.out_dx_al();
        self.halt_forever();
    }
}

/// The hypercall trampoline (see the module documentation).
#[must_use]
pub fn trampoline() -> Vec<u8> {
    let mut a = Asm::default();
    a.mov_edx(u32::from(HYPERCALL_PORT_BASE));
    a.out_dx_al();
    a.ret();
    a.code
}

/// The exception stub page: 32 entry stubs of [`STUB_SIZE`] bytes, then the tail.
#[must_use]
pub fn exception_stubs() -> Vec<u8> {
    let mut a = Asm::default();
    for v in 0..idt::VECTORS as u8 {
        if !idt::has_error_code(v) {
            a.push_imm8(0);
        }
        a.push_imm8(v);
        a.jmp_to(COMMON_OFFSET);
        a.pad_to((u64::from(v) + 1) * STUB_SIZE);
    }
    debug_assert_eq!(a.here(), COMMON_OFFSET);
    a.save_gprs();
    // Frame: vector, error code, RIP, CS, RFLAGS, RSP, SS.
    for off in [
        rec::VECTOR,
        rec::ERROR,
        rec::RIP,
        rec::CS,
        rec::RFLAGS,
        rec::RSP,
        rec::SS,
    ] {
        a.pop_rax();
        a.store(FAULT_RECORD + off, Reg::Rax);
    }
    a.mov_rax_cr2();
    a.store(FAULT_RECORD + rec::CR2, Reg::Rax);
    a.report();
    a.code
}

/// The page `LSTAR` points at (runs only on hardware KVM, in ring 0 on the user stack).
#[must_use]
pub fn syscall_page() -> Vec<u8> {
    let mut a = Asm::default();
    a.save_gprs();
    a.store(FAULT_RECORD + rec::RSP, Reg::Rsp);
    a.store(FAULT_RECORD + rec::RIP, Reg::Rcx); // return address
    a.store(FAULT_RECORD + rec::RFLAGS, Reg::R11);
    a.mov_eax(SYSCALL_VECTOR as u32);
    a.store(FAULT_RECORD + rec::VECTOR, Reg::Rax);
    a.report();
    a.code
}

/// Address of vector `v`'s stub, given the stub page's address.
#[must_use]
pub fn stub_address(page: u64, v: u8) -> u64 {
    page + u64::from(v) * STUB_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Disassembles `code` with objdump; `None` (and a printed reason) without it.
    fn disassemble(code: &[u8]) -> Option<Vec<String>> {
        let dir = tempdir();
        let path = dir.join("code.bin");
        std::fs::write(&path, code).unwrap();
        let out = Command::new("objdump")
            .args(["-D", "-b", "binary", "-mi386:x86-64", "-M", "intel"])
            .arg(&path)
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        let out = match out {
            Ok(o) if o.status.success() => o,
            _ => {
                eprintln!("SKIP: objdump not available to check the hand-assembled code");
                return None;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        Some(
            text.lines()
                .filter_map(|l| {
                    let mut parts = l.splitn(3, '\t');
                    let addr = parts.next()?.trim();
                    if !addr.ends_with(':') || addr.contains(' ') {
                        return None;
                    }
                    parts.next()?;
                    let asm = parts.next()?.split('#').next()?.trim();
                    Some(asm.split_whitespace().collect::<Vec<_>>().join(" "))
                })
                .collect(),
        )
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "septem-stubs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn trampoline_disassembles() {
        let code = trampoline();
        assert_eq!(code, [0xba, 0x00, 0x05, 0x00, 0x00, 0xee, 0xc3]);
        if let Some(lines) = disassemble(&code) {
            assert_eq!(lines, ["mov edx,0x500", "out dx,al", "ret"]);
        }
    }

    #[test]
    fn exception_stubs_disassemble() {
        let code = exception_stubs();
        assert!(code.len() <= 4096);
        let Some(lines) = disassemble(&code[..COMMON_OFFSET as usize]) else {
            return;
        };
        // Vector 0: no error code; vector 14 (#PF): the CPU pushes one.
        assert_eq!(lines[0], "push 0x0");
        assert_eq!(lines[1], "push 0x0");
        assert_eq!(lines[2], format!("jmp 0x{COMMON_OFFSET:x}"));
        let pf = lines
            .iter()
            .position(|l| l == "push 0xe")
            .expect("#PF stub");
        assert_eq!(lines[pf - 1], "int3", "#PF pushes no fake error code");
        assert_eq!(lines[pf + 1], format!("jmp 0x{COMMON_OFFSET:x}"));
        let tail = disassemble(&code[COMMON_OFFSET as usize..]).unwrap();
        let r = FAULT_RECORD;
        let mut want: Vec<String> = vec![
            format!("mov QWORD PTR ds:0x{:x},rax", r + rec::RAX),
            format!("mov QWORD PTR ds:0x{:x},rbx", r + rec::RBX),
            format!("mov QWORD PTR ds:0x{:x},rcx", r + rec::RCX),
            format!("mov QWORD PTR ds:0x{:x},rdx", r + rec::RDX),
            format!("mov QWORD PTR ds:0x{:x},rsi", r + rec::RSI),
            format!("mov QWORD PTR ds:0x{:x},rdi", r + rec::RDI),
            format!("mov QWORD PTR ds:0x{:x},rbp", r + rec::RBP),
        ];
        for (i, off) in (8..16).zip([
            rec::R8,
            rec::R9,
            rec::R10,
            rec::R11,
            rec::R12,
            rec::R13,
            rec::R14,
            rec::R15,
        ]) {
            want.push(format!("mov QWORD PTR ds:0x{:x},r{i}", r + off));
        }
        for off in [
            rec::VECTOR,
            rec::ERROR,
            rec::RIP,
            rec::CS,
            rec::RFLAGS,
            rec::RSP,
            rec::SS,
        ] {
            want.push("pop rax".into());
            want.push(format!("mov QWORD PTR ds:0x{:x},rax", r + off));
        }
        want.push("mov rax,cr2".into());
        want.push(format!("mov QWORD PTR ds:0x{:x},rax", r + rec::CR2));
        want.push(format!("mov edx,0x{FAULT_PORT:x}"));
        want.push("out dx,al".into());
        want.push("hlt".into());
        assert_eq!(&tail[..want.len()], &want[..]);
        assert!(tail[want.len()].starts_with("jmp"));
    }

    #[test]
    fn syscall_page_disassembles() {
        let Some(lines) = disassemble(&syscall_page()) else {
            return;
        };
        let r = FAULT_RECORD;
        assert!(lines.contains(&format!("mov QWORD PTR ds:0x{:x},rsp", r + rec::RSP)));
        assert!(lines.contains(&format!("mov QWORD PTR ds:0x{:x},rcx", r + rec::RIP)));
        assert!(lines.contains(&format!("mov QWORD PTR ds:0x{:x},r11", r + rec::RFLAGS)));
        assert!(lines.contains(&"mov eax,0x100".to_string()));
        assert!(lines.contains(&"out dx,al".to_string()));
    }

    #[test]
    fn every_vector_stub_fits_its_slot() {
        let code = exception_stubs();
        for v in 0..idt::VECTORS as u8 {
            let at = (stub_address(0, v)) as usize;
            let push_v = if idt::has_error_code(v) { 0 } else { 2 };
            assert_eq!(code[at + push_v], 0x6a);
            assert_eq!(code[at + push_v + 1], v);
        }
    }
}
