//! Configuration (SPEC §4): the `airlock.toml` schema, layered loading, provenance.
//!
//! # Public API
//!
//! - [`load`]`(&`[`LoadOptions`]`) -> Result<`[`Resolved`]`, `[`ConfigError`]`>` reads and merges
//!   defaults < user < plugins < project < command line.
//!   - `LoadOptions { cwd, user_config: Option<PathBuf> /* None = default location */,
//!     no_user_config, cli: Layer, home: Option<PathBuf> /* None = $HOME */ }`
//!     (derives `Default`; [`LoadOptions::new`]`(cwd)`).
//!   - `Resolved { effective: Effective, origins: Origins, project_dir: Option<PathBuf>,
//!     files: Vec<PathBuf> }`.
//! - [`Layer`] (and `SandboxLayer`, `ResourcesLayer`, `NetworkLayer`, `WorkspaceLayer`,
//!   `MountLayer`, `HomeFileLayer`, `AgentLayer`, `HooksLayer`, `RepoSpec`, `Secret`, `SecretSource`, `Inject`,
//!   `Harness`): one source's settings, every field optional, `Default` everywhere so the CLI
//!   can build one from flags: `Layer { sandbox: Some(SandboxLayer { profile: Some(p),
//!   ..Default::default() }), ..Default::default() }`.
//! - [`Effective`]: concrete values (`sandbox`, `resources`, `network`, `workspace`, `mounts`,
//!   `env`, `secrets`, `home_files`, `agent`, `hooks`, `plugins`);
//!   [`Effective::to_toml_string`] prints it as a loadable `airlock.toml`,
//!   [`Effective::to_layer`] turns it back into a layer.
//! - [`Origins`] = `BTreeMap<String, Vec<Source>>`: dotted key path (`resources.memory`,
//!   `network.domains`, `env.RUST_LOG`, `home_files.".claude/CLAUDE.md".source`) → sources.
//!   Scalars and map entries have one source; lists have every source that added to them.
//!   [`Source`] displays as `default`, `user:PATH`, `plugin:NAME`, `plugin:PATH`,
//!   `project:PATH`, `cli`. [`join_key`] builds key paths the same way.
//! - [`merge_layers`] merges already-built layers over the defaults (no files, no plugins).
//! - [`INIT_TEMPLATE`]: the commented starter `airlock.toml` written by `airlock init`.
//! - [`BUILTIN_NAMES`] / [`builtin_plugin`]: the built-in plugins and their TOML text.
//!
//! Merge rules: scalars take the later value; lists concatenate and de-duplicate (first-seen
//! order kept; mounts are keyed by `target` and repos by `dest`, later replacing earlier in
//! place); maps merge with the later value winning per key; `home_files` entries merge field
//! by field. `network.ports` always starts with the defaults 443 and 80. Relative host paths
//! (mount, repo and home-file sources, `from_file`, plugin files) resolve against the
//! directory of the file that wrote them (the working directory for the command line); `~/`
//! expands to the home directory.

mod effective;
mod error;
mod load;
mod merge;
mod origin;
mod parse;
mod paths;
mod plugins;
mod schema;
pub mod trust;
mod validate;

#[cfg(test)]
mod tests;

pub use effective::{
    DaemonConfig, Effective, HomeFileSpec, Hooks, ImagesConfig, MountSpec, NetworkConfig,
    ResourcesConfig, SandboxConfig, WorkspaceConfig, DEFAULT_AGENT_GRACE, DEFAULT_HOME_FILE_MODE,
    DEFAULT_IMAGE, DEFAULT_MOUNT_READONLY, DEFAULT_PORTS,
};
pub use error::{ConfigError, Location};
pub use load::{
    default_user_config_path, find_project_file, load, LoadOptions, ProjectConfig, Resolved,
    PROJECT_FILE,
};
pub use merge::{
    compatibility_layer, default_memory, defaults_layer, host_defaults_layer, merge_layers,
    DEFAULT_PIDS, REGISTRY_DOMAINS,
};
pub use origin::{join_key, quote_key, Origins, Source};
pub use plugins::{builtin_plugin, is_plugin_path, BUILTIN_NAMES};
pub use schema::{
    AgentLayer, AgentPoolLayer, DaemonLayer, Harness, HomeFileLayer, HooksLayer, ImagesLayer,
    Inject, Layer, MountLayer, NetworkLayer, RepoSpec, ResourcesLayer, SandboxLayer, Secret,
    SecretSource, WorkspaceLayer,
};
pub use trust::Widening;

/// The starter `airlock.toml` written by `airlock init`. Loading it changes nothing from the
/// defaults; every commented-out setting (lines starting `#` directly followed by text) is
/// valid when uncommented.
pub const INIT_TEMPLATE: &str = include_str!("init_template.toml");
