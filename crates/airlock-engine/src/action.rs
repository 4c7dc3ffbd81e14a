//! One action type for what the engine does: every operation it executes is an [`Action`], and
//! `Engine::execute` is its one dispatch. The HTTP routes are thin: each parses its path and
//! body into an Action (`POST /v1/actions` takes one whole), so there is one place where an
//! operation is carried out and one error shape (`ErrorBody`, with the CLI's exit code).
//!
//! The actions live here rather than in `airlock-model` because their results are the engine's
//! records and airlock-work's reports; the model crate keeps the pure vocabulary they use.
//! Operations that need a process of their own carry out in a typed child (`airlock __action`:
//! the action as JSON on stdin, one [`ChildAnswer`] line on stdout): entering a sandbox's
//! namespaces (file read/write/copy, deliver, exec) needs a single-threaded process, and trust,
//! explain and up use the CLI's configuration resolution.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::report::{ReconcileReport, Status};
use crate::store::Record;
use airlock_work::ops::{DiffSummary, FetchReport, SyncReport};

/// The longest stop grace period, in milliseconds (as `airlock stop --grace` allows).
pub const MAX_GRACE_MS: u64 = 1_000_000_000_000;

/// An operation of the engine, as data. Tagged by `action`.
// One value per request, parsed and moved once: a boxed `Run` would save bytes nobody copies.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Record a sandbox and make its folder (and, for a clone-mode spec, its clone).
    Create {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        /// The sandbox's spec, as `airlock create` resolves it (`spec.json`).
        #[serde(default)]
        #[schema(value_type = Object)]
        spec: serde_json::Map<String, serde_json::Value>,
    },
    /// Start a stopped or failed sandbox, with the values of the secrets its spec names.
    Start {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        secrets: Option<BTreeMap<String, String>>,
    },
    /// Stop it: ask, wait `grace_ms` (default 10000), kill.
    Stop {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default, deserialize_with = "whole_number")]
        #[schema(maximum = 1_000_000_000_000_u64)]
        grace_ms: Option<u64>,
    },
    /// Remove it and everything it kept (`force`: whatever its state).
    Remove {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        force: bool,
    },
    /// Every sandbox.
    List,
    /// One sandbox with its uptime and resource use.
    Status {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
    },
    /// Reconcile the records with what runs.
    Gc,
    /// What a clone-mode sandbox's branch changes, and the review gate's findings.
    Diff {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        /// Also the changes as text (`full`: the patch; `stat`: its summary), in `patch`.
        #[serde(default)]
        patch: Option<airlock_work::ops::PatchForm>,
    },
    /// The branch into the host repository as `airlock/NAME`, review-gated.
    Fetch {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        accept: bool,
        #[serde(default)]
        force: bool,
    },
    /// The branch's committed changes into the host checkout, review-gated.
    Sync {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        artifacts: bool,
        #[serde(default)]
        accept: bool,
    },
    /// Read a file (or list a directory) inside a running sandbox, as the sandbox sees it.
    /// `path`: relative to /workspace, or absolute under /workspace, /tmp, /home/agent, /root;
    /// `..` and symlinks leading outside those are refused.
    FileRead {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        path: String,
        /// Byte offset to start at (default 0).
        #[serde(default, deserialize_with = "whole_number")]
        #[schema(maximum = 9007199254740991_u64)]
        offset: Option<u64>,
        /// Most bytes returned (1-4194304, default 262144).
        #[serde(default, deserialize_with = "whole_number")]
        #[schema(minimum = 1, maximum = 4194304)]
        max_bytes: Option<u64>,
    },
    /// Write (or append to) a file inside a running sandbox, with the sandbox's own
    /// permissions. Same path rules as `file_read`; writing through a symlink is refused.
    FileWrite {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        path: String,
        /// The content, encoded as `encoding` says (at most 4 MiB decoded).
        content: String,
        #[serde(default)]
        encoding: Encoding,
        /// Append instead of replacing.
        #[serde(default)]
        append: bool,
        /// Make missing parent directories.
        #[serde(default)]
        create_dirs: bool,
    },
    /// Copy a file or directory between the host and a running sandbox, as `airlock cp` does
    /// (the host side is exactly `host_path`, never followed through a symlink; the sandbox side
    /// is resolved inside the sandbox).
    Copy {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        direction: Direction,
        /// An absolute path on the host (the engine's user's view).
        host_path: String,
        /// An absolute path inside the sandbox.
        path: String,
    },
    /// Push a branch of the host repository into a clone-mode sandbox's repository as
    /// `delivered/BRANCH`.
    Deliver {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        branch: String,
    },
    /// Whether a project's `airlock.toml` is trusted (`status`), or trust it as it is now
    /// (`allow`), or withdraw the trust (`revoke`).
    Trust {
        /// An absolute project directory (its airlock.toml is found upward).
        dir: String,
        #[serde(default)]
        op: TrustOp,
    },
    /// Whether a connection, a path access or a system call would be allowed in a sandbox,
    /// why, and what would allow it — from the code that enforces it.
    Explain {
        /// The sandbox whose policy to explain.
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        sandbox: String,
        /// A host name (or IP literal) to connect to.
        #[serde(default)]
        domain: Option<String>,
        /// The connection's port (default 443).
        #[serde(default, deserialize_with = "whole_number")]
        #[schema(minimum = 1, maximum = 65535)]
        port: Option<u64>,
        /// A path inside the sandbox.
        #[serde(default)]
        path: Option<String>,
        /// The access to `path` (default write).
        #[serde(default)]
        access: Option<Access>,
        /// A system call's name, e.g. `ptrace`.
        #[serde(default)]
        syscall: Option<String>,
    },
    /// Run a command in a fresh, disposable sandbox, as `airlock run` (streams:
    /// `POST /v1/run`, its output and then its exit status).
    Run(RunRequest),
    /// Run a command in a running sandbox (streams: `POST /v1/sandboxes/{name}/exec`, its
    /// output and then its exit status).
    Exec {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(flatten)]
        request: ExecRequest,
    },
    /// Create (and start) a sandbox of a project from its configuration, as `airlock up` /
    /// `airlock create` + `start` do (hooks, setup scripts, secrets from the environment).
    Up(UpRequest),
    /// Agent mode: send the next prompt; with `wait` (default), stream the turn's journal lines
    /// until it ends (streams: `POST /v1/sandboxes/{name}/prompt`).
    Prompt {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        text: String,
        #[serde(default = "yes")]
        wait: bool,
    },
    /// Agent mode: the report journal; with `follow`, as it grows (streams:
    /// `GET /v1/sandboxes/{name}/reports`).
    Reports {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[serde(default)]
        follow: bool,
    },
    /// Allow a domain (`*.example.com`: its subdomains), and a port when given, in a
    /// filtered sandbox's egress allowlist: in force at once while it runs (no restart), and
    /// kept for its later starts. Journaled as a policy change.
    Allow {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[schema(
            examples("github.com"),
            max_length = 253,
            pattern = "^(\\*\\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$"
        )]
        domain: String,
        #[serde(default, deserialize_with = "whole_number")]
        #[schema(minimum = 1, maximum = 65535)]
        port: Option<u64>,
        /// Which surface asked (for the audit journal; default `api`).
        #[serde(default)]
        via: Via,
    },
    /// Take a domain out of a filtered sandbox's egress allowlist: new connections and DNS
    /// answers for it are refused at once, and its open connections to it are closed.
    Deny {
        #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
        name: String,
        #[schema(
            examples("github.com"),
            max_length = 253,
            pattern = "^(\\*\\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$"
        )]
        domain: String,
        #[serde(default)]
        via: Via,
    },
}

/// The surface a policy change came through, as the audit journal records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[default]
    Api,
    Cli,
    Mcp,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Api => "api",
            Via::Cli => "cli",
            Via::Mcp => "mcp",
        })
    }
}

/// `allow`'s and `deny`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyChange {
    pub name: String,
    /// `allow` or `deny`.
    #[schema(examples("allow"))]
    pub op: String,
    /// The entry as stored (lowercase, no trailing dot).
    pub domain: String,
    pub port: Option<u16>,
    /// False when the allowlist already was so (nothing to change).
    pub changed: bool,
    /// The running sandbox has the new allowlist in force; false when it is not running (its
    /// next start has it).
    pub live: bool,
    /// Open connections the change closed (a deny of a host they were going to).
    pub closed: u64,
    /// The allowlist now.
    pub domains: Vec<String>,
    pub ports: Vec<u16>,
}

fn yes() -> bool {
    true
}

/// What `run` runs, and the policy options it adds to the project's configuration (as `airlock
/// run`'s flags do; unset: the configuration's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunRequest {
    /// The project directory (absolute): its airlock.toml applies, and it appears at
    /// /workspace.
    #[schema(pattern = "^/", examples("/home/me/project"))]
    pub dir: String,
    /// The command, as for exec.
    #[serde(flatten)]
    pub command: ExecRequest,
    /// Kill the command after this many seconds (exit 124).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_secs: Option<u64>,
    #[serde(flatten)]
    pub policy: PolicyOptions,
}

/// The policy options a new sandbox adds to its project's configuration, as the CLI's flags
/// do (unset: the configuration's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyOptions {
    /// `restrictive`, `moderate` or `permissive`.
    #[serde(default)]
    #[schema(examples("moderate"))]
    pub profile: Option<String>,
    /// `off` or `filtered`.
    #[serde(default)]
    #[schema(examples("filtered"))]
    pub net: Option<String>,
    /// Domains allowed in filtered mode: `DOMAIN[:PORT]`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `overlay`, `bind`, `clone` or `none`.
    #[serde(default)]
    #[schema(examples("overlay"))]
    pub workspace: Option<String>,
    /// A compatibility mode (`airlock run --compatibility-mode`), e.g. `browser`.
    #[serde(default)]
    pub compatibility_mode: Option<String>,
    /// The root filesystem: `host` (the default), an OCI image reference, or `auto`.
    #[serde(default)]
    #[schema(examples("host"))]
    pub image: Option<String>,
    /// The isolation backend: `container` (the default) or `microvm`.
    #[serde(default)]
    #[schema(examples("container"))]
    pub backend: Option<String>,
    /// Memory limit, e.g. `512M`.
    #[serde(default)]
    pub memory: Option<String>,
    /// CPU limit in cores, e.g. `0.5`.
    #[serde(default)]
    pub cpus: Option<String>,
    /// Most processes and threads.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 4194304)]
    pub pids: Option<u64>,
}

/// A command to run (`exec`: in a running sandbox; `run`: in a fresh one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecRequest {
    /// The command and its arguments, run inside the sandbox as its user.
    #[schema(min_items = 1, examples(json!(["make", "test"])))]
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory inside (relative: under /workspace).
    #[serde(default)]
    pub workdir: Option<String>,
    /// The command's standard input (default: none, as from /dev/null).
    #[serde(default)]
    pub stdin: Option<String>,
}

/// A sandbox of a project, made as `airlock create` / `airlock up` make one: the project's
/// configuration and `policy` resolve into its spec in the typed child (the CLI's resolution).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpRequest {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// The project directory (absolute): its airlock.toml applies.
    #[schema(pattern = "^/", examples("/home/me/project"))]
    pub dir: String,
    /// Agent mode: the harness (`claude`, `codex`, `gemini`; default none, or the
    /// configuration's `[agent] harness`).
    #[serde(default)]
    pub agent: Option<String>,
    /// Refuse (`exists`) when the sandbox exists; otherwise an existing one is started as it
    /// is (as `airlock up`, which refuses options that differ from it).
    #[serde(default)]
    pub new: bool,
    /// Start it (default); `false` only creates it (with `new`).
    #[serde(default = "yes")]
    pub start: bool,
    #[serde(flatten)]
    pub policy: PolicyOptions,
}

impl Action {
    /// Streams (NDJSON, from a typed child): its events as they come, then its end.
    pub fn streams(&self) -> bool {
        matches!(
            self,
            Action::Prompt { .. } | Action::Reports { .. } | Action::Run(_) | Action::Exec { .. }
        )
    }

    /// Carried out in a typed child process (`airlock __action`), not by the engine itself.
    pub fn in_child(&self) -> bool {
        matches!(
            self,
            Action::FileRead { .. }
                | Action::FileWrite { .. }
                | Action::Copy { .. }
                | Action::Deliver { .. }
                | Action::Trust { .. }
                | Action::Explain { .. }
                | Action::Up(_)
        )
    }
}

/// A non-negative integer as JSON Schema counts them: `2000.0` is one too.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(de)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        // Exactly representable (below 2^53) and whole.
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0 => {
            Ok(Some(f as u64))
        }
        _ => Err(serde::de::Error::custom(format!(
            "expected a non-negative integer, not {number}"
        ))),
    }
}

/// The largest `offset` of a file read (2^53 - 1: what every JSON reader holds exactly).
pub const MAX_OFFSET: u64 = (1 << 53) - 1;
/// The most bytes a file read returns.
pub const MAX_READ: u64 = 4 << 20;

/// How file content travels in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The text itself.
    #[default]
    Utf8,
    /// Base64 (standard alphabet, padded): for bytes that are not UTF-8.
    Base64,
}

/// Which way a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the host into the sandbox.
    In,
    /// From the sandbox out to the host.
    Out,
}

/// What `trust` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrustOp {
    #[default]
    Status,
    Allow,
    Revoke,
}

/// An access to a path, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

/// `file_read`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileContent {
    /// The absolute path inside the sandbox.
    pub path: String,
    /// `file` or `directory`.
    pub kind: String,
    /// A file's full size in bytes.
    pub size: Option<u64>,
    pub offset: u64,
    /// The bytes returned (for a file).
    pub returned_bytes: u64,
    /// More of the file follows (read on from `offset + returned_bytes`).
    pub truncated: bool,
    pub encoding: Encoding,
    /// The bytes read (a file), or the listing (a directory).
    pub content: String,
    /// A directory's entries: `{name, kind, size, mode}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub entries: Option<Vec<serde_json::Value>>,
}

/// `file_write`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Written {
    pub path: String,
    pub written_bytes: u64,
    /// The file's size afterwards.
    pub size: Option<u64>,
}

/// `copy`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Copied {
    pub direction: Direction,
    pub host_path: String,
    pub path: String,
    /// For a directory copied out: what it holds that the host's tools would obey or follow
    /// (set-id bits are cleared), to review before running them there.
    pub review: Vec<String>,
}

/// `deliver`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivered {
    pub name: String,
    /// The branch made in the sandbox's repository: `delivered/BRANCH`.
    pub branch: String,
}

/// `trust`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrustReport {
    /// The project's airlock.toml.
    pub file: String,
    pub trusted: bool,
    /// The digest of the file as trusted (or as it is now).
    pub sha256: String,
    /// What the file's settings widen (apply only once trusted).
    #[schema(value_type = Vec<Object>)]
    pub widening: Vec<serde_json::Value>,
}

/// One verdict of `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    pub subject: String,
    pub allowed: bool,
    pub reason: String,
    /// The option or configuration line that would allow it; none when nothing may.
    pub fix: Option<String>,
}

/// `explain`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    /// Whose policy: `sandbox NAME`.
    pub origin: String,
    /// The policy in one line.
    pub policy: String,
    pub verdicts: Vec<Verdict>,
}

/// Why an action failed: one shape for the CLI (its exit code and `hint:` line), the HTTP API
/// (the error body, its status from `kind`) and MCP. `kind` is a stable name, see [`KINDS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("{message}")]
#[schema(as = ErrorBody)]
pub struct ActionError {
    /// A short stable name for the kind of error (`KINDS` lists them; the clone workspace's
    /// refusals add `needs_review`, `diverged`, `through_links`, `not_clone`, `no_branch`,
    /// `in_guest`).
    #[schema(examples("not_found"))]
    pub kind: String,
    /// The exit code the CLI ends with for it (README, "Exit codes").
    #[schema(examples(122))]
    pub code: i32,
    /// What went wrong, with its causes.
    #[serde(rename = "error")]
    #[schema(examples("no sandbox named web"))]
    pub message: String,
    /// What the user can do about it.
    #[schema(examples("airlock list shows the sandboxes"))]
    pub hint: Option<String>,
    /// What a clone workspace's refusal refused, for a client to show: `summary` (the error
    /// in one line), with `verb`, `branch` and `findings` (kind `needs_review`) or `report`
    /// (the sync's plan: kinds `through_links` and `conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// Every kind of error an action (or the API around it) answers: its name, the CLI's exit
/// code and the HTTP status. The one place they are mapped.
pub const KINDS: &[(&str, i32, u16)] = {
    use airlock_model::exit::*;
    &[
        ("bad_request", USAGE, 400),
        ("invalid_name", USAGE, 400),
        ("bad_spec", USAGE, 400),
        ("forbidden", USAGE, 403),
        ("refused", POLICY_REFUSED, 403),
        ("not_found", NOT_FOUND, 404),
        ("no_such_path", NOT_FOUND, 404),
        ("no_route", USAGE, 404),
        ("method_not_allowed", USAGE, 405),
        ("timeout", USAGE, 408),
        ("exists", ALREADY_EXISTS, 409),
        ("needs_review", POLICY_REFUSED, 409),
        ("through_links", POLICY_REFUSED, 409),
        ("diverged", CONFLICT, 409),
        ("not_clone", CONFLICT, 409),
        ("no_branch", CONFLICT, 409),
        ("in_guest", CONFLICT, 409),
        ("wrong_state", CONFLICT, 409),
        ("conflict", CONFLICT, 409),
        ("too_large", USAGE, 413),
        ("failed", SANDBOX_FAILED, 500),
        ("backend", SANDBOX_FAILED, 500),
        ("damaged", 1, 500),
        ("internal", 1, 500),
        ("unavailable", BACKEND_UNAVAILABLE, 503),
        ("busy", 1, 503),
    ]
};

impl ActionError {
    /// An error of `kind`, with that kind's exit code.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        let code = KINDS.iter().find(|k| k.0 == kind).map_or(1, |k| k.1);
        ActionError {
            kind: kind.to_owned(),
            code,
            message: message.into(),
            hint: None,
            detail: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error for a CLI exit code (the kind the code means; `failed` when it means none).
    pub fn from_code(code: i32, message: impl Into<String>, hint: Option<String>) -> Self {
        use airlock_model::exit::*;
        let kind = match code {
            USAGE => "bad_request",
            ALREADY_EXISTS => "exists",
            CONFLICT => "wrong_state",
            POLICY_REFUSED => "refused",
            NOT_FOUND => "not_found",
            BACKEND_UNAVAILABLE => "unavailable",
            _ => "failed",
        };
        ActionError {
            kind: kind.to_owned(),
            code,
            message: message.into(),
            hint,
            detail: None,
        }
    }

    /// The HTTP status the API answers it with: its kind's (500 for a kind not in [`KINDS`]).
    pub fn http_status(&self) -> u16 {
        KINDS.iter().find(|k| k.0 == self.kind).map_or(500, |k| k.2)
    }
}

/// What a typed child process (`airlock __action`) answers on its stdout: one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildAnswer {
    Ok(Box<ActionData>),
    Error(ActionError),
}

/// Secret values never show in logs or debug output: only their names.
impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Start { name, secrets } => f
                .debug_struct("Start")
                .field("name", name)
                .field(
                    "secrets",
                    &secrets.as_ref().map(|s| s.keys().collect::<Vec<_>>()),
                )
                .finish(),
            other => {
                let v = serde_json::to_value(other).unwrap_or_default();
                write!(f, "{v}")
            }
        }
    }
}

/// What an action gives back. Tagged by `data`, the value in `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "data", content = "value", rename_all = "snake_case")]
pub enum ActionData {
    /// create, start, stop
    Record(Record),
    /// list
    Records(Vec<Record>),
    /// status
    Status(Status),
    /// remove: the name removed
    Removed(String),
    /// gc
    Reconciled(ReconcileReport),
    /// diff
    Diff(DiffSummary),
    /// fetch
    Fetched(FetchReport),
    /// sync
    Synced(SyncReport),
    /// file_read
    File(FileContent),
    /// file_write
    Written(Written),
    /// copy
    Copied(Copied),
    /// deliver
    Delivered(Delivered),
    /// trust
    Trust(TrustReport),
    /// explain
    Explained(Explanation),
    /// prompt, reports: how the stream ended
    Ended(StreamEnd),
    /// allow, deny
    Policy(PolicyChange),
}

/// The end of a streamed action (prompt, reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamEnd {
    /// prompt: the turn's id.
    pub turn: Option<u64>,
    /// The CLI's exit code: for prompt 0 done, 3 blocked, 4 ended without a report (0 when it
    /// did not wait); 0 for reports; for run the command's (or airlock's own, README "Exit
    /// codes").
    pub exit: i32,
}

/// The longest a typed child may take.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(600);

/// Runs `PROGRAM __action` for `action`: the typed contract (no argv from the action, no
/// scraping of its stderr). The child is killed at `deadline`.
pub fn run_child(
    program: &std::path::Path,
    action: &Action,
    deadline: Duration,
) -> Result<ActionData, ActionError> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        ActionError::new("internal", format!("{what} the action's process: {e}"))
    };
    let input = serde_json::to_vec(action).map_err(|e| internal("encoding for", &e))?;
    let mut child = Command::new(program)
        .arg("__action")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| internal("starting", &e))?;
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&input);
        }
    });
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(MAX_CHILD_ANSWER).read_to_end(&mut out);
        }
        out
    });
    let end = std::time::Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ActionError::new(
                    "timeout",
                    format!(
                        "the action did not finish within {}s; stopped",
                        deadline.as_secs()
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(internal("waiting for", &e)),
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let line = out.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<ChildAnswer>(line) {
        Ok(ChildAnswer::Ok(data)) => Ok(*data),
        Ok(ChildAnswer::Error(e)) => Err(e),
        Err(e) => Err(ActionError::new(
            "internal",
            format!("the action's process ({status}) gave no answer: {e}"),
        )),
    }
}

/// The largest answer read from a typed child (a 4 MiB file read as base64, and its framing).
const MAX_CHILD_ANSWER: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::exit;

    #[test]
    fn every_kind_has_one_code_and_one_status() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len(), "a kind listed twice");
        for (kind, code, status) in KINDS {
            let e = ActionError::new(kind, "x");
            assert_eq!((e.code, e.http_status()), (*code, *status), "{kind}");
        }
        assert_eq!(ActionError::new("no_such_kind", "x").http_status(), 500);
        // The CLI's codes map back to kinds of that code.
        for code in [
            exit::USAGE,
            exit::ALREADY_EXISTS,
            exit::CONFLICT,
            exit::POLICY_REFUSED,
            exit::NOT_FOUND,
            exit::BACKEND_UNAVAILABLE,
            exit::SANDBOX_FAILED,
        ] {
            let e = ActionError::from_code(code, "x", None);
            let row = KINDS.iter().find(|k| k.0 == e.kind).expect("a known kind");
            assert_eq!(row.1, code, "{code} -> {}", e.kind);
        }
    }
}
