//! Folding layers into one [`Effective`] and recording where every value came from.
//!
//! Rules (SPEC §4): scalars take the later value; lists concatenate and drop duplicates,
//! keeping first-seen order; maps merge with the later value winning per key. Two lists are
//! keyed rather than compared whole: a later mount with the same `target` (or repo with the
//! same `dest`) replaces the earlier one in place. `home_files` entries merge field by field.

use super::effective::{
    DaemonConfig, Effective, HomeFileSpec, Hooks, ImagesConfig, MountSpec, NetworkConfig,
    PoolConfig, ResourcesConfig, SandboxConfig, WorkspaceConfig, DEFAULT_AGENT_GRACE,
    DEFAULT_HOME_FILE_MODE, DEFAULT_IMAGE, DEFAULT_MOUNT_READONLY, DEFAULT_PORTS,
};
use super::error::{ConfigError, Location};
use super::origin::{join_key, Origins, Source};
use super::schema::{
    AgentLayer, AgentPoolLayer, HomeFileLayer, Layer, NetworkLayer, ResourcesLayer, SandboxLayer,
    WorkspaceLayer,
};
use super::validate::validate;
use crate::policy::{BackendKind, ByteSize, CompatibilityMode, NetMode, Profile, WorkspaceMode};
use std::collections::BTreeMap;

/// The defaults, as the first layer of every merge.
pub fn defaults_layer() -> Layer {
    Layer {
        sandbox: Some(SandboxLayer {
            backend: Some(BackendKind::Container),
            image: Some(DEFAULT_IMAGE.to_string()),
            profile: Some(Profile::Moderate),
            kernel: None,
        }),
        network: Some(NetworkLayer {
            ports: Some(DEFAULT_PORTS.to_vec()),
            ..Default::default()
        }),
        agent: Some(AgentLayer {
            harness: None,
            grace: Some(DEFAULT_AGENT_GRACE),
            compatibility_mode: None,
        }),
        ..Default::default()
    }
}

/// The domains of the package registries agents commonly install from: npm and yarn, PyPI,
/// crates.io, the Go module proxy.
pub const REGISTRY_DOMAINS: &[&str] = &[
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "proxy.golang.org",
    "sum.golang.org",
];

/// What a compatibility mode sets (as defaults every source can override):
///
/// | mode | profile | network | domains | workspace |
/// |---|---|---|---|---|
/// | claude | moderate | filtered | Anthropic's API + registries | clone |
/// | codex | restrictive (stricter) | filtered | OpenAI's API + registries | clone |
/// | gemini | moderate | filtered | Google's APIs + registries | clone |
/// | native | moderate | (airlock's default) | none | none (no project) |
///
/// `clone` applies where a clone can be made (a named sandbox in a git repository); elsewhere
/// the workspace is an overlay (`airlock run`'s default).
pub fn compatibility_layer(mode: CompatibilityMode) -> Layer {
    let api: &[&str] = match mode {
        CompatibilityMode::Claude => &["api.anthropic.com", "console.anthropic.com", "claude.ai"],
        CompatibilityMode::Codex => &["api.openai.com", "auth.openai.com", "chatgpt.com"],
        CompatibilityMode::Gemini => &[
            "generativelanguage.googleapis.com",
            "cloudcode-pa.googleapis.com",
            "oauth2.googleapis.com",
        ],
        CompatibilityMode::Native => &[],
    };
    let profile = match mode {
        CompatibilityMode::Codex => Profile::Restrictive,
        _ => Profile::Moderate,
    };
    let native = mode == CompatibilityMode::Native;
    let domains: Vec<String> = api
        .iter()
        .chain(if native { &[][..] } else { REGISTRY_DOMAINS })
        .map(|d| d.to_string())
        .collect();
    Layer {
        sandbox: Some(SandboxLayer {
            profile: Some(profile),
            ..Default::default()
        }),
        network: (!native).then_some(NetworkLayer {
            mode: Some(NetMode::Filtered),
            domains: Some(domains),
            ports: None,
        }),
        workspace: Some(WorkspaceLayer {
            mode: Some(if native {
                WorkspaceMode::None
            } else {
                WorkspaceMode::Clone
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The default `resources.pids`: podman's default pids limit. Ample for parallel builds (it
/// counts threads too: cargo -j32 with rustc's threads stays well below), while a fork bomb
/// stops at it — even without a pids cgroup (rootless), through RLIMIT_NPROC.
pub const DEFAULT_PIDS: u64 = 2048;

/// The default `resources.memory` for a host with `total` bytes of RAM: half of it (rounded
/// down to MiB), so one runaway sandbox cannot take the host's memory; it also bounds the
/// sandbox's tmpfs mounts together (`plan::tmpfs_sizes`).
pub fn default_memory(total: u64) -> ByteSize {
    const MIB: u64 = 1 << 20;
    ByteSize((total / 2 / MIB).max(64) * MIB)
}

/// The defaults that depend on the host (its RAM): the first layer after [`defaults_layer`]
/// when [`super::LoadOptions::host_memory`] is known.
pub fn host_defaults_layer(host_memory: u64) -> Layer {
    Layer {
        resources: Some(ResourcesLayer {
            memory: Some(default_memory(host_memory)),
            pids: Some(DEFAULT_PIDS),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Merges `layers` (lowest precedence first) over [`defaults_layer`].
///
/// Layers are expected to be already path-resolved (see `load`); they are re-validated here
/// so that the result's invariants hold whoever built them.
///
/// The compatibility mode the layers choose (the last `[agent] compatibility_mode`) adds its
/// settings right after the defaults, so every source can still override them.
pub fn merge_layers(
    layers: impl IntoIterator<Item = (Source, Layer)>,
) -> Result<(Effective, Origins), ConfigError> {
    let mut acc = Acc::default();
    let layers: Vec<(Source, Layer)> = layers.into_iter().collect();
    let mode = layers
        .iter()
        .filter_map(|(_, l)| l.agent.as_ref().and_then(|a| a.compatibility_mode))
        .next_back();
    let mode = mode.map(|m| (Source::Mode(m.to_string()), compatibility_layer(m)));
    let all = std::iter::once((Source::Default, defaults_layer()))
        .chain(mode)
        .chain(layers);
    for (source, mut layer) in all {
        validate(&mut layer).map_err(|inv| ConfigError::InvalidValue {
            key: inv.key.to_string(),
            location: Location {
                source: source.clone(),
                line: None,
            },
            message: inv.message,
        })?;
        acc.add(layer, &source);
    }
    acc.finish()
}

#[derive(Default)]
struct Acc {
    merged: Layer,
    origins: Origins,
    /// The last source that mentioned each `home_files` entry, for "missing source" errors.
    home_file_sources: BTreeMap<String, Source>,
}

impl Acc {
    fn scalar<T>(&mut self, dst: &mut Option<T>, value: Option<T>, key: &str, src: &Source) {
        if let Some(v) = value {
            *dst = Some(v);
            self.origins.insert(key.to_string(), vec![src.clone()]);
        }
    }

    fn list<T>(
        &mut self,
        dst: &mut Option<Vec<T>>,
        value: Option<Vec<T>>,
        key: &str,
        src: &Source,
        same: fn(&T, &T) -> bool,
    ) {
        let items = value.unwrap_or_default();
        if items.is_empty() {
            return;
        }
        let out = dst.get_or_insert_with(Vec::new);
        for item in items {
            match out.iter().position(|x| same(x, &item)) {
                Some(i) => out[i] = item,
                None => out.push(item),
            }
        }
        let sources = self.origins.entry(key.to_string()).or_default();
        if !sources.contains(src) {
            sources.push(src.clone());
        }
    }

    fn map<V>(
        &mut self,
        dst: &mut Option<BTreeMap<String, V>>,
        value: Option<BTreeMap<String, V>>,
        key: &str,
        src: &Source,
    ) {
        for (k, v) in value.unwrap_or_default() {
            self.origins.insert(join_key(key, &k), vec![src.clone()]);
            dst.get_or_insert_with(BTreeMap::new).insert(k, v);
        }
    }

    fn add(&mut self, layer: Layer, src: &Source) {
        let mut m = std::mem::take(&mut self.merged);
        self.list(&mut m.plugins, layer.plugins, "plugins", src, PartialEq::eq);
        if let Some(s) = layer.sandbox {
            let d = m.sandbox.get_or_insert_with(Default::default);
            self.scalar(&mut d.backend, s.backend, "sandbox.backend", src);
            self.scalar(&mut d.image, s.image, "sandbox.image", src);
            self.scalar(&mut d.profile, s.profile, "sandbox.profile", src);
            self.scalar(&mut d.kernel, s.kernel, "sandbox.kernel", src);
        }
        if let Some(r) = layer.resources {
            let d = m.resources.get_or_insert_with(Default::default);
            self.scalar(&mut d.cpus, r.cpus, "resources.cpus", src);
            self.scalar(&mut d.memory, r.memory, "resources.memory", src);
            self.scalar(&mut d.pids, r.pids, "resources.pids", src);
            self.scalar(&mut d.disk, r.disk, "resources.disk", src);
        }
        if let Some(n) = layer.network {
            let d = m.network.get_or_insert_with(Default::default);
            self.scalar(&mut d.mode, n.mode, "network.mode", src);
            self.list(
                &mut d.domains,
                n.domains,
                "network.domains",
                src,
                PartialEq::eq,
            );
            self.list(&mut d.ports, n.ports, "network.ports", src, PartialEq::eq);
        }
        if let Some(w) = layer.workspace {
            let d = m.workspace.get_or_insert_with(Default::default);
            self.scalar(&mut d.mode, w.mode, "workspace.mode", src);
            self.list(
                &mut d.context,
                w.context,
                "workspace.context",
                src,
                PartialEq::eq,
            );
            self.list(
                &mut d.protected,
                w.protected,
                "workspace.protected",
                src,
                PartialEq::eq,
            );
            self.list(&mut d.repos, w.repos, "workspace.repos", src, |a, b| {
                a.dest == b.dest
            });
        }
        self.list(&mut m.setup, layer.setup, "setup", src, PartialEq::eq);
        self.list(&mut m.mounts, layer.mounts, "mounts", src, |a, b| {
            a.target == b.target
        });
        self.map(&mut m.env, layer.env, "env", src);
        self.map(&mut m.secrets, layer.secrets, "secrets", src);
        for (k, h) in layer.home_files.unwrap_or_default() {
            let at = join_key("home_files", &k);
            self.home_file_sources.insert(k.clone(), src.clone());
            let d = m
                .home_files
                .get_or_insert_with(BTreeMap::new)
                .entry(k)
                .or_default();
            self.scalar(&mut d.source, h.source, &format!("{at}.source"), src);
            self.scalar(&mut d.mode, h.mode, &format!("{at}.mode"), src);
        }
        if let Some(a) = layer.agent {
            let d = m.agent.get_or_insert_with(Default::default);
            self.scalar(&mut d.harness, a.harness, "agent.harness", src);
            self.scalar(&mut d.grace, a.grace, "agent.grace", src);
            self.scalar(
                &mut d.compatibility_mode,
                a.compatibility_mode,
                "agent.compatibility_mode",
                src,
            );
        }
        if let Some(h) = layer.hooks {
            let d = m.hooks.get_or_insert_with(Default::default);
            self.list(&mut d.pre_up, h.pre_up, "hooks.pre_up", src, PartialEq::eq);
            self.list(
                &mut d.post_up,
                h.post_up,
                "hooks.post_up",
                src,
                PartialEq::eq,
            );
            self.list(
                &mut d.pre_down,
                h.pre_down,
                "hooks.pre_down",
                src,
                PartialEq::eq,
            );
            self.list(
                &mut d.post_down,
                h.post_down,
                "hooks.post_down",
                src,
                PartialEq::eq,
            );
        }
        if let Some(i) = layer.images {
            let d = m.images.get_or_insert_with(Default::default);
            self.map(&mut d.mirrors, i.mirrors, "images.mirrors", src);
            self.list(
                &mut d.insecure_registries,
                i.insecure_registries,
                "images.insecure_registries",
                src,
                PartialEq::eq,
            );
            self.map(&mut d.runtimes, i.runtimes, "images.runtimes", src);
        }
        if let Some(p) = layer.pool {
            let d = m.pool.get_or_insert_with(Default::default);
            self.scalar(&mut d.size, p.size, "pool.size", src);
        }
        if let Some(dl) = layer.daemon {
            let d = m.daemon.get_or_insert_with(Default::default);
            for (name, a) in dl.agents.unwrap_or_default() {
                let Some(n) = a.min_warm else { continue };
                let key = format!("daemon.agents.{name}.min_warm");
                self.origins.insert(key, vec![src.clone()]);
                d.agents
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, AgentPoolLayer { min_warm: Some(n) });
            }
        }
        self.merged = m;
    }

    fn finish(mut self) -> Result<(Effective, Origins), ConfigError> {
        let m = self.merged;
        let (sandbox, network) = (m.sandbox.unwrap_or_default(), m.network.unwrap_or_default());
        let (workspace, resources) = (
            m.workspace.unwrap_or_default(),
            m.resources.unwrap_or_default(),
        );
        let hooks = m.hooks.unwrap_or_default();
        let images = m.images.unwrap_or_default();
        let mut home_files = BTreeMap::new();
        for (k, HomeFileLayer { source, mode }) in m.home_files.unwrap_or_default() {
            let at = join_key("home_files", &k);
            let Some(source) = source else {
                let last = self.home_file_sources.remove(&k).unwrap_or(Source::Default);
                let location = Location {
                    source: last,
                    line: None,
                };
                return Err(ConfigError::MissingKey {
                    key: format!("{at}.source"),
                    location,
                });
            };
            let mode = mode.unwrap_or_else(|| {
                self.origins
                    .insert(format!("{at}.mode"), vec![Source::Default]);
                DEFAULT_HOME_FILE_MODE
            });
            home_files.insert(k, HomeFileSpec { source, mode });
        }
        let env = m.env.unwrap_or_default();
        let secrets = m.secrets.unwrap_or_default();
        if let Some(name) = secrets.keys().find(|k| env.contains_key(*k)) {
            let key = join_key("secrets", name);
            let last = self.origins.get(&key).and_then(|s| s.last()).cloned();
            return Err(ConfigError::InvalidValue {
                location: Location {
                    source: last.unwrap_or(Source::Default),
                    line: None,
                },
                key,
                message: format!(
                    "`{name}` is also set in [env]; a variable is either plain or secret"
                ),
            });
        }
        let effective = Effective {
            plugins: m.plugins.unwrap_or_default(),
            sandbox: SandboxConfig {
                backend: sandbox.backend.unwrap_or(BackendKind::Container),
                image: sandbox.image.unwrap_or_else(|| DEFAULT_IMAGE.to_string()),
                profile: sandbox.profile.unwrap_or(Profile::Moderate),
                kernel: sandbox.kernel,
            },
            resources: ResourcesConfig {
                cpus: resources.cpus,
                memory: resources.memory,
                pids: resources.pids,
                disk: resources.disk,
            },
            network: NetworkConfig {
                mode: network.mode,
                domains: network.domains.unwrap_or_default(),
                ports: network.ports.unwrap_or_default(),
            },
            workspace: WorkspaceConfig {
                mode: workspace.mode,
                context: workspace.context.unwrap_or_default(),
                repos: workspace.repos.unwrap_or_default(),
                protected: workspace.protected.unwrap_or_default(),
            },
            mounts: (m.mounts.unwrap_or_default().into_iter())
                .map(|l| MountSpec {
                    source: l.source,
                    target: l.target,
                    readonly: l.readonly.unwrap_or(DEFAULT_MOUNT_READONLY),
                })
                .collect(),
            env,
            secrets,
            home_files,
            agent_grace: m
                .agent
                .as_ref()
                .and_then(|a| a.grace)
                .unwrap_or(DEFAULT_AGENT_GRACE),
            compatibility_mode: m.agent.as_ref().and_then(|a| a.compatibility_mode),
            agent: m.agent.and_then(|a| a.harness),
            setup: m.setup.unwrap_or_default(),
            hooks: Hooks {
                pre_up: hooks.pre_up.unwrap_or_default(),
                post_up: hooks.post_up.unwrap_or_default(),
                pre_down: hooks.pre_down.unwrap_or_default(),
                post_down: hooks.post_down.unwrap_or_default(),
            },
            images: ImagesConfig {
                mirrors: images.mirrors.unwrap_or_default(),
                insecure_registries: images.insecure_registries.unwrap_or_default(),
                runtimes: images.runtimes.unwrap_or_default(),
            },
            pool: PoolConfig {
                size: m.pool.and_then(|p| p.size).unwrap_or(0),
            },
            daemon: DaemonConfig {
                agents: m
                    .daemon
                    .and_then(|d| d.agents)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, a)| a.min_warm.map(|n| (k, n)))
                    .collect(),
            },
        };
        Ok((effective, self.origins))
    }
}
