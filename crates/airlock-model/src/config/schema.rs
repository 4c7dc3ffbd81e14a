//! The shape of one configuration layer (SPEC §4): every key a file may set, all optional.
//!
//! A [`Layer`] is what one source contributes: a user config, a plugin, a project
//! `airlock.toml`, or the command line. Unknown keys are rejected at every depth.
//! Values are checked by `validate`; relative paths are resolved by `paths` before merging.

use crate::policy::{BackendKind, ByteSize, Cpus, HomeFileMode, NetMode, Profile, WorkspaceMode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Everything one source may say. `None` means "this layer does not mention the key".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Built-in plugin names (`rust`) or plugin files (`./tools/x.toml`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<MountLayer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, Secret>>,
    /// Keyed by the path relative to the sandbox user's home, e.g. `.claude/CLAUDE.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_files: Option<BTreeMap<String, HomeFileLayer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksLayer>,
    /// Scripts (host paths) run inside the sandbox once after its first start (`run`: before
    /// the command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<Vec<PathBuf>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<ImagesLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonLayer>,
}

/// `[daemon]`: what the warm pool's daemon keeps started (docs/design/warm-pool.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonLayer {
    /// `[daemon.agents.NAME]`, NAME a harness (`claude`, `codex`, `gemini`, or `command` for a
    /// `harness = { command = [...] }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<BTreeMap<String, AgentPoolLayer>>,
}

/// `[daemon.agents.NAME]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPoolLayer {
    /// Sandboxes kept started for this agent's starts (`up --agent NAME`; 0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_warm: Option<u32>,
}

/// `[pool]`: the warm pool (docs/design/warm-pool.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolLayer {
    /// Sandboxes kept started for each kind of `run` seen (0: no pool, no daemon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
}

/// `[images]`: registries and the runtime auto-detection table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesLayer {
    /// Registry (`docker.io`) -> mirror hosts tried first, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<BTreeMap<String, Vec<String>>>,
    /// Registry hosts spoken to over plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_registries: Option<Vec<String>>,
    /// `image = "auto"`: a command name (`python3`) or project file (`file:Cargo.toml`) -> the
    /// image to use; entries here override the built-in table (`runtime::BUILTIN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtimes: Option<BTreeMap<String, String>>,
}

/// `[sandbox]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// The microVM backend's guest kernel: a bzImage or vmlinux whose modules are in
    /// /lib/modules (relative: to the project directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// `[resources]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
}

/// `[network]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetMode>,
    /// DNS names (`github.com`) or one-level-or-deeper wildcards (`*.npmjs.org`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
}

/// `[workspace]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkspaceMode>,
    /// Project-relative paths (untracked files such as `.claude`) copied over the workspace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repos: Option<Vec<RepoSpec>>,
    /// Workspace paths read-only inside, on top of the built-in list (which cannot shrink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected: Option<Vec<String>>,
}

/// `[[workspace.repos]]`: an extra reference repository. Both keys are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// Host path of the repository (relative paths resolve against the naming file).
    pub source: PathBuf,
    /// Where it lands, relative to the sandbox user's home (e.g. `Git/github.com/o/r`).
    pub dest: PathBuf,
}

/// `[[mounts]]`: `source` and `target` are required; `readonly` defaults to true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountLayer {
    pub source: PathBuf,
    pub target: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
}

/// Where a secret's value is read from. Only the source is recorded; the value is read by
/// whoever injects it, never by the config layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    FromEnv(String),
    FromFile(PathBuf),
}

/// `[secrets] NAME = { from_env = "VAR" } | { from_file = "PATH" }`, optionally with
/// `inject = { hosts = [...], header = "x-api-key" }`: then the sandbox holds a placeholder
/// and the egress proxy puts the value into requests to those hosts only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Secret {
    #[serde(flatten)]
    pub source: SecretSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject: Option<Inject>,
}

impl From<SecretSource> for Secret {
    fn from(source: SecretSource) -> Self {
        Self {
            source,
            inject: None,
        }
    }
}

/// `inject = { hosts = ["api.example.com"], header = "x-api-key" }` — or `bearer = true`
/// (`Authorization: Bearer`), `basic = true` (the placeholder inside basic auth's
/// `user:password`), `query = "key"` (a query parameter). Exactly one place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inject {
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bearer: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub basic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl Inject {
    /// Where the value goes, in words (`header x-api-key`), or why the table is wrong.
    pub fn place(&self) -> Result<String, &'static str> {
        match (&self.header, self.bearer, self.basic, &self.query) {
            (Some(h), false, false, None) => Ok(format!("header {}", h.to_ascii_lowercase())),
            (None, true, false, None) => Ok("authorization bearer".into()),
            (None, false, true, None) => Ok("authorization basic".into()),
            (None, false, false, Some(q)) => Ok(format!("query parameter {q}")),
            _ => Err("set exactly one of `header`, `bearer = true`, `basic = true` and `query`"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretTable {
    from_env: Option<String>,
    from_file: Option<PathBuf>,
    inject: Option<Inject>,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ from_env = \"VAR\" } or { from_file = \"PATH\" }")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Secret, A::Error> {
                let t =
                    SecretTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let source = match (t.from_env, t.from_file) {
                    (Some(var), None) => SecretSource::FromEnv(var),
                    (None, Some(path)) => SecretSource::FromFile(path),
                    _ => {
                        return Err(serde::de::Error::custom(
                            "set exactly one of `from_env` and `from_file`",
                        ))
                    }
                };
                Ok(Secret {
                    source,
                    inject: t.inject,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// `[home_files."rel/path"]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeFileLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<HomeFileMode>,
}

/// `[agent]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub harness: Option<Harness>,
    /// How long the harness may go on after its `done`/`blocked` report (its final message)
    /// before it is stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace: Option<crate::policy::Seconds>,
    /// What the agent expects (profile, API domains, registries, workspace mode), applied
    /// as defaults that every source can override (`config::compatibility_layer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibility_mode: Option<crate::policy::CompatibilityMode>,
}

/// `[hooks]`: shell command strings run on the host in the project directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksLayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_up: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_up: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_down: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_down: Option<Vec<String>>,
}

/// The agent harness: a built-in adapter or an arbitrary command (argv).
///
/// Written as `harness = "claude"` or `harness = { command = ["my-agent", "--yes"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Harness {
    Claude,
    Codex,
    Gemini,
    Command(Vec<String>),
}

impl Harness {
    /// The built-in harness names.
    pub const NAMES: &'static [&'static str] = &["claude", "codex", "gemini"];

    /// Its name in `[daemon.agents.NAME]`: a built-in's, or `command`.
    pub fn pool_name(&self) -> &'static str {
        match self {
            Harness::Claude => "claude",
            Harness::Codex => "codex",
            Harness::Gemini => "gemini",
            Harness::Command(_) => "command",
        }
    }
}

impl fmt::Display for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Harness::Claude => f.write_str("claude"),
            Harness::Codex => f.write_str("codex"),
            Harness::Gemini => f.write_str("gemini"),
            Harness::Command(argv) => write!(f, "command {argv:?}"),
        }
    }
}

impl std::str::FromStr for Harness {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "claude" => Ok(Harness::Claude),
            "codex" => Ok(Harness::Codex),
            "gemini" => Ok(Harness::Gemini),
            _ => Err(format!(
                "unknown harness {s:?}: expected claude, codex, gemini or {{ command = [...] }}"
            )),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HarnessCommand {
    command: Vec<String>,
}

impl Serialize for Harness {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Harness::Command(argv) => HarnessCommand {
                command: argv.clone(),
            }
            .serialize(s),
            named => s.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for Harness {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Harness;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"claude\", \"codex\", \"gemini\" or { command = [...] }")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Harness, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Harness, A::Error> {
                let c =
                    HarnessCommand::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Harness::Command(c.command))
            }
        }
        d.deserialize_any(V)
    }
}
