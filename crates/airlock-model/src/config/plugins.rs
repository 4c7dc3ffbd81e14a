//! Built-in plugins: TOML fragments compiled into the binary, parsed exactly like plugin files.

/// Built-in plugin names and their TOML text.
const BUILTINS: &[(&str, &str)] = &[
    ("claude-code", include_str!("builtin/claude-code.toml")),
    ("codex", include_str!("builtin/codex.toml")),
    ("gemini", include_str!("builtin/gemini.toml")),
    ("rust", include_str!("builtin/rust.toml")),
    ("node", include_str!("builtin/node.toml")),
    ("python", include_str!("builtin/python.toml")),
    ("github", include_str!("builtin/github.toml")),
];

/// The names accepted in `plugins = [...]` without a path.
pub const BUILTIN_NAMES: &[&str] = &[
    "claude-code",
    "codex",
    "gemini",
    "rust",
    "node",
    "python",
    "github",
];

/// The TOML text of a built-in plugin.
pub fn builtin_plugin(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

pub(crate) fn is_builtin(name: &str) -> bool {
    builtin_plugin(name).is_some()
}

/// A `plugins` entry names a file (rather than a built-in) when it looks like a path:
/// it contains `/`, starts with `~` or ends in `.toml`.
pub fn is_plugin_path(name: &str) -> bool {
    name.contains('/') || name.starts_with('~') || name.ends_with(".toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_text() {
        let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, BUILTIN_NAMES);
        assert!(BUILTIN_NAMES.iter().all(|n| !is_plugin_path(n)));
        assert!(
            is_plugin_path("./tools/x.toml") && is_plugin_path("x.toml") && is_plugin_path("~/p")
        );
    }
}
