//! The tools' arguments: what each tool accepts, as serde types whose doc comments become the
//! JSON Schema descriptions a model reads. Unknown fields are refused.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Policy defaults for a new sandbox.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProfileArg {
    /// No network, copy-on-write workspace.
    Restrictive,
    /// Filtered network (allowlisted domains only), copy-on-write workspace. The default.
    Moderate,
    /// Open network, the workspace bound writable, the host environment passed through. Only
    /// when the server was started with `airlock mcp --allow-permissive`.
    Permissive,
}

impl ProfileArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileArg::Restrictive => "restrictive",
            ProfileArg::Moderate => "moderate",
            ProfileArg::Permissive => "permissive",
        }
    }
}

/// What an agent expects, in one switch (agentkernel's compatibility modes): its profile, its
/// API's domains, the common package registries, its workspace mode.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompatibilityArg {
    /// Moderate profile, filtered to Anthropic's API and the package registries.
    Claude,
    /// Restrictive profile (stricter), filtered to OpenAI's API and the package registries.
    Codex,
    /// Moderate profile, filtered to Google's Gemini APIs and the package registries.
    Gemini,
    /// airlock's defaults, no project workspace.
    Native,
}

impl CompatibilityArg {
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityArg::Claude => "claude",
            CompatibilityArg::Codex => "codex",
            CompatibilityArg::Gemini => "gemini",
            CompatibilityArg::Native => "native",
        }
    }
}

/// Network egress inside the sandbox.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetArg {
    /// Loopback only.
    Off,
    /// Only the domains in `allow_domains` (and the configured ones), on ports 443/80.
    Filtered,
    /// Outbound allowed, except cloud metadata and the host's loopback services.
    Open,
}

impl NetArg {
    pub fn as_str(self) -> &'static str {
        match self {
            NetArg::Off => "off",
            NetArg::Filtered => "filtered",
            NetArg::Open => "open",
        }
    }
}

/// How the server's project directory appears at /workspace.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceArg {
    /// Copy-on-write: the host directory is never modified (the default).
    Overlay,
    /// No workspace.
    None,
    /// Writable bind: writes reach the host. Only with `airlock mcp --allow-permissive`.
    Bind,
    /// A git clone of the project on branch airlock/NAME, work returned with agent_diff /
    /// agent_fetch (named sandboxes of a git repository default to it).
    Clone,
}

impl WorkspaceArg {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceArg::Overlay => "overlay",
            WorkspaceArg::None => "none",
            WorkspaceArg::Bind => "bind",
            WorkspaceArg::Clone => "clone",
        }
    }
}

/// The policy options of `sandbox_run`, `sandbox_create` and `policy_explain`.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    pub compatibility_mode: Option<CompatibilityArg>,
    pub profile: Option<ProfileArg>,
    pub network: Option<NetArg>,
    pub allow_domains: Vec<String>,
    pub workspace: Option<WorkspaceArg>,
    pub memory: Option<String>,
    pub cpus: Option<String>,
    pub pids: Option<u64>,
}

/// Defines an arguments struct with the policy fields inline (serde's `flatten` cannot be
/// combined with `deny_unknown_fields`).
macro_rules! with_policy {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// One switch for what an agent expects (profile, its API's domains, the common
            /// package registries, workspace mode); the other options here override it.
            pub compatibility_mode: Option<CompatibilityArg>,
            /// Policy defaults (default: the project's configuration, else `moderate`).
            pub profile: Option<ProfileArg>,
            /// Network mode (default: from the profile / configuration).
            pub network: Option<NetArg>,
            /// Domains to allow in `filtered` mode, e.g. `["pypi.org", "*.pythonhosted.org"]`;
            /// `DOMAIN:PORT` for a port other than 443/80.
            #[serde(default)]
            pub allow_domains: Vec<String>,
            /// How the project directory appears at /workspace (default: overlay).
            pub workspace: Option<WorkspaceArg>,
            /// Memory limit, e.g. "512M", "2G".
            pub memory: Option<String>,
            /// CPU limit in cores, e.g. "1.5".
            pub cpus: Option<String>,
            /// Maximum number of processes/threads.
            pub pids: Option<u64>,
        }

        impl $name {
            pub fn policy(&self) -> Policy {
                Policy {
                    compatibility_mode: self.compatibility_mode,
                    profile: self.profile,
                    network: self.network,
                    allow_domains: self.allow_domains.clone(),
                    workspace: self.workspace,
                    memory: self.memory.clone(),
                    cpus: self.cpus.clone(),
                    pids: self.pids,
                }
            }
        }
    };
}

with_policy! {
/// `sandbox_run`.
pub struct RunArgs {
    /// The command and its arguments (argv, no shell): e.g. `["python3", "-c", "print(1)"]`.
    /// For shell syntax use `["sh", "-c", "make && ./test"]`.
    pub command: Vec<String>,
    /// Working directory inside (relative paths are under /workspace).
    pub workdir: Option<String>,
    /// Environment variables to set inside (not for secrets: they are visible in process lists).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text given to the command on its standard input.
    pub stdin: Option<String>,
    /// Kill the command after this many seconds (1-3600, default 120).
    pub timeout_seconds: Option<u64>,
    /// Bytes of stdout and of stderr returned (each; 1024-1048576, default 32768). Longer
    /// output keeps its first and last halves and says how much was cut.
    pub max_output_bytes: Option<usize>,
}
}

with_policy! {
/// `sandbox_create`.
pub struct CreateArgs {
    /// Name of the new sandbox: 1-63 of a-z, 0-9 and `-`, no leading or trailing `-`.
    pub name: String,
    /// Start it right away (default true).
    pub start: Option<bool>,
}
}

/// `sandbox_exec`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// A running sandbox's name.
    pub name: String,
    /// The command and its arguments (argv, no shell).
    pub command: Vec<String>,
    /// Working directory inside (default: /workspace, or $HOME without a workspace).
    pub workdir: Option<String>,
    /// Environment variables to set for this command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text given to the command on its standard input.
    pub stdin: Option<String>,
    /// Kill the command after this many seconds (1-3600, default 120).
    pub timeout_seconds: Option<u64>,
    /// Bytes of stdout and of stderr returned (each; 1024-1048576, default 32768).
    pub max_output_bytes: Option<usize>,
}

/// A tool that names one sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    /// The sandbox's name.
    pub name: String,
}

/// `sandbox_allow`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowArgs {
    /// The sandbox's name.
    pub name: String,
    /// A host name to allow, e.g. `pypi.org`; `*.example.com` allows its subdomains.
    pub domain: String,
    /// Also allow this port (1-65535; 443 and 80 are allowed by default).
    pub port: Option<u16>,
}

/// `sandbox_deny`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyArgs {
    /// The sandbox's name.
    pub name: String,
    /// An entry of its allowlist to take out, e.g. `pypi.org` or `*.example.com`.
    pub domain: String,
}

/// `sandbox_stop`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    /// The sandbox's name.
    pub name: String,
    /// Seconds processes get to exit after SIGTERM before SIGKILL (1-300, default 10).
    pub grace_seconds: Option<u64>,
}

/// `sandbox_remove`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    /// The sandbox's name.
    pub name: String,
    /// Stop it first if it is running (default false: a running sandbox is refused).
    pub force: Option<bool>,
}

/// `sandbox_list` takes no arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// `sandbox_file_read`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileReadArgs {
    /// A running sandbox's name.
    pub name: String,
    /// The file (or directory, for a listing) inside the sandbox: relative to /workspace, or
    /// absolute under /workspace, /tmp, /home/agent or /root. `..` is refused; symlinks that
    /// lead outside those roots are refused.
    pub path: String,
    /// Byte offset to start reading at (default 0).
    pub offset: Option<u64>,
    /// Most bytes returned (1-4194304, default 262144); the result says the file's full size.
    pub max_bytes: Option<u64>,
}

/// Content encoding of `sandbox_file_write`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `content` is the text itself.
    Utf8,
    /// `content` is base64 (for binary files).
    Base64,
}

/// `sandbox_file_write`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileWriteArgs {
    /// A running sandbox's name.
    pub name: String,
    /// The file inside the sandbox: relative to /workspace, or absolute under /workspace, /tmp,
    /// /home/agent or /root. `..` is refused; writing through a symlink is refused.
    pub path: String,
    /// The new content (at most 4 MiB once decoded).
    pub content: String,
    /// How `content` is encoded (default utf8).
    pub encoding: Option<Encoding>,
    /// Append instead of replacing (default false).
    pub append: Option<bool>,
    /// Create missing parent directories (default false).
    pub create_dirs: Option<bool>,
}

/// Access asked about by `policy_explain` for a path.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

with_policy! {
/// `policy_explain`. Without `sandbox`, the policy is a new sandbox's (as `sandbox_run` would
/// make it): the project's configuration plus the policy options given here.
pub struct ExplainArgs {
    /// Explain a connection to this host name (or IP literal), e.g. "pypi.org".
    pub domain: Option<String>,
    /// The port of that connection (default 443).
    pub port: Option<u16>,
    /// Explain access to this path inside the sandbox, e.g. "/workspace/.git/hooks/pre-commit".
    pub path: Option<String>,
    /// The access to explain for `path` (default write).
    pub access: Option<Access>,
    /// Explain this system call, e.g. "ptrace", "unshare", "io_uring_setup".
    pub syscall: Option<String>,
    /// Use this existing sandbox's policy instead of a new one's.
    pub sandbox: Option<String>,
}
}
