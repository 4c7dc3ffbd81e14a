//! Kernel-attack-surface system calls: keys, bpf, io_uring, perf, userfaultfd, kexec, modules.
//! Each wrapper builds the smallest valid argument the kernel accepts.

use super::{check, cstr, Fd, SysResult};

const KEY_SPEC_PROCESS_KEYRING: i32 = -2;
const KEYCTL_JOIN_SESSION_KEYRING: i32 = 1;

/// add_key("user", desc, "x", KEY_SPEC_PROCESS_KEYRING): returns the key serial.
pub fn add_key(desc: &str) -> SysResult<i64> {
    let ty = cstr("user")?;
    let d = cstr(desc)?;
    let payload = b"x";
    // SAFETY: the type and description are valid C strings; the payload pointer/length match.
    check(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            d.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    })
}

/// keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): creates a fresh anonymous session keyring.
pub fn keyctl_join_session() -> SysResult<i64> {
    // SAFETY: a NULL name is the documented way to ask for an anonymous keyring.
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    })
}

fn bpf(cmd: i32, attr: &mut [u8; 128]) -> SysResult<Fd> {
    // SAFETY: `attr` is a zero-padded union bpf_attr of 128 bytes, larger than every field the
    // commands used here read; the kernel requires the unused tail to be zero, which it is.
    let fd = check(unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) })?;
    Ok(Fd::from_raw(fd as libc::c_int))
}

/// BPF_MAP_CREATE of a one-entry array map.
pub fn bpf_map_create() -> SysResult<Fd> {
    const BPF_MAP_CREATE: i32 = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_MAP_TYPE_ARRAY.to_ne_bytes()); // map_type
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes()); // key_size
    attr[8..12].copy_from_slice(&4u32.to_ne_bytes()); // value_size
    attr[12..16].copy_from_slice(&1u32.to_ne_bytes()); // max_entries
    bpf(BPF_MAP_CREATE, &mut attr)
}

/// BPF_PROG_LOAD of a socket filter `r0 = 0; exit`.
pub fn bpf_prog_load() -> SysResult<Fd> {
    const BPF_PROG_LOAD: i32 = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    // struct bpf_insn: u8 code, u8 regs, i16 off, i32 imm.
    let insns: [u64; 2] = [
        u64::from_ne_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0
        u64::from_ne_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]), // BPF_JMP | BPF_EXIT
    ];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes()); // prog_type
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes()); // insn_cnt
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes()); // insns
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes()); // license
    bpf(BPF_PROG_LOAD, &mut attr)
}

/// io_uring_setup(1, &params).
pub fn io_uring_setup() -> SysResult<Fd> {
    let mut params = [0u8; 120]; // struct io_uring_params
                                 // SAFETY: `params` is a zeroed io_uring_params the kernel fills in.
    let fd = check(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) })?;
    Ok(Fd::from_raw(fd as libc::c_int))
}

/// perf_event_open of a disabled, user-only software CPU clock counter on this process.
pub fn perf_event_open() -> SysResult<Fd> {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
    const PERF_ATTR_SIZE_VER0: u32 = 64;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&PERF_TYPE_SOFTWARE.to_ne_bytes()); // type
    attr[4..8].copy_from_slice(&PERF_ATTR_SIZE_VER0.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&PERF_COUNT_SW_CPU_CLOCK.to_ne_bytes()); // config
                                                                         // flags bitfield: disabled (bit 0), exclude_kernel (bit 5), exclude_hv (bit 6).
    attr[40..48].copy_from_slice(&(1u64 | 1 << 5 | 1 << 6).to_ne_bytes());
    // SAFETY: `attr` holds a valid VER0 perf_event_attr (64 bytes used, rest zero).
    let fd = check(unsafe {
        libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0)
    })?;
    Ok(Fd::from_raw(fd as libc::c_int))
}

/// userfaultfd(flags).
pub fn userfaultfd(flags: libc::c_int) -> SysResult<Fd> {
    // SAFETY: userfaultfd takes only integer flags.
    let fd = check(unsafe { libc::syscall(libc::SYS_userfaultfd, flags) })?;
    Ok(Fd::from_raw(fd as libc::c_int))
}

/// kexec_load with more segments than KEXEC_SEGMENT_MAX: the kernel checks CAP_SYS_BOOT first
/// and only then rejects the count with EINVAL, so nothing is ever loaded or unloaded.
pub fn kexec_load_probe() -> SysResult<i64> {
    const TOO_MANY_SEGMENTS: usize = 17;
    // SAFETY: the segment pointer is NULL; the kernel rejects the call before reading it.
    check(unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0usize,
            TOO_MANY_SEGMENTS,
            std::ptr::null::<u8>(),
            0usize,
        )
    })
}

/// init_module with an empty image: permission is checked first, then ENOEXEC/EINVAL/EFAULT.
pub fn init_module_probe() -> SysResult<i64> {
    let params = cstr("")?;
    // SAFETY: a zero-length image with a NULL pointer; params is a valid C string.
    check(unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0usize,
            params.as_ptr(),
        )
    })
}

/// finit_module on an invalid fd: permission is checked first, then EBADF.
pub fn finit_module_probe() -> SysResult<i64> {
    let params = cstr("")?;
    // SAFETY: integer fd and flags, valid params string.
    check(unsafe { libc::syscall(libc::SYS_finit_module, -1, params.as_ptr(), 0) })
}

/// delete_module of a name that does not exist: permission first, then ENOENT.
pub fn delete_module_probe() -> SysResult<i64> {
    let name = cstr("airlock_probe_no_such_module")?;
    // SAFETY: valid C string and integer flags.
    check(unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) })
}
