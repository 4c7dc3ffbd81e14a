//! The resolved configuration: concrete values after every layer has been merged.

use super::schema::{
    AgentLayer, AgentPoolLayer, DaemonLayer, Harness, HomeFileLayer, HooksLayer, ImagesLayer,
    Layer, MountLayer, NetworkLayer, PoolLayer, RepoSpec, ResourcesLayer, SandboxLayer, Secret,
    WorkspaceLayer,
};
use crate::policy::{
    BackendKind, ByteSize, CompatibilityMode, Cpus, HomeFileMode, NetMode, Profile, Seconds,
    WorkspaceMode,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Default `sandbox.image`: the host's own read-only /usr.
pub const DEFAULT_IMAGE: &str = "host";
/// Default `network.ports`, always part of the list (lists only grow as layers add to them).
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];
/// Default `mounts[].readonly`.
pub const DEFAULT_MOUNT_READONLY: bool = true;
/// Default `agent.grace`: how long a harness may go on after its terminal report.
pub const DEFAULT_AGENT_GRACE: Seconds = Seconds(20);
/// Default `home_files.*.mode`.
pub const DEFAULT_HOME_FILE_MODE: HomeFileMode = HomeFileMode::Immutable;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effective {
    /// Every plugin applied, as named (plugin files by absolute path).
    pub plugins: Vec<String>,
    pub sandbox: SandboxConfig,
    pub resources: ResourcesConfig,
    pub network: NetworkConfig,
    pub workspace: WorkspaceConfig,
    pub mounts: Vec<MountSpec>,
    pub env: BTreeMap<String, String>,
    /// Where each secret comes from; values are never read by the config layer.
    pub secrets: BTreeMap<String, Secret>,
    /// Keyed by the path relative to the sandbox user's home.
    pub home_files: BTreeMap<String, HomeFileSpec>,
    pub agent: Option<Harness>,
    /// `[agent] grace`.
    pub agent_grace: Seconds,
    /// `[agent] compatibility_mode`, whose settings are already merged into the values above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility_mode: Option<CompatibilityMode>,
    pub hooks: Hooks,
    /// `setup`: scripts (absolute host paths) run inside after the first start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<PathBuf>,
    #[serde(default)]
    pub images: ImagesConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
}

/// `[daemon]`, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonConfig {
    /// `[daemon.agents.NAME] min_warm`: harness name -> sandboxes kept started for its starts.
    pub agents: BTreeMap<String, u32>,
}

impl DaemonConfig {
    /// How many members the daemon keeps for starts of `harness` (0: no pool).
    pub fn min_warm(&self, harness: &super::Harness) -> u32 {
        self.agents.get(harness.pool_name()).copied().unwrap_or(0)
    }
}

/// `[pool]`, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Sandboxes kept started for each kind of `run` seen; 0: no pool.
    pub size: u32,
}

/// `[images]`, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagesConfig {
    pub mirrors: BTreeMap<String, Vec<String>>,
    pub insecure_registries: Vec<String>,
    pub runtimes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub backend: BackendKind,
    pub image: String,
    pub profile: Profile,
    /// The microVM guest kernel (`[sandbox] kernel`, `--kernel`); None: AIRLOCK_KERNEL, else
    /// the newest distribution kernel in /boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// Resource limits; `None` = no explicit limit from configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesConfig {
    pub cpus: Option<Cpus>,
    pub memory: Option<ByteSize>,
    pub pids: Option<u64>,
    pub disk: Option<ByteSize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// `None` = the profile decides.
    pub mode: Option<NetMode>,
    /// Lowercase DNS names and `*.` wildcards.
    pub domains: Vec<String>,
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceConfig {
    /// `None` = the profile decides.
    pub mode: Option<WorkspaceMode>,
    pub context: Vec<String>,
    pub repos: Vec<RepoSpec>,
    /// Extra protected workspace paths (added to `plan::PROTECTED_PATHS`).
    pub protected: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeFileSpec {
    /// Absolute host path.
    pub source: PathBuf,
    pub mode: HomeFileMode,
}

/// Host-side shell commands, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    pub pre_up: Vec<String>,
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub post_down: Vec<String>,
}

impl Default for Effective {
    /// The configuration with no files, no plugins and no flags.
    fn default() -> Self {
        Effective {
            plugins: Vec::new(),
            sandbox: SandboxConfig {
                backend: BackendKind::Container,
                image: DEFAULT_IMAGE.to_string(),
                profile: Profile::Moderate,
                kernel: None,
            },
            resources: ResourcesConfig::default(),
            network: NetworkConfig {
                mode: None,
                domains: Vec::new(),
                ports: DEFAULT_PORTS.to_vec(),
            },
            workspace: WorkspaceConfig::default(),
            mounts: Vec::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            home_files: BTreeMap::new(),
            agent: None,
            agent_grace: DEFAULT_AGENT_GRACE,
            compatibility_mode: None,
            hooks: Hooks::default(),
            setup: Vec::new(),
            images: ImagesConfig::default(),
            pool: PoolConfig::default(),
            daemon: DaemonConfig::default(),
        }
    }
}

fn some_vec<T>(v: &[T]) -> Option<Vec<T>>
where
    T: Clone,
{
    (!v.is_empty()).then(|| v.to_vec())
}

fn some_map<V: Clone>(m: &BTreeMap<String, V>) -> Option<BTreeMap<String, V>> {
    (!m.is_empty()).then(|| m.clone())
}

impl Effective {
    /// The same values as a layer: what a config file saying exactly this would contain.
    pub fn to_layer(&self) -> Layer {
        let r = &self.resources;
        let resources = ResourcesLayer {
            cpus: r.cpus,
            memory: r.memory,
            pids: r.pids,
            disk: r.disk,
        };
        let w = &self.workspace;
        let h = &self.hooks;
        Layer {
            plugins: some_vec(&self.plugins),
            sandbox: Some(SandboxLayer {
                backend: Some(self.sandbox.backend),
                image: Some(self.sandbox.image.clone()),
                profile: Some(self.sandbox.profile),
                kernel: self.sandbox.kernel.clone(),
            }),
            resources: (resources != ResourcesLayer::default()).then_some(resources),
            network: Some(NetworkLayer {
                mode: self.network.mode,
                domains: some_vec(&self.network.domains),
                ports: some_vec(&self.network.ports),
            }),
            workspace: (*w != WorkspaceConfig::default()).then(|| WorkspaceLayer {
                mode: w.mode,
                context: some_vec(&w.context),
                repos: some_vec(&w.repos),
                protected: some_vec(&w.protected),
            }),
            mounts: some_vec(&self.mounts).map(|ms| {
                ms.into_iter()
                    .map(|m| MountLayer {
                        source: m.source,
                        target: m.target,
                        readonly: Some(m.readonly),
                    })
                    .collect()
            }),
            env: some_map(&self.env),
            secrets: some_map(&self.secrets),
            home_files: some_map(&self.home_files).map(|hs| {
                hs.into_iter()
                    .map(|(k, f)| {
                        (
                            k,
                            HomeFileLayer {
                                source: Some(f.source),
                                mode: Some(f.mode),
                            },
                        )
                    })
                    .collect()
            }),
            agent: Some(AgentLayer {
                harness: self.agent.clone(),
                grace: Some(self.agent_grace),
                compatibility_mode: self.compatibility_mode,
            }),
            setup: some_vec(&self.setup),
            hooks: (*h != Hooks::default()).then(|| HooksLayer {
                pre_up: some_vec(&h.pre_up),
                post_up: some_vec(&h.post_up),
                pre_down: some_vec(&h.pre_down),
                post_down: some_vec(&h.post_down),
            }),
            images: (self.images != ImagesConfig::default()).then(|| ImagesLayer {
                mirrors: some_map(&self.images.mirrors),
                insecure_registries: some_vec(&self.images.insecure_registries),
                runtimes: some_map(&self.images.runtimes),
            }),
            pool: (self.pool != PoolConfig::default()).then_some(PoolLayer {
                size: Some(self.pool.size),
            }),
            daemon: (self.daemon != DaemonConfig::default()).then(|| DaemonLayer {
                agents: Some(
                    self.daemon
                        .agents
                        .iter()
                        .map(|(k, v)| (k.clone(), AgentPoolLayer { min_warm: Some(*v) }))
                        .collect(),
                ),
            }),
        }
    }

    /// The effective configuration as an `airlock.toml` document. Loading that document
    /// (with no other sources) gives back the same values. Secrets show their source only.
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.to_layer())
    }
}
