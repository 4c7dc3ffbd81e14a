// Shared with build.rs (through `include!`): keep it free of crate paths.

/// What the program headers of a 64-bit little-endian ELF file say about linking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linking {
    /// No `PT_INTERP`: the kernel starts it without a dynamic loader (static or static-pie).
    Static,
    /// A `PT_INTERP`: it needs the loader (and the libc) it names.
    Dynamic,
}

/// The linking of the ELF file `bytes`, or why it is not one this can read.
pub fn elf_linking(bytes: &[u8]) -> Result<Linking, &'static str> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file");
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let mut off = [0u8; 8];
    off.copy_from_slice(&bytes[0x20..0x28]);
    let phoff = u64::from_le_bytes(off) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    if phentsize < 4 {
        return Err("bad program header size");
    }
    for i in 0..phnum {
        let at = phoff
            .checked_add(i.checked_mul(phentsize).ok_or("bad program headers")?)
            .ok_or("bad program headers")?;
        let Some(h) = bytes.get(at..at + 4) else {
            return Err("program headers past the end of the file");
        };
        if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == PT_INTERP {
            return Ok(Linking::Dynamic);
        }
    }
    Ok(Linking::Static)
}
