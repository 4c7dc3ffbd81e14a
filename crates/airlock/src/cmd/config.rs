//! `airlock config`: print the resolved configuration and where each value came from.
//!
//! Human output is TOML (loadable as an `airlock.toml`) with a `# from …` comment per value;
//! `--json` prints `{ "config": {...}, "origins": {"key": ["project:/p/airlock.toml", ...]},
//! "files": [...], "project_dir": ... }`. Secrets appear as their source, never a value.

use airlock_model::config::{join_key, quote_key, Effective, Origins, Resolved};
use serde::Serialize;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Top-level sections in the order a person reads them (unknown future keys go last).
const ORDER: &[&str] = &[
    "plugins",
    "sandbox",
    "resources",
    "network",
    "workspace",
    "mounts",
    "env",
    "secrets",
    "home_files",
    "agent",
    "hooks",
    "setup",
    "images",
];

/// `image = "auto"`: what it picks here for a command-less start (a shell, a named sandbox),
/// from the project's files; a command picks by its own name first.
fn auto_image(r: &Resolved) -> Option<airlock_model::runtime::Detected> {
    if r.effective.sandbox.image != airlock_model::runtime::AUTO {
        return None;
    }
    let dir = r
        .project_dir
        .clone()
        .or_else(|| std::env::current_dir().ok())?;
    let files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    Some(airlock_model::runtime::detect(
        &[],
        &files,
        &r.effective.images.runtimes,
    ))
}

/// `trusted`: whether the project file (if any) is trusted as it is now.
pub fn run_config(
    resolved: &Resolved,
    trusted: bool,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    if json {
        render_json(resolved, trusted, out)
    } else {
        render_human(resolved, trusted, out)
    }
}

#[derive(Serialize)]
struct ProjectView<'a> {
    file: &'a Path,
    trusted: bool,
    /// What the project file widens (applied only while trusted).
    widening: &'a [airlock_model::config::Widening],
}

#[derive(Serialize)]
struct JsonView<'a> {
    config: &'a Effective,
    origins: &'a Origins,
    files: &'a [PathBuf],
    project_dir: Option<&'a Path>,
    project: Option<ProjectView<'a>>,
    /// `image = "auto"`: the image a command-less start picks in this project, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    image_auto: Option<serde_json::Value>,
}

fn render_json(r: &Resolved, trusted: bool, out: &mut dyn Write) -> io::Result<()> {
    let view = JsonView {
        config: &r.effective,
        origins: &r.origins,
        files: &r.files,
        project_dir: r.project_dir.as_deref(),
        project: r.project.as_ref().map(|p| ProjectView {
            file: &p.file,
            trusted,
            widening: &p.widening,
        }),
        image_auto: auto_image(r)
            .map(|d| serde_json::json!({"image": d.image, "reason": d.reason})),
    };
    serde_json::to_writer_pretty(&mut *out, &view).map_err(io::Error::from)?;
    writeln!(out)
}

fn render_human(r: &Resolved, trusted: bool, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "# Resolved airlock configuration: defaults < user < plugins < project < command line."
    )?;
    if r.files.is_empty() {
        writeln!(out, "# No config files were found.")?;
    } else {
        writeln!(out, "# Files read, lowest precedence first:")?;
        for f in &r.files {
            writeln!(out, "#   {}", f.display())?;
        }
    }
    if let Some(p) = &r.project {
        let state = match (trusted, p.widening.is_empty()) {
            (true, _) => "trusted",
            (false, true) => "untrusted (it only narrows the policy: applies anyway)",
            (false, false) => "UNTRUSTED: run, create and up refuse it until `airlock trust`",
        };
        writeln!(out, "# Project file {}: {state}", p.file.display())?;
        for w in &p.widening {
            writeln!(out, "#   widens {:<18} {}", w.key, w.detail)?;
        }
    }
    if let Some(d) = auto_image(r) {
        writeln!(
            out,
            "# sandbox.image = \"auto\": here {} ({}); a command picks by its name first ([images] runtimes, README \"Images\")",
            d.image, d.reason
        )?;
    }
    let table = Table::try_from(r.effective.to_layer()).map_err(io::Error::other)?;
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort_by_key(|k| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    Printer {
        out,
        origins: &r.origins,
    }
    .table("", &table, &keys)
}

struct Printer<'a> {
    out: &'a mut dyn Write,
    origins: &'a Origins,
}

impl Printer<'_> {
    /// Prints `keys` of `table` (at dotted `path`): plain values first under a `[path]`
    /// header, then sub-tables and arrays of tables in order.
    fn table(&mut self, path: &str, table: &Table, keys: &[&String]) -> io::Result<()> {
        let mut header_done = path.is_empty();
        let mut nested = Vec::new();
        for key in keys {
            let Some(value) = table.get(key.as_str()) else {
                continue;
            };
            let at = join_key(path, key);
            if self.is_section(&at, value) {
                nested.push((at, value));
                continue;
            }
            if !header_done {
                writeln!(self.out, "\n[{path}]")?;
                header_done = true;
            }
            writeln!(self.out, "{} = {}{}", quote_key(key), value, self.from(&at))?;
        }
        for (at, value) in nested {
            match value {
                Value::Table(t) => {
                    let keys: Vec<&String> = t.keys().collect();
                    self.table(&at, t, &keys)?;
                }
                Value::Array(items) => {
                    for item in items.iter().filter_map(Value::as_table) {
                        writeln!(self.out, "\n[[{at}]]{}", self.from(&at))?;
                        for (k, v) in item {
                            writeln!(self.out, "{} = {v}", quote_key(k))?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A table printed under its own header (rather than inline), or an array of tables.
    /// Tables with their own provenance entry (a secret, the harness) are single values.
    fn is_section(&self, at: &str, value: &Value) -> bool {
        match value {
            Value::Table(_) => !self.origins.contains_key(at),
            Value::Array(items) => !items.is_empty() && items.iter().all(Value::is_table),
            _ => false,
        }
    }

    fn from(&self, at: &str) -> String {
        match self.origins.get(at) {
            Some(sources) if !sources.is_empty() => {
                let names: Vec<String> = sources.iter().map(ToString::to_string).collect();
                format!("  # from {}", names.join(", "))
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use airlock_model::config::{
        merge_layers, AgentLayer, Harness, Layer, MountLayer, NetworkLayer, SecretSource, Source,
    };
    use airlock_model::policy::Profile;

    fn resolved() -> Resolved {
        let project = Source::Project(PathBuf::from("/p/airlock.toml"));
        let user = Source::User(PathBuf::from("/home/u/.config/airlock/config.toml"));
        let u = Layer {
            network: Some(NetworkLayer {
                domains: Some(vec!["a.org".into()]),
                ..Default::default()
            }),
            env: Some([("RUST_LOG".to_string(), "info".to_string())].into()),
            ..Default::default()
        };
        let p = Layer {
            sandbox: Some(airlock_model::config::SandboxLayer {
                profile: Some(Profile::Restrictive),
                ..Default::default()
            }),
            network: Some(NetworkLayer {
                domains: Some(vec!["b.org".into()]),
                ..Default::default()
            }),
            mounts: Some(vec![MountLayer {
                source: "/data".into(),
                target: "/data".into(),
                readonly: None,
            }]),
            secrets: Some(
                [(
                    "TOKEN".to_string(),
                    SecretSource::FromEnv("HOST_TOKEN".into()).into(),
                )]
                .into(),
            ),
            home_files: Some(
                [(
                    ".claude/CLAUDE.md".to_string(),
                    airlock_model::config::HomeFileLayer {
                        source: Some("/n.md".into()),
                        mode: None,
                    },
                )]
                .into(),
            ),
            agent: Some(AgentLayer {
                harness: Some(Harness::Command(vec!["my-agent".into(), "--yes".into()])),
                grace: Some("45s".parse().unwrap()),
                compatibility_mode: None,
            }),
            ..Default::default()
        };
        let (effective, origins) = merge_layers([(user.clone(), u), (project.clone(), p)]).unwrap();
        Resolved {
            effective,
            origins,
            project_dir: Some(PathBuf::from("/p")),
            files: vec![
                PathBuf::from("/home/u/.config/airlock/config.toml"),
                PathBuf::from("/p/airlock.toml"),
            ],
            project: None,
        }
    }

    #[test]
    fn human_output_is_annotated_toml() {
        let mut out = Vec::new();
        run_config(&resolved(), false, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = r#"# Resolved airlock configuration: defaults < user < plugins < project < command line.
# Files read, lowest precedence first:
#   /home/u/.config/airlock/config.toml
#   /p/airlock.toml

[sandbox]
backend = "container"  # from default
image = "host"  # from default
profile = "restrictive"  # from project:/p/airlock.toml

[network]
domains = ["a.org", "b.org"]  # from user:/home/u/.config/airlock/config.toml, project:/p/airlock.toml
ports = [443, 80]  # from default

[[mounts]]  # from project:/p/airlock.toml
readonly = true
source = "/data"
target = "/data"

[env]
RUST_LOG = "info"  # from user:/home/u/.config/airlock/config.toml

[secrets]
TOKEN = { from_env = "HOST_TOKEN" }  # from project:/p/airlock.toml

[home_files.".claude/CLAUDE.md"]
mode = "immutable"  # from default
source = "/n.md"  # from project:/p/airlock.toml

[agent]
grace = "45s"  # from project:/p/airlock.toml
harness = { command = ["my-agent", "--yes"] }  # from project:/p/airlock.toml
"#;
        assert_eq!(text, expected);
        // The printed document is itself a valid config (comments aside).
        let back: Layer = toml::from_str(&text).unwrap();
        assert_eq!(back, resolved().effective.to_layer());
    }

    #[test]
    fn json_output_has_config_origins_and_files() {
        let mut out = Vec::new();
        run_config(&resolved(), false, true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["config"]["sandbox"]["profile"], "restrictive");
        assert_eq!(
            v["config"]["network"]["domains"],
            serde_json::json!(["a.org", "b.org"])
        );
        assert_eq!(
            v["config"]["secrets"]["TOKEN"],
            serde_json::json!({ "from_env": "HOST_TOKEN" })
        );
        assert_eq!(
            v["origins"]["network.domains"],
            serde_json::json!([
                "user:/home/u/.config/airlock/config.toml",
                "project:/p/airlock.toml"
            ])
        );
        assert_eq!(
            v["origins"]["sandbox.backend"],
            serde_json::json!(["default"])
        );
        assert_eq!(
            v["files"],
            serde_json::json!(["/home/u/.config/airlock/config.toml", "/p/airlock.toml"])
        );
        assert_eq!(v["project_dir"], "/p");
        let config: Effective = serde_json::from_value(v["config"].clone()).unwrap();
        assert_eq!(config, resolved().effective);
    }
}
