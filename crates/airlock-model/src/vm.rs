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
/// The disk the guest's writable layers live on when the spec sets `disk` (see
/// [`GuestJob::overlay_disk`]).
pub const DISK_OVERLAY: &str = "airlock-overlay";
/// A warm microVM member's claim slot: blank at its boot, a GPT-partitioned disk after a
/// claim wrote its read-only mounts' snapshots into it (partition `i + 1`: the `i`th mount).
pub const DISK_CLAIM: &str = "airlock-claim";

/// The serial of the disk holding the `i`th read-only mount's snapshot.
pub fn disk_ro(i: usize) -> String {
    format!("airlock-ro{i}")
}

/// A read-only mount (`--ro HOST:PATH`, `[[mounts]]`): an erofs snapshot of the host path,
/// made per run, on the disk whose serial is `serial`, mounted read-only at `path`. The
/// host path is never written (the guest gets no share of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub serial: String,
    pub path: String,
    /// The host path is a file: the image holds it as [`RO_FILE_ENTRY`], which the guest
    /// binds at `path` (the executor sets this when it makes the image).
    #[serde(default, skip_serializing_if = "is_false")]
    pub file: bool,
}

/// The one entry of a file mount's image.
pub const RO_FILE_ENTRY: &str = "file";

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
    /// The workspace disk (serial DISK_WORKSPACE) is the sandbox's own writable ext4 image (a
    /// named sandbox's clone workspace): mounted read-write at /workspace and handed to
    /// uid/gid on its first boot. Absent in older hosts' jobs: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub workspace_disk: bool,
    /// A named sandbox: with an empty `argv` the guest builds its root, reports
    /// [`GuestMsg::Ready`] and then serves [`HostMsg::Exec`] sessions until
    /// [`HostMsg::Poweroff`] (or the channel closes). Absent in older hosts' jobs: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    /// `run -t`: the command gets a pseudo-terminal of this size (see [`GuestExec::tty`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// Read-only mounts, in order, after the workspace. Absent in older hosts' jobs: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<GuestMount>,
    /// The writable layers (the root's overlay, the overlay workspace's, /tmp and home) live
    /// on the ext4 disk whose serial is [`DISK_OVERLAY`] (made empty by the host, the size of
    /// the spec's `disk`) instead of tmpfs: what the guest writes there ends in ENOSPC at
    /// that size, whatever its memory. Absent in older hosts' jobs: false (tmpfs).
    #[serde(default, skip_serializing_if = "is_false")]
    pub overlay_disk: bool,
    /// A warm pool member whose workspace slot (serial [`DISK_WORKSPACE`]) is writable: a
    /// claim fills it with a named sandbox's ext4 workspace image, so the guest loads the
    /// ext4 modules at boot (a claim's session cannot reach the initramfs). Absent in older
    /// hosts' jobs: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub workspace_slot_disk: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The session of the `run` job itself (and of every message that names no session: the
/// first protocol had one command per VM, and its lines still mean that).
pub const MAIN_SESSION: u32 = 0;

/// One more command in a running guest (a named sandbox's `exec`): it runs in the root the
/// job built, as `uid`/`gid`, beside every other session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestExec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Whether stdin is forwarded (else the command's stdin is /dev/null).
    pub stdin: bool,
    /// Give the command the sandbox's secrets (from /run/secrets in the guest) as environment
    /// variables, as `exec --secrets` does for containers. Absent: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secrets: bool,
    /// A terminal of this size (`exec -t`, `shell`): the guest gives the command a pseudo-
    /// terminal of its own (its stdin, stdout and stderr, its controlling terminal); its
    /// output comes back as `stdout` only. Absent in older hosts' lines: pipes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
}

/// A terminal's size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostMsg {
    Run {
        v: u32,
        job: Box<GuestJob>,
        /// The sandbox's secrets (name, value): the command's environment and 0400 files in
        /// /run/secrets (a tmpfs), the sandbox user's. Outside the job on purpose: the job is
        /// recorded on the host (a named sandbox's `vm-job.json`), secrets never are.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        secrets: Vec<(String, String)>,
        /// Injected secrets: the CA bundle the guest's TLS clients trust (written at
        /// `plan::CA_BUNDLE`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_bundle: Option<String>,
        /// The guest was restored from a boot snapshot (not booted for this run): what it
        /// must make its own before the job (see [`Restored`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restored: Option<Restored>,
    },
    /// Sent only to a guest booted to be saved as a boot snapshot (instead of a job): load
    /// every optional module group (network, disks), then say [`GuestMsg::Idle`] and wait for
    /// the run message — which comes after the restore, to a copy of this guest.
    Snapshot { v: u32 },
    Stdin {
        v: u32,
        data: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    StdinEof {
        v: u32,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    /// Forward a signal to the command's process group.
    Signal {
        v: u32,
        signal: i32,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    /// Start session `session` (chosen by the host, never MAIN_SESSION, unique while it runs)
    /// in a guest that holds (`GuestJob::hold`).
    Exec {
        v: u32,
        session: u32,
        exec: Box<GuestExec>,
    },
    /// The user's terminal changed size: set the session's pseudo-terminal to it (the guest
    /// kernel then sends SIGWINCH to its foreground process group). Ignored for a session
    /// without a terminal.
    Resize {
        v: u32,
        rows: u16,
        cols: u16,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    /// End every session (SIGTERM, then SIGKILL after `grace_ms`) and power the VM off.
    Poweroff { v: u32, grace_ms: u64 },
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
        /// The guest serves `exec` sessions (`GuestJob::hold`); absent in older guests.
        #[serde(default, skip_serializing_if = "is_false")]
        sessions: bool,
    },
    /// A holding guest built its root and takes `exec` sessions now.
    Ready { v: u32 },
    Stdout {
        v: u32,
        data: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    Stderr {
        v: u32,
        data: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    /// The command ended: its exit status (128+N for signal N).
    Exit {
        v: u32,
        code: i32,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    /// The guest could not run the job (it powers off after this), or, with a session, could
    /// not start that session's command (the guest goes on).
    Error {
        v: u32,
        message: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        session: u32,
    },
    /// Where the guest's boot went: monotonic times since the guest kernel started, one per
    /// step of its init (sent before `Exit`, or before `Ready` by a holding guest). Shown by
    /// the host with `AIRLOCK_TIMING=1`; informational only.
    Timing { v: u32, steps: Vec<TimingStep> },
    /// What the command changed in an overlay workspace (`added`, `modified`, `deleted`,
    /// `unlisted`, `unreadable`: the container backend's summary, computed the same way from
    /// the guest's upper layer against the workspace image), sent before `Exit`. Absent from
    /// older guests: no summary.
    Changes { v: u32, changes: serde_json::Value },
    /// A guest booted for a boot snapshot has loaded everything and waits for its job: the
    /// host saves it now.
    Idle { v: u32 },
    /// A restored guest got its run message: sent before anything of the job runs, so a host
    /// that hears nothing knows the command never started.
    Resumed {
        v: u32,
        /// The guest kernel's release (what `hello` said to the snapshot's builder).
        #[serde(default)]
        kernel: String,
    },
    #[serde(other)]
    Unknown,
}

/// What a guest restored from a boot snapshot makes its own before the job: every restored
/// copy of one snapshot starts with the same memory — the same clock (the snapshot's), the
/// same kernel random state — and with the page cache of the disks as they were at the
/// snapshot (blank).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The host's CLOCK_REALTIME when it sent the job, in nanoseconds since the epoch.
    pub realtime_ns: u64,
    /// 32 bytes from the host's getrandom (base64): mixed into the guest kernel's pool, which
    /// is then reseeded.
    pub seed: String,
}

/// One step of the guest init and when it ended, in microseconds since the guest kernel
/// started (CLOCK_BOOTTIME inside the guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingStep {
    pub step: String,
    pub us: u64,
    /// The CPU time (user + system, microseconds) the init and its reaped children had used
    /// by then: between two steps, its growth against the wall time tells work from waiting
    /// (what is neither ran in kernel threads or was idle). Absent from older guests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<u64>,
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
            session: MAIN_SESSION,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"kind":"exit","v":1,"code":7}"#
        );
        let later: GuestMsg = serde_json::from_str(r#"{"kind":"resize","v":2,"rows":3}"#).unwrap();
        assert_eq!(later, GuestMsg::Unknown);
        let h: HostMsg = serde_json::from_str(r#"{"kind":"stdin_eof","v":1}"#).unwrap();
        assert_eq!(h, HostMsg::StdinEof { v: 1, session: 0 });
    }

    #[test]
    fn a_timing_step_carries_its_cpu_time_and_an_older_guests_has_none() {
        let step = TimingStep {
            step: "root built".into(),
            us: 1500,
            cpu_us: Some(900),
        };
        let line = serde_json::to_string(&step).unwrap();
        assert_eq!(line, r#"{"step":"root built","us":1500,"cpu_us":900}"#);
        assert_eq!(serde_json::from_str::<TimingStep>(&line).unwrap(), step);
        let old: TimingStep = serde_json::from_str(r#"{"step":"x","us":1}"#).unwrap();
        assert_eq!(old.cpu_us, None);
        let none = TimingStep {
            cpu_us: None,
            ..old
        };
        assert_eq!(
            serde_json::to_string(&none).unwrap(),
            r#"{"step":"x","us":1}"#
        );
    }

    #[test]
    fn sessions_are_named_on_the_wire_and_absent_means_the_main_one() {
        // A first-protocol line (no session) is the run job's own session.
        let old: GuestMsg =
            serde_json::from_str(r#"{"kind":"stdout","v":1,"data":"aGk="}"#).unwrap();
        assert_eq!(
            old,
            GuestMsg::Stdout {
                v: 1,
                data: "aGk=".into(),
                session: MAIN_SESSION
            }
        );
        let m = GuestMsg::Exit {
            v: VM_PROTOCOL_VERSION,
            code: 3,
            session: 5,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"kind":"exit","v":1,"code":3,"session":5}"#
        );
        let e = HostMsg::Exec {
            v: 1,
            session: 2,
            exec: Box::new(GuestExec {
                argv: vec!["cat".into(), "/tmp/f".into()],
                env: vec![("PATH".into(), "/usr/bin".into())],
                cwd: "/workspace".into(),
                uid: 1000,
                gid: 1000,
                stdin: false,
                secrets: false,
                tty: None,
            }),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.starts_with(r#"{"kind":"exec","v":1,"session":2,"exec":{"argv":["cat""#));
        assert_eq!(serde_json::from_str::<HostMsg>(&line).unwrap(), e);
        // A guest that says nothing about sessions has none; the host must not send `exec`.
        let h: GuestMsg = serde_json::from_str(r#"{"kind":"hello","v":1,"kernel":"6.1"}"#).unwrap();
        assert!(matches!(
            h,
            GuestMsg::Hello {
                sessions: false,
                ..
            }
        ));
        // A terminal: its size in the exec, and resizes as their own line.
        let t: HostMsg = serde_json::from_str(
            r#"{"kind":"exec","v":1,"session":3,"exec":{"argv":["sh"],"env":[],"cwd":"/","uid":0,"gid":0,"stdin":true,"tty":{"rows":24,"cols":80}}}"#,
        )
        .unwrap();
        assert!(matches!(&t, HostMsg::Exec { exec, .. }
            if exec.tty == Some(TtySize { rows: 24, cols: 80 })));
        let r = HostMsg::Resize {
            v: 1,
            rows: 50,
            cols: 132,
            session: 3,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"kind":"resize","v":1,"rows":50,"cols":132,"session":3}"#
        );
        let p: HostMsg =
            serde_json::from_str(r#"{"kind":"poweroff","v":1,"grace_ms":500}"#).unwrap();
        assert_eq!(
            p,
            HostMsg::Poweroff {
                v: 1,
                grace_ms: 500
            }
        );
    }
}
