//! The host↔guest channel of the microVM backend: newline-delimited JSON over a virtio-serial
//! port (`/dev/virtio-ports/airlock` inside). Versioned: every line carries `v`; a side skips a
//! message kind it does not know (logged), so either side can grow new kinds. Byte payloads
//! (stdin/stdout/stderr chunks) are base64 in a string field.

use serde::{Deserialize, Serialize};

/// Version of the channel protocol. Bumped on an incompatible change only.
pub const VM_PROTOCOL_VERSION: u32 = 1;

/// The virtio-serial port name the guest finds its channel by.
pub const VM_PORT_NAME: &str = "airlock";

/// Disk serial numbers (virtio-blk `serial=`), which the guest finds its disks by (the
/// order of /dev/vdX is the kernel's business).
pub const DISK_ROOT: &str = "airlock-root";
pub const DISK_WORKSPACE: &str = "airlock-ws";

/// A file the guest writes before it runs the command (the generated /etc files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFile {
    pub path: String,
    pub contents: String,
    pub mode: u32,
}

/// Guest networking: none (no NIC), or QEMU's user-mode network (10.0.2.15/24, gateway and
/// resolver at QEMU's 10.0.2.2 / 10.0.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestNet {
    None,
    User,
}

/// What the guest runs: the whole job, sent once as the host's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestJob {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    pub net: GuestNet,
    /// The workspace disk (serial DISK_WORKSPACE) goes at /workspace, under a tmpfs overlay.
    pub workspace: bool,
    /// Home directory (a tmpfs owned by uid/gid).
    pub home: String,
    /// Size of the writable tmpfs layers in bytes (root overlay, /tmp, home); None: the
    /// kernel's default.
    pub tmpfs_size: Option<u64>,
    pub files: Vec<GuestFile>,
    /// Whether stdin is forwarded (else the command's stdin is /dev/null).
    pub stdin: bool,
}

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostMsg {
    Run {
        v: u32,
        job: Box<GuestJob>,
    },
    Stdin {
        v: u32,
        data: String,
    },
    StdinEof {
        v: u32,
    },
    /// Forward a signal to the command's process group.
    Signal {
        v: u32,
        signal: i32,
    },
    #[serde(other)]
    Unknown,
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestMsg {
    /// The guest's init is up and waits for its job.
    Hello {
        v: u32,
        kernel: String,
    },
    Stdout {
        v: u32,
        data: String,
    },
    Stderr {
        v: u32,
        data: String,
    },
    /// The command ended: its exit status (128+N for signal N).
    Exit {
        v: u32,
        code: i32,
    },
    /// The guest could not run the job; it powers off after this.
    Error {
        v: u32,
        message: String,
    },
    #[serde(other)]
    Unknown,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 (padding optional); None on a character outside the alphabet.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..40 {
            let e = b64_encode(&data[..n]);
            assert_eq!(e.len() % 4, 0);
            assert_eq!(b64_decode(&e).as_deref(), Some(&data[..n]));
        }
        assert_eq!(b64_encode(b"hi\n"), "aGkK");
        assert_eq!(b64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(b64_decode("a*"), None);
    }

    #[test]
    fn messages_have_a_stable_shape_and_unknown_kinds_are_skippable() {
        let m = GuestMsg::Exit {
            v: VM_PROTOCOL_VERSION,
            code: 7,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"kind":"exit","v":1,"code":7}"#
        );
        let later: GuestMsg = serde_json::from_str(r#"{"kind":"resize","v":2,"rows":3}"#).unwrap();
        assert_eq!(later, GuestMsg::Unknown);
        let h: HostMsg = serde_json::from_str(r#"{"kind":"stdin_eof","v":1}"#).unwrap();
        assert_eq!(h, HostMsg::StdinEof { v: 1 });
    }
}
