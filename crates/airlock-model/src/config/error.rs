//! Everything that can go wrong while loading configuration. Each error names the key path
//! and the source (file path with line when known, built-in plugin, or command line).

use super::origin::Source;
use std::fmt;
use std::path::PathBuf;

/// Where in the configuration an error was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: Source,
    /// 1-based line in the source file, when the source is a file and the key was found in it.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source.describe())?;
        match self.line {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config or plugin file that exists (or was named explicitly) cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("TOML syntax error in {}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key the schema does not have.
    #[error("unknown key `{key}` in {location}{}", did_you_mean(suggestion))]
    UnknownKey {
        key: String,
        location: Location,
        suggestion: Option<String>,
    },
    /// A required key is absent (e.g. `mounts[0].target`).
    #[error("missing key `{key}` in {location}")]
    MissingKey { key: String, location: Location },
    /// A key with a value of the wrong type or outside its allowed range.
    #[error("invalid value for `{key}` in {location}: {message}")]
    InvalidValue {
        key: String,
        location: Location,
        message: String,
    },
    /// A `plugins` entry that is neither a built-in name nor a path.
    #[error(
        "unknown plugin `{name}` in {location}: built-in plugins are {}; a plugin file is named by a path such as ./{name}.toml",
        super::plugins::BUILTIN_NAMES.join(", ")
    )]
    UnknownPlugin { name: String, location: Location },
}

impl ConfigError {
    /// Where the error is (None: a file that could not be read or parsed at all).
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
            ConfigError::UnknownKey { location, .. }
            | ConfigError::MissingKey { location, .. }
            | ConfigError::InvalidValue { location, .. }
            | ConfigError::UnknownPlugin { location, .. } => Some(location),
        }
    }
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// The closest candidate to `got` when it is plausibly a typo of it.
pub(crate) fn suggest<'a>(
    got: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(got, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < got.len().max(c.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_matches_only() {
        assert_eq!(
            suggest("domain", ["mode", "domains", "ports"]),
            Some("domains".into())
        );
        assert_eq!(
            suggest("memroy", ["cpus", "memory", "pids", "disk"]),
            Some("memory".into())
        );
        assert_eq!(suggest("zzzzzz", ["cpus", "memory"]), None);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
