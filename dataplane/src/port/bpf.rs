//! The daemon's own XDP programs, assembled here as BPF bytecode (a dozen instructions: no clang,
//! no libbpf, nothing to ship), and the `bpf()` calls that create the XSK map, load the program
//! and attach it with a BPF link (detached automatically when the daemon exits).
//!
//! - VM ports: every packet goes to the XSK of its receive queue (`XDP_PASS` if none).
//! - Fabric NIC: only unfragmented IPv4 to this host's address carrying MPLS over UDP (dst port
//!   6635 or 51234) or MPLS over GRE (protocol 0x8847) goes to the XSK; everything else (ARP,
//!   the host's own traffic) passes to the kernel.

use super::sys::PortError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: i32 = 2;
const FUNC_REDIRECT_MAP: i32 = 51;
/// `XDP_FLAGS_SKB_MODE`.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
/// `XDP_FLAGS_DRV_MODE`.
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

/// One BPF instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// A tiny assembler with forward labels.
struct Asm {
    code: Vec<Insn>,
    /// (instruction index, label) to patch.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn new() -> Self {
        Self {
            code: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }
    fn emit(&mut self, i: Insn) {
        self.code.push(i);
    }
    fn label(&mut self, l: &'static str) {
        self.labels.push((l, self.code.len()));
    }
    /// Conditional/unconditional jump with an immediate or register operand to `l`.
    fn jmp(&mut self, code: u8, dst: u8, src: u8, imm: i32, l: &'static str) {
        self.fixups.push((self.code.len(), l));
        self.emit(ins(code, dst, src, 0, imm));
    }
    fn ld_imm64(&mut self, dst: u8, src: u8, v: u64) {
        self.emit(ins(0x18, dst, src, 0, v as u32 as i32));
        self.emit(ins(0, 0, 0, 0, (v >> 32) as u32 as i32));
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(n, _)| n == l)
                .map(|(_, i)| *i)
                .unwrap_or(*at + 1);
            self.code[*at].off = (target as i64 - *at as i64 - 1) as i16;
        }
        self.code
    }
}

// Opcodes.
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const MOV64_K: u8 = 0xb7;
const MOV64_X: u8 = 0xbf;
const ADD64_K: u8 = 0x07;
const AND64_K: u8 = 0x57;
const JGT_X: u8 = 0x2d;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;

/// Tail shared by both programs: `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`.
fn redirect(a: &mut Asm, map_fd: i32) {
    a.label("redirect");
    a.emit(ins(LDX_W, 2, 1, 16, 0)); // r2 = ctx->rx_queue_index
    a.ld_imm64(1, PSEUDO_MAP_FD, map_fd as u32 as u64);
    a.emit(ins(MOV64_K, 3, 0, 0, XDP_PASS));
    a.emit(ins(CALL, 0, 0, 0, FUNC_REDIRECT_MAP));
    a.emit(ins(EXIT, 0, 0, 0, 0));
}

/// The VM-port program.
fn vm_program(map_fd: i32) -> Vec<Insn> {
    let mut a = Asm::new();
    redirect(&mut a, map_fd);
    a.finish()
}

/// The fabric program (see the module doc). `host_ip` in host order.
fn fabric_program(map_fd: i32, host_ip: u32) -> Vec<Insn> {
    let mut a = Asm::new();
    a.emit(ins(LDX_W, 2, 1, 0, 0)); // r2 = data
    a.emit(ins(LDX_W, 3, 1, 4, 0)); // r3 = data_end
    a.emit(ins(MOV64_X, 4, 2, 0, 0));
    a.emit(ins(ADD64_K, 4, 0, 0, 42)); // eth + ip + gre + label: the shortest overlay frame
    a.jmp(JGT_X, 4, 3, 0, "pass");
    a.emit(ins(LDX_H, 5, 2, 12, 0)); // ethertype, as loaded little-endian
    a.jmp(JNE_K, 5, 0, 0x0008, "pass");
    a.emit(ins(LDX_B, 5, 2, 14, 0)); // version/IHL
    a.jmp(JNE_K, 5, 0, 0x45, "pass");
    a.emit(ins(LDX_W, 5, 2, 30, 0)); // destination address
    a.ld_imm64(6, 0, u64::from(host_ip.swap_bytes()));
    a.jmp(JNE_X, 5, 6, 0, "pass");
    a.emit(ins(LDX_H, 5, 2, 20, 0)); // flags + fragment offset
    a.emit(ins(AND64_K, 5, 0, 0, 0xff3f)); // MF and offset bits
    a.jmp(JNE_K, 5, 0, 0, "pass");
    a.emit(ins(LDX_B, 5, 2, 23, 0)); // protocol
    a.jmp(JEQ_K, 5, 0, 17, "udp");
    a.jmp(JNE_K, 5, 0, 47, "pass");
    a.emit(ins(LDX_H, 5, 2, 36, 0)); // GRE protocol
    a.jmp(JEQ_K, 5, 0, 0x4788, "redirect");
    a.jmp(0x05, 0, 0, 0, "pass");
    a.label("udp");
    a.emit(ins(MOV64_X, 4, 2, 0, 0));
    a.emit(ins(ADD64_K, 4, 0, 0, 46));
    a.jmp(JGT_X, 4, 3, 0, "pass");
    a.emit(ins(LDX_H, 5, 2, 36, 0)); // UDP destination port
    a.jmp(JEQ_K, 5, 0, i32::from(6635u16.swap_bytes()), "redirect");
    a.jmp(JEQ_K, 5, 0, i32::from(51234u16.swap_bytes()), "redirect");
    a.label("pass");
    a.emit(ins(MOV64_K, 0, 0, 0, XDP_PASS));
    a.emit(ins(EXIT, 0, 0, 0, 0));
    redirect(&mut a, map_fd);
    a.finish()
}

fn bpf(cmd: i64, attr: &mut [u8; 128]) -> i64 {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` image of the size passed; pointers
    // inside it refer to buffers the caller keeps alive across the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn put32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn fd_or(r: i64, what: &'static str, dev: &str) -> Result<OwnedFd, PortError> {
    if r < 0 {
        return Err(PortError::last(what, dev));
    }
    // SAFETY: the bpf() call returned a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// An XDP program attached to a device, with its XSK map. Dropping it detaches the program.
#[derive(Debug)]
pub struct XdpAttachment {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    dev: String,
}

impl XdpAttachment {
    /// Creates the map, loads the program for `fabric_ip` (`None`: a VM port) and attaches it to
    /// `ifindex` in `flags` mode.
    pub fn attach(
        dev: &str,
        ifindex: u32,
        queues: u32,
        fabric_ip: Option<u32>,
        flags: u32,
    ) -> Result<Self, PortError> {
        let mut a = [0u8; 128];
        put32(&mut a, 0, BPF_MAP_TYPE_XSKMAP);
        put32(&mut a, 4, 4);
        put32(&mut a, 8, 4);
        put32(&mut a, 12, queues.max(1));
        let map = fd_or(bpf(BPF_MAP_CREATE, &mut a), "bpf(MAP_CREATE xskmap)", dev)?;
        let code = match fabric_ip {
            Some(ip) => fabric_program(map.as_raw_fd(), ip),
            None => vm_program(map.as_raw_fd()),
        };
        let license = c"GPL";
        let mut log = vec![0u8; 64 * 1024];
        let mut a = [0u8; 128];
        put32(&mut a, 0, BPF_PROG_TYPE_XDP);
        put32(&mut a, 4, code.len() as u32);
        put64(&mut a, 8, code.as_ptr() as u64);
        put64(&mut a, 16, license.as_ptr() as u64);
        put32(&mut a, 24, 1);
        put32(&mut a, 28, log.len() as u32);
        put64(&mut a, 32, log.as_mut_ptr() as u64);
        a[48..56].copy_from_slice(b"vrouter\0");
        put32(&mut a, 68, BPF_XDP);
        let r = bpf(BPF_PROG_LOAD, &mut a);
        if r < 0 {
            let err = std::io::Error::last_os_error();
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            return Err(PortError::Unsupported {
                dev: dev.into(),
                why: format!(
                    "XDP program load failed: {err}: {}",
                    String::from_utf8_lossy(&log[..end])
                ),
            });
        }
        // SAFETY: BPF_PROG_LOAD returned a new descriptor owned by nobody else.
        let prog = unsafe { OwnedFd::from_raw_fd(r as i32) };
        let mut a = [0u8; 128];
        put32(&mut a, 0, prog.as_raw_fd() as u32);
        put32(&mut a, 4, ifindex);
        put32(&mut a, 8, BPF_XDP);
        put32(&mut a, 12, flags);
        let link = fd_or(bpf(BPF_LINK_CREATE, &mut a), "bpf(LINK_CREATE xdp)", dev)?;
        Ok(Self {
            map,
            _prog: prog,
            _link: link,
            dev: dev.into(),
        })
    }

    /// Points queue `q` of the map at the XSK `fd`.
    pub fn set_xsk(&self, q: u32, fd: i32) -> Result<(), PortError> {
        let key = q;
        let val = fd as u32;
        let mut a = [0u8; 128];
        put32(&mut a, 0, self.map.as_raw_fd() as u32);
        put64(&mut a, 8, &key as *const u32 as u64);
        put64(&mut a, 16, &val as *const u32 as u64);
        if bpf(BPF_MAP_UPDATE_ELEM, &mut a) < 0 {
            return Err(PortError::last("bpf(MAP_UPDATE_ELEM xskmap)", &self.dev));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_resolve_forward_and_stay_in_range() {
        let p = fabric_program(3, 0xc0a8_6401);
        for (i, x) in p.iter().enumerate() {
            if x.code & 0x07 == 0x05 && x.code != CALL && x.code != EXIT {
                let t = i as i64 + 1 + i64::from(x.off);
                assert!(
                    t > i as i64 && (t as usize) < p.len(),
                    "insn {i} jumps to {t}"
                );
            }
        }
        assert_eq!(vm_program(3).len(), 6);
    }
}
