//! Finding and reading the sources, expanding plugins, and merging them in precedence order:
//! defaults < user < plugins < project < command line.

use super::effective::Effective;
use super::error::ConfigError;
use super::merge::merge_layers;
use super::origin::{Origins, Source};
use super::parse::{parse_layer, prepare};
use super::paths::PathCtx;
use super::plugins::{builtin_plugin, is_plugin_path};
use super::schema::Layer;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The project file name, searched for from the working directory upward.
pub const PROJECT_FILE: &str = "airlock.toml";

/// What [`load`] reads.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where the project search starts; relative command-line paths resolve against it.
    pub cwd: PathBuf,
    /// An explicit user config file (must exist; relative to `cwd`). `None` = the default
    /// location, used when present.
    pub user_config: Option<PathBuf>,
    /// Skip the user config entirely.
    pub no_user_config: bool,
    /// The layer built from command-line flags (highest precedence).
    pub cli: Layer,
    /// The home directory for `~/` and the default user config. `None` = `$HOME`.
    pub home: Option<PathBuf>,
    /// The host's RAM in bytes: when known, the default resource limits
    /// ([`super::host_defaults_layer`]) apply. `None` = no default limits.
    pub host_memory: Option<u64>,
}

impl LoadOptions {
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        LoadOptions {
            cwd: cwd.into(),
            ..Default::default()
        }
    }
}

/// The merged configuration and how it came to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub effective: Effective,
    /// Dotted key path → the sources of its effective value.
    pub origins: Origins,
    /// The directory holding the project `airlock.toml`, if one was found.
    pub project_dir: Option<PathBuf>,
    /// Every file read, lowest precedence first (user, plugin files, project).
    pub files: Vec<PathBuf>,
    /// The project's contribution, judged as untrusted input (see [`super::trust`]).
    pub project: Option<ProjectConfig>,
}

/// The project `airlock.toml` and what it would widen.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectConfig {
    /// The `airlock.toml`.
    pub file: PathBuf,
    /// The files whose content trust covers: the `airlock.toml`, then the plugin files that
    /// only the project names (in load order).
    pub files: Vec<PathBuf>,
    /// What the project makes wider than the configuration without it.
    pub widening: Vec<super::trust::Widening>,
    /// The exact text of each of `files` as parsed (trust is judged on what was read, so a
    /// file swapped after reading cannot borrow another content's trust).
    pub texts: Vec<String>,
}

/// `$XDG_CONFIG_HOME/airlock/config.toml`, else `~/.config/airlock/config.toml`.
pub fn default_user_config_path(home: Option<&Path>) -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| home.map(|h| h.join(".config")))?;
    Some(base.join("airlock").join("config.toml"))
}

/// The nearest `airlock.toml` in `start` or one of its ancestors.
pub fn find_project_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|p| p.is_file())
}

/// Reads every source, expands plugins and merges them.
pub fn load(opts: &LoadOptions) -> Result<Resolved, ConfigError> {
    let cwd = absolute(&opts.cwd);
    let env_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let home = opts.home.clone().or(env_home);
    let sources = Sources {
        home: home.as_deref(),
        cwd: &cwd,
        read: Default::default(),
    };

    let user = match (&opts.user_config, opts.no_user_config) {
        (_, true) => None,
        (Some(path), false) => Some(sources.file(cwd.join(path), Source::User)?),
        (None, false) => match default_user_config_path(home.as_deref()) {
            Some(path) if path.exists() => Some(sources.file(path, Source::User)?),
            _ => None,
        },
    };
    let project_file = find_project_file(&cwd);
    let project = match &project_file {
        Some(path) => Some(sources.file(path.clone(), Source::Project)?),
        None => None,
    };
    let mut cli = opts.cli.clone();
    prepare(
        &mut cli,
        &PathCtx {
            base: &cwd,
            home: home.as_deref(),
        },
        &Source::CommandLine,
    )?;
    let cli = (Source::CommandLine, cli);

    let mut plugins = Plugins::default();
    for (_, layer) in user.iter().chain(&project).chain([&cli]) {
        plugins.expand(layer.plugins.as_deref().unwrap_or_default(), &sources)?;
    }
    let host = opts
        .host_memory
        .map(|m| (Source::Default, super::host_defaults_layer(m)));
    // The same without the project file: what the user gets from sources they control.
    let untrusted = match &project {
        None => None,
        Some((_, _)) => {
            let mut own = Plugins::default();
            for (_, layer) in user.iter().chain([&cli]) {
                own.expand(layer.plugins.as_deref().unwrap_or_default(), &sources)?;
            }
            let project_plugins: Vec<PathBuf> = plugins
                .layers
                .iter()
                .filter(|(src, _)| !own.layers.iter().any(|(o, _)| o == src))
                .filter_map(|(src, _)| src.file().map(Path::to_path_buf))
                .collect();
            let without: Vec<_> = host
                .iter()
                .cloned()
                .chain(user.iter().cloned())
                .chain(own.layers)
                .chain([cli.clone()])
                .collect();
            Some((merge_layers(without)?.0, project_plugins))
        }
    };
    let layers: Vec<_> = host
        .into_iter()
        .chain(user)
        .chain(plugins.layers)
        .chain(project)
        .chain([cli])
        .collect();
    let files = layers
        .iter()
        .filter_map(|(src, _)| src.file().map(Path::to_path_buf))
        .collect();
    let (effective, origins) = merge_layers(layers)?;
    let project = match (&project_file, untrusted) {
        (Some(file), Some((without, plugin_files))) => {
            let files: Vec<PathBuf> = std::iter::once(file.clone()).chain(plugin_files).collect();
            let read = sources.read.borrow();
            let texts = files
                .iter()
                .map(|f| {
                    read.iter()
                        .find(|(p, _)| p == f)
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default()
                })
                .collect();
            Some(ProjectConfig {
                file: file.clone(),
                files,
                widening: super::trust::widening(&without, &effective),
                texts,
            })
        }
        _ => None,
    };
    Ok(Resolved {
        effective,
        origins,
        project_dir: project_file.and_then(|p| p.parent().map(Path::to_path_buf)),
        files,
        project,
    })
}

fn absolute(p: &Path) -> PathBuf {
    match std::env::current_dir() {
        Ok(cwd) if p.is_relative() => cwd.join(p),
        _ => p.to_path_buf(),
    }
}

/// Reads and parses sources.
struct Sources<'a> {
    home: Option<&'a Path>,
    cwd: &'a Path,
    /// Every file read and its text.
    read: std::cell::RefCell<Vec<(PathBuf, String)>>,
}

impl Sources<'_> {
    fn file(
        &self,
        path: PathBuf,
        source: fn(PathBuf) -> Source,
    ) -> Result<(Source, Layer), ConfigError> {
        let text = crate::userfile::read_to_string(&path, crate::userfile::MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError::Read {
                path: path.clone(),
                source: e,
            })?;
        self.read.borrow_mut().push((path.clone(), text.clone()));
        let base = path.parent().unwrap_or(self.cwd);
        let src = source(path.clone());
        let layer = parse_layer(
            &text,
            &src,
            &PathCtx {
                base,
                home: self.home,
            },
        )?;
        Ok((src, layer))
    }

    fn builtin(&self, name: &str, text: &str) -> Result<(Source, Layer), ConfigError> {
        let src = Source::BuiltinPlugin(name.to_string());
        let layer = parse_layer(
            text,
            &src,
            &PathCtx {
                base: self.cwd,
                home: self.home,
            },
        )?;
        Ok((src, layer))
    }
}

/// Plugin layers in application order: each after the plugins it names, each once.
#[derive(Default)]
struct Plugins {
    seen: HashSet<String>,
    layers: Vec<(Source, Layer)>,
}

impl Plugins {
    /// `names` come from prepared layers: paths are absolute, other names are built-ins.
    fn expand(&mut self, names: &[String], sources: &Sources) -> Result<(), ConfigError> {
        for name in names {
            if !self.seen.insert(name.clone()) {
                continue;
            }
            let (src, layer) = match builtin_plugin(name) {
                Some(text) if !is_plugin_path(name) => sources.builtin(name, text)?,
                _ => sources.file(PathBuf::from(name), Source::PluginFile)?,
            };
            self.expand(layer.plugins.as_deref().unwrap_or_default(), sources)?;
            self.layers.push((src, layer));
        }
        Ok(())
    }
}
