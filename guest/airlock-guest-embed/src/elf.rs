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
    Ok(match elf_interpreter(bytes)? {
        Some(_) => Linking::Dynamic,
        None => Linking::Static,
    })
}

/// The program interpreter (`PT_INTERP`: the dynamic loader's path, without its NUL) the ELF
/// file `bytes` names — None for a static one — or why it is not one this can read.
pub fn elf_interpreter(bytes: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file");
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(v) as usize
    };
    let phoff = u64_at(bytes, 0x20);
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
        if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) != PT_INTERP {
            continue;
        }
        // Its p_offset and p_filesz: where the path is.
        let Some(h) = bytes.get(at..at + 0x28).filter(|_| phentsize >= 0x28) else {
            return Err("a program header past the end of the file");
        };
        let (off, size) = (u64_at(h, 0x08), u64_at(h, 0x20));
        let path = off
            .checked_add(size)
            .and_then(|end| bytes.get(off..end))
            .ok_or("the interpreter's path past the end of the file")?;
        let len = path.iter().position(|b| *b == 0).unwrap_or(path.len());
        return Ok(Some(&path[..len]));
    }
    Ok(None)
}
