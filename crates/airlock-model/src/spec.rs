//! What the user asked for, after configuration layering: the input of the launch planner.

use crate::policy::{BackendKind, ByteSize, Cpus, NetMode, Profile, WorkspaceMode};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Who runs inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SandboxUser {
    /// The unprivileged `agent` user (uid/gid 1000). Default: agents refuse to auto-approve as root.
    #[default]
    Agent,
    /// uid 0 inside, mapped to an unprivileged host uid; every capability still dropped.
    Root,
    /// An image's own non-root `User` (its uid/gid inside; mapped like `agent`: into the
    /// sandbox range when airlock runs as root, to the invoking user rootless).
    Image(ImageUser),
}

/// An image's `User`, resolved through the image's own /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUser {
    pub uid: u32,
    pub gid: u32,
    /// The passwd entry's name (None: a numeric user the image's passwd does not list).
    pub name: Option<String>,
    /// Absolute: the passwd entry's home, else `/home/UID`.
    pub home: String,
}

impl SandboxUser {
    pub const AGENT_UID: u32 = 1000;
    pub fn uid(&self) -> u32 {
        match self {
            SandboxUser::Agent => Self::AGENT_UID,
            SandboxUser::Root => 0,
            SandboxUser::Image(u) => u.uid,
        }
    }
    pub fn gid(&self) -> u32 {
        match self {
            SandboxUser::Image(u) => u.gid,
            other => other.uid(),
        }
    }
    /// The user's name (a nameless image user is shown by its uid).
    pub fn name(&self) -> String {
        match self {
            SandboxUser::Agent => "agent".into(),
            SandboxUser::Root => "root".into(),
            SandboxUser::Image(u) => u.name.clone().unwrap_or_else(|| u.uid.to_string()),
        }
    }
    pub fn home(&self) -> &str {
        match self {
            SandboxUser::Agent => "/home/agent",
            SandboxUser::Root => "/root",
            SandboxUser::Image(u) => &u.home,
        }
    }
}

impl std::str::FromStr for SandboxUser {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" | "1000" => Ok(SandboxUser::Agent),
            "root" | "0" => Ok(SandboxUser::Root),
            _ => Err(format!(
                "invalid user {s:?}: expected `agent` (uid 1000, the default) or `root`"
            )),
        }
    }
}

/// A host path made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindSpec {
    /// Absolute, canonical host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    pub writable: bool,
}

/// Resource limits. `None` = not limited.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub memory: Option<ByteSize>,
    pub cpus: Option<Cpus>,
    pub pids: Option<u64>,
    /// `airlock run`: the budget of the sandbox's writable tmpfs mounts together (/tmp,
    /// /dev/shm, /run, $HOME, the overlay workspace's upper layer), see `plan::tmpfs_sizes`.
    /// Refused for named sandboxes, whose writable layers live on the host's disk.
    pub disk: Option<ByteSize>,
}

impl Resources {
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// A guest kernel someone chose: its path (absolute) and who chose it (`--kernel`, or the
/// configuration file that says `[sandbox] kernel`), for messages and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestKernel {
    pub path: PathBuf,
    pub from: String,
}

/// Which of a spec's `resources` are airlock's defaults rather than asked for. A default the
/// host cannot enforce (rootless without a delegated cgroup) is left out quietly; one asked for
/// is reported, or refused with `--require-limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Defaulted {
    pub memory: bool,
    pub pids: bool,
}

/// How stdin reaches the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stdio {
    /// Inherit the caller's 0/1/2 (stdin replaced by /dev/null unless forwarded).
    Inherit { forward_stdin: bool },
    /// A fresh pseudo-terminal inside the sandbox, relayed by the host side.
    Tty,
}

/// Everything `airlock run` needs to know, resolved from config layers and flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub name: String,
    pub hostname: String,
    pub profile: Profile,
    pub net: NetMode,
    /// Filtered mode: allowed domain patterns (`github.com`, `*.npmjs.org`).
    pub domains: Vec<String>,
    /// Filtered mode: allowed destination ports.
    pub ports: Vec<u16>,
    pub workspace: WorkspaceMode,
    /// Host directory behind /workspace (absolute).
    pub project_dir: PathBuf,
    pub binds: Vec<BindSpec>,
    /// Final environment inside, in order.
    pub env: Vec<(String, String)>,
    /// Working directory inside; None = /workspace if present, else $HOME.
    pub workdir: Option<PathBuf>,
    pub resources: Resources,
    pub require_limits: bool,
    pub user: SandboxUser,
    pub timeout: Option<Duration>,
    pub stdio: Stdio,
    /// Empty for a persistent sandbox (commands arrive later by exec).
    pub argv: Vec<String>,
    /// A named sandbox that outlives any one command: PID 1 waits for exec'd processes, the
    /// workspace's upper layer lives on disk in the sandbox folder.
    #[serde(default)]
    pub persistent: bool,
    /// A host directory to use as $HOME instead of a tmpfs (named sandboxes keep it).
    #[serde(default)]
    pub home_dir: Option<PathBuf>,
    /// Clone mode: the sandbox's own clone, mounted writable at /workspace instead of the
    /// project directory (set by the supervisor of a named sandbox).
    #[serde(default)]
    pub workspace_dir: Option<PathBuf>,
    /// `[home_files]`: host files placed under the sandbox user's home, by path relative to it.
    /// `[workspace] protected`: workspace paths made read-only inside, beyond the built-in list.
    #[serde(default)]
    pub protected: Vec<String>,
    /// `[workspace] context`: untracked project paths copied over a clone workspace at create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    /// `[[workspace.repos]]`: reference repositories copied into a named sandbox's home at
    /// create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<crate::config::RepoSpec>,
    #[serde(default)]
    pub home_files: std::collections::BTreeMap<String, crate::config::HomeFileSpec>,
    /// Secrets by name and where to read them at launch. Only the sources: values never enter a
    /// spec, a plan or anything written to disk.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, crate::config::Secret>,
    /// Agent mode: the harness a named sandbox runs prompts with (`airlock up --agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::config::Harness>,
    /// Which limits in `resources` came from airlock's defaults.
    #[serde(default)]
    pub defaulted: Defaulted,
    /// Agent mode: `[agent] grace`, how long the harness may go on after its terminal report
    /// (None: `config::DEFAULT_AGENT_GRACE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_grace: Option<crate::policy::Seconds>,
    /// `[daemon.agents.NAME] min_warm` for this sandbox's agent: its starts keep a warm pool of
    /// that many members matching it (0: none). Not part of what it runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub agent_min_warm: u32,
    /// `setup`: scripts (absolute host paths) run inside after the first start of a named
    /// sandbox, before the command of `run`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<std::path::PathBuf>,
    /// Which isolation mechanism runs it (`[sandbox] backend`); the planner refuses one this
    /// build or host cannot provide.
    #[serde(default)]
    pub backend: BackendKind,
    /// Its root filesystem (`[sandbox] image`); the planner refuses one it cannot provide.
    #[serde(default)]
    pub rootfs: RootFs,
    /// The microVM backend's guest kernel as the configuration or `--kernel` chose it (None:
    /// AIRLOCK_KERNEL, else the newest distribution kernel in /boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<GuestKernel>,
    /// A warm-pool member whose workspace is attached at claim (docs/design/warm-pool.md):
    /// `workspace` is `none`, and the root has an empty `/workspace` (writable) for the claim's
    /// overlay or bind to be attached on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workspace_slot: bool,
    /// A microVM pool member for named sandboxes with a clone workspace: its slot is a
    /// *writable* disk the size of the sandbox's workspace image, which the adoption fills with
    /// the sandbox's ext4 image and the guest mounts read-write (`airlock-guest ws
    /// attach-disk`); the slot's file then becomes the sandbox's `vm-workspace.img`
    /// (docs/design/warm-pool.md, "Named microVM starts"). Only with `workspace_slot`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workspace_slot_rw: bool,
    /// A warm-pool member (container): its supervisor keeps an exec stub in the member's
    /// cgroup for the claim's command (docs/design/warm-pool.md, "The exec stub").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pool_member: bool,
    /// A microVM pool member: it boots with one more blank read-only disk, the *claim slot*,
    /// into which a claim writes its read-only mounts' snapshots (a partition each) before the
    /// guest helper mounts them (`airlock-guest ws ro`; docs/design/warm-pool.md,
    /// "microVM read-only mounts").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vm_claim_slot: bool,
}

/// A sandbox's root filesystem: the host's own (read-only `/usr` and friends, curated `/etc`)
/// or an image's. Serialized as `"host"` or `{"image": {"reference": …, "digest": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RootFs {
    #[default]
    Host,
    Image {
        /// What was asked for, without the digest (`docker.io/library/alpine:3.20`).
        reference: String,
        /// The content digest it is pinned to (`sha256:…`), when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
}

impl RootFs {
    /// From `[sandbox] image`: `host`, or an image reference with an optional `@DIGEST`.
    pub fn from_config(image: &str) -> RootFs {
        if image == "host" {
            return RootFs::Host;
        }
        match image.split_once('@') {
            Some((reference, digest)) => RootFs::Image {
                reference: reference.to_string(),
                digest: Some(digest.to_string()),
            },
            None => RootFs::Image {
                reference: image.to_string(),
                digest: None,
            },
        }
    }

    /// How `list` and `status` show it (the inverse of [`RootFs::from_config`]).
    pub fn label(&self) -> String {
        match self {
            RootFs::Host => "host".into(),
            RootFs::Image {
                reference,
                digest: Some(d),
            } => format!("{reference}@{d}"),
            RootFs::Image { reference, .. } => reference.clone(),
        }
    }
}

/// Validate a sandbox name: DNS-label-like, 1..=63 bytes, lowercase letters, digits and '-'.
/// `base` with each variable of `over` set on top (an existing one replaced, moved last), as an
/// exec's environment over the sandbox's, or a claim's secrets over its environment.
pub fn env_over(base: &[(String, String)], over: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    for (k, v) in over {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("sandbox name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("sandbox name {name:?} is longer than 63 bytes"));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "invalid sandbox name {name:?}: use lowercase letters, digits and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_from_config_and_back() {
        assert_eq!(RootFs::from_config("host"), RootFs::Host);
        let pinned = RootFs::from_config("alpine:3.20@sha256:abc");
        assert_eq!(
            pinned,
            RootFs::Image {
                reference: "alpine:3.20".into(),
                digest: Some("sha256:abc".into())
            }
        );
        assert_eq!(pinned.label(), "alpine:3.20@sha256:abc");
        assert_eq!(RootFs::from_config("alpine").label(), "alpine");
        assert_eq!(
            serde_json::to_value(&RootFs::Host).expect("json"),
            serde_json::json!("host")
        );
        assert_eq!(
            serde_json::to_value(&pinned).expect("json"),
            serde_json::json!({"image": {"reference": "alpine:3.20", "digest": "sha256:abc"}})
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("run-3f2a").is_ok());
        for bad in ["", "..", "a/b", "A", "-a", "a-", "a\nb", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
