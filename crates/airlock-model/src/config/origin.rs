//! Where a value came from ([`Source`]) and how keys are named (dotted key paths).

use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One configuration source, in precedence order (later variants override earlier ones,
/// except that all plugins sit between the user file and the project file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Built-in defaults.
    Default,
    /// The settings of a compatibility mode (`[agent] compatibility_mode`), by name.
    Mode(String),
    /// The user config file.
    User(PathBuf),
    /// A built-in plugin, by name.
    BuiltinPlugin(String),
    /// A plugin file, by absolute path.
    PluginFile(PathBuf),
    /// The project `airlock.toml`.
    Project(PathBuf),
    /// The layer the caller built from command-line flags.
    CommandLine,
}

impl Source {
    /// The file behind this source, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Source::User(p) | Source::PluginFile(p) | Source::Project(p) => Some(p),
            Source::Default | Source::Mode(_) | Source::BuiltinPlugin(_) | Source::CommandLine => {
                None
            }
        }
    }

    /// How error messages name this source: the file path, or a phrase.
    pub fn describe(&self) -> String {
        match self {
            Source::Default => "the built-in defaults".to_string(),
            Source::BuiltinPlugin(name) => format!("built-in plugin `{name}`"),
            Source::Mode(name) => format!("compatibility mode `{name}`"),
            Source::CommandLine => "the command-line options".to_string(),
            Source::User(p) | Source::PluginFile(p) | Source::Project(p) => p.display().to_string(),
        }
    }
}

/// `default`, `mode:claude`, `user:/path`, `plugin:rust`, `plugin:/path`, `project:/path`, `cli`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Mode(m) => write!(f, "mode:{m}"),
            Source::User(p) => write!(f, "user:{}", p.display()),
            Source::BuiltinPlugin(n) => write!(f, "plugin:{n}"),
            Source::PluginFile(p) => write!(f, "plugin:{}", p.display()),
            Source::Project(p) => write!(f, "project:{}", p.display()),
            Source::CommandLine => f.write_str("cli"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Provenance: dotted key path → the sources that produced the effective value.
/// Scalars and map entries have one source; lists have every source that contributed.
pub type Origins = BTreeMap<String, Vec<Source>>;

/// Appends `key` to a dotted path, quoting it as TOML does when it is not a bare key:
/// `join_key("home_files", ".claude/x")` is `home_files.".claude/x"`.
pub fn join_key(prefix: &str, key: &str) -> String {
    let seg = quote_key(key);
    if prefix.is_empty() {
        seg
    } else {
        format!("{prefix}.{seg}")
    }
}

/// A key as TOML would write it: bare when possible, else a quoted string.
pub fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        toml::Value::String(key.to_string()).to_string()
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a value inside a document: `network.ports[1]`, `env.FOO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    pub(crate) fn key(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }
    pub(crate) fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    pub(crate) fn of(keys: &[&str]) -> KeyPath {
        KeyPath(keys.iter().map(|k| Seg::Key(k.to_string())).collect())
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => out = join_key(&out, k),
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        f.write_str(&out)
    }
}
