//! The process's first instructions when the binary is linked static-pie (`scripts/rustc-wrapper`
//! names `airlock_entry` the ELF entry point; in any other build this code is never called).
//!
//! A static-pie binary relocates itself before `main`: the C library's `_start` writes the load
//! address into ≈ 22 000 pointers spread over every page of `.data.rel.ro` (vtables, string
//! tables, panic locations). Each first write to one of those ≈ 90 pages is a copy-on-write page
//! fault — on a virtual machine, where a fault is a trip through the hypervisor's page tables,
//! most of the ≈ 0.5 ms the relocation costs (bench/RESULTS.md, "Session 17").
//!
//! Here, before `_start`, one `madvise(MADV_POPULATE_WRITE)` over the writable segments (from
//! the start of the relocated data to the end of `.bss`) makes those copies in one system call,
//! without a fault each. Nothing else changes: the same pages are copied, the relocation runs
//! as before, and RELRO still turns them read-only after it. A kernel without
//! `MADV_POPULATE_WRITE` (before 5.14) refuses it, and the faults happen as before.
//!
//! No Rust runs here: the code has no stack frame of its own, touches no memory (the addresses
//! are PC-relative, so valid before relocation), and keeps the two registers `_start` reads —
//! `%rsp` (argc, argv, the environment, the auxiliary vector) and `%rdx` (an exit function from
//! the kernel: 0).

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".globl airlock_entry",
    ".type airlock_entry,@function",
    "airlock_entry:",
    "mov r9, rdx",
    // The start of the relocated data: the init/fini arrays come first in it (GNU ld's and
    // lld's layouts), rounded down to its page.
    "lea rdi, [rip + __init_array_start]",
    "and rdi, -4096",
    // Its end: the end of `.bss`.
    "lea rsi, [rip + _end]",
    "sub rsi, rdi",
    "mov edx, 23", // MADV_POPULATE_WRITE
    "mov eax, 28", // madvise
    "syscall",
    "mov rdx, r9",
    "jmp _start",
    ".size airlock_entry, . - airlock_entry",
);

/// Whether this process started at `airlock_entry` (the pages its relocation writes copied in
/// one system call): `airlock doctor` says so.
pub fn entered_here() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        extern "C" {
            fn airlock_entry();
        }
        // SAFETY: getauxval only reads this process's auxiliary vector.
        let entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as usize;
        entry == airlock_entry as *const () as usize
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}
