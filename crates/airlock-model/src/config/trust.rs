//! Project configuration is untrusted input (like direnv's `.envrc` or mise's config): a cloned
//! repository's `airlock.toml` — or one a sandbox wrote — must not be able to widen the policy
//! the user gets. Pure comparison: the configuration without the project's contributions (the
//! project file and the plugins only it names) against the configuration with them. Whatever
//! the project makes wider is a [`Widening`]; the binary refuses those until the user trusts
//! the file's exact content. Narrowing settings never need trust.

use super::effective::Effective;
use crate::policy::{NetMode, Profile, WorkspaceMode};
use serde::Serialize;

/// One setting the project file widens, as a dotted key and what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Widening {
    pub key: String,
    pub detail: String,
}

fn profile_rank(p: Profile) -> u8 {
    match p {
        Profile::Restrictive => 0,
        Profile::Moderate => 1,
        Profile::Permissive => 2,
    }
}

/// The network mode a configuration gets (the profile decides when unset).
pub fn net_mode(e: &Effective) -> NetMode {
    e.network.mode.unwrap_or(match e.sandbox.profile {
        Profile::Restrictive => NetMode::Off,
        Profile::Moderate => NetMode::Filtered,
        Profile::Permissive => NetMode::Open,
    })
}

fn net_rank(m: NetMode) -> u8 {
    match m {
        NetMode::Off => 0,
        NetMode::Filtered => 1,
        NetMode::Open => 2,
    }
}

fn writes_host(e: &Effective) -> bool {
    match e.workspace.mode {
        Some(m) => m == WorkspaceMode::Bind,
        None => e.sandbox.profile == Profile::Permissive,
    }
}

/// What `with` (the configuration including the project's layers) allows beyond `without`.
pub fn widening(without: &Effective, with: &Effective) -> Vec<Widening> {
    let mut out = Vec::new();
    let mut add = |key: &str, detail: String| {
        out.push(Widening {
            key: key.to_string(),
            detail,
        })
    };
    if profile_rank(with.sandbox.profile) > profile_rank(without.sandbox.profile) {
        add(
            "sandbox.profile",
            format!(
                "{} instead of {}",
                with.sandbox.profile, without.sandbox.profile
            ),
        );
    }
    let (nw, nwo) = (net_mode(with), net_mode(without));
    if net_rank(nw) > net_rank(nwo) {
        add("network.mode", format!("{nw} instead of {nwo}"));
    }
    let domains: Vec<&String> = with
        .network
        .domains
        .iter()
        .filter(|d| !without.network.domains.contains(d))
        .collect();
    if !domains.is_empty() && nw != NetMode::Off {
        add(
            "network.domains",
            format!(
                "allows {}",
                domains
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let ports: Vec<String> = with
        .network
        .ports
        .iter()
        .filter(|p| !without.network.ports.contains(p))
        .map(u16::to_string)
        .collect();
    if !ports.is_empty() && nw != NetMode::Off {
        add("network.ports", format!("allows port {}", ports.join(", ")));
    }
    if writes_host(with) && !writes_host(without) {
        add(
            "workspace.mode",
            "bind: the sandbox writes your checkout directly".into(),
        );
    }
    for r in &with.workspace.repos {
        if !without.workspace.repos.contains(r) {
            add(
                "workspace.repos",
                format!("copies {} into the sandbox", r.source.display()),
            );
        }
    }
    for m in &with.mounts {
        if !without.mounts.contains(m) {
            add(
                "mounts",
                format!(
                    "{} {} at {}",
                    if m.readonly { "read-only" } else { "WRITABLE" },
                    m.source.display(),
                    m.target.display()
                ),
            );
        }
    }
    for (name, src) in &with.secrets {
        if without.secrets.get(name) != Some(src) {
            let from = match &src.source {
                super::SecretSource::FromEnv(v) => format!("your ${v}"),
                super::SecretSource::FromFile(p) => p.display().to_string(),
            };
            let what = match &src.inject {
                None => format!("gives {name} (from {from}) to the sandbox"),
                Some(i) => format!(
                    "sends {name} (from {from}) to {} (the sandbox holds a placeholder)",
                    i.hosts.join(", ")
                ),
            };
            add("secrets", what);
        }
    }
    for (rel, f) in &with.home_files {
        if without.home_files.get(rel) != Some(f) {
            add(
                "home_files",
                format!("copies {} into the sandbox's home", f.source.display()),
            );
        }
    }
    let r = (&with.resources, &without.resources);
    let more = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a > b,
        (None, Some(_)) => true,
        _ => false,
    };
    if more(r.0.memory.map(|m| m.0), r.1.memory.map(|m| m.0)) {
        add("resources.memory", "raises the memory limit".into());
    }
    if more(r.0.pids, r.1.pids) {
        add("resources.pids", "raises the process limit".into());
    }
    if more(
        r.0.cpus.map(|c| c.quota_us(100_000)),
        r.1.cpus.map(|c| c.quota_us(100_000)),
    ) {
        add("resources.cpus", "raises the CPU limit".into());
    }
    if more(r.0.disk.map(|m| m.0), r.1.disk.map(|m| m.0)) {
        add("resources.disk", "raises the disk limit".into());
    }
    for s in with.setup.iter().filter(|s| !without.setup.contains(s)) {
        add(
            "setup",
            format!(
                "runs {} inside the sandbox (read from this host)",
                s.display()
            ),
        );
    }
    let hooks = |e: &Effective| {
        [
            ("hooks.pre_up", e.hooks.pre_up.clone()),
            ("hooks.post_up", e.hooks.post_up.clone()),
            ("hooks.pre_down", e.hooks.pre_down.clone()),
            ("hooks.post_down", e.hooks.post_down.clone()),
        ]
    };
    for host in with
        .images
        .insecure_registries
        .iter()
        .filter(|h| !without.images.insecure_registries.contains(h))
    {
        add(
            "images.insecure_registries",
            format!("pulls images from {host} over plain HTTP"),
        );
    }
    for (reg, hosts) in &with.images.mirrors {
        if without.images.mirrors.get(reg) != Some(hosts) {
            add(
                "images.mirrors",
                format!("pulls {reg} images from {}", hosts.join(", ")),
            );
        }
    }
    if with.pool.size > without.pool.size {
        add(
            "pool.size",
            format!(
                "keeps {} sandboxes started in the background per kind of run",
                with.pool.size
            ),
        );
    }
    for (agent, n) in &with.daemon.agents {
        if *n > without.daemon.agents.get(agent).copied().unwrap_or(0) {
            add(
                "daemon.agents.min_warm",
                format!("keeps {n} {agent} agent sandboxes started in the background"),
            );
        }
    }
    for ((key, w), (_, wo)) in hooks(with).into_iter().zip(hooks(without)) {
        for cmd in w.iter().filter(|c| !wo.contains(c)) {
            add(key, format!("runs `{cmd}` on the host"));
        }
    }
    out
}
