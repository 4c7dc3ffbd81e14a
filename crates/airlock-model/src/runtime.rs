//! `image = "auto"`: the runtime image for a command, picked from the command's name and the
//! project's files. Pure: the caller lists which project files exist. The table is documented
//! in the README ("Images") and overridable with `[images] runtimes` (`python3 = "…"` for a
//! command, `"file:Cargo.toml" = "…"` for a project file; `"default"` for the fallback).

use std::collections::BTreeMap;

/// What `image = "auto"` means.
pub const AUTO: &str = "auto";

const PYTHON: &str = "python:3.12-alpine";
const NODE: &str = "node:22-alpine";
const RUST: &str = "rust:1-alpine";
const GO: &str = "golang:1.23-alpine";
const RUBY: &str = "ruby:3.3-alpine";
const JAVA: &str = "eclipse-temurin:21-jdk";
const MAVEN: &str = "maven:3-eclipse-temurin-21";
const GRADLE: &str = "gradle:8-jdk21";
const PHP: &str = "php:8.3-cli-alpine";
const COMPOSER: &str = "composer:2";
const GCC: &str = "gcc:14";
const DOTNET: &str = "mcr.microsoft.com/dotnet/sdk:8.0";
const TERRAFORM: &str = "hashicorp/terraform:1.9";
const LUA: &str = "nickblah/lua:5.4-alpine";
const BUN: &str = "oven/bun:1-alpine";
const SHELL: &str = "alpine:3.20";
const BASH: &str = "bash:5";

/// Commands (by file name) and their images.
pub const BUILTIN_COMMANDS: &[(&str, &str)] = &[
    ("python", PYTHON),
    ("python3", PYTHON),
    ("pip", PYTHON),
    ("pip3", PYTHON),
    ("pytest", PYTHON),
    ("uv", "ghcr.io/astral-sh/uv:python3.12-alpine"),
    ("node", NODE),
    ("npm", NODE),
    ("npx", NODE),
    ("pnpm", NODE),
    ("yarn", NODE),
    ("bun", BUN),
    ("cargo", RUST),
    ("rustc", RUST),
    ("go", GO),
    ("ruby", RUBY),
    ("bundle", RUBY),
    ("gem", RUBY),
    ("rake", RUBY),
    ("java", JAVA),
    ("javac", JAVA),
    ("mvn", MAVEN),
    ("gradle", GRADLE),
    ("php", PHP),
    ("composer", COMPOSER),
    ("gcc", GCC),
    ("g++", GCC),
    ("cc", GCC),
    ("make", GCC),
    ("cmake", GCC),
    ("dotnet", DOTNET),
    ("terraform", TERRAFORM),
    ("lua", LUA),
    ("sh", SHELL),
    ("ash", SHELL),
    ("bash", BASH),
];

/// Project files, in the order they are looked for, and their images.
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    ("pyproject.toml", PYTHON),
    ("requirements.txt", PYTHON),
    ("setup.py", PYTHON),
    ("bun.lockb", BUN),
    ("package.json", NODE),
    ("Cargo.toml", RUST),
    ("go.mod", GO),
    ("Gemfile", RUBY),
    ("pom.xml", MAVEN),
    ("build.gradle", GRADLE),
    ("build.gradle.kts", GRADLE),
    ("composer.json", COMPOSER),
    ("CMakeLists.txt", GCC),
    ("Makefile", GCC),
    ("global.json", DOTNET),
    ("main.tf", TERRAFORM),
];

/// Commands that say nothing about the runtime on their own: a project file decides first.
const SHELLS: &[&str] = &["sh", "ash", "bash", "dash", "zsh", "env"];

/// The pick and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub image: String,
    pub reason: String,
}

/// The effective table: the built-in entries with `[images] runtimes` on top.
pub struct Table<'a> {
    overrides: &'a BTreeMap<String, String>,
}

impl<'a> Table<'a> {
    pub fn new(overrides: &'a BTreeMap<String, String>) -> Table<'a> {
        Table { overrides }
    }
    pub fn command(&self, name: &str) -> Option<String> {
        self.overrides.get(name).cloned().or_else(|| {
            BUILTIN_COMMANDS
                .iter()
                .find(|(c, _)| *c == name)
                .map(|(_, i)| i.to_string())
        })
    }
    pub fn file(&self, name: &str) -> Option<String> {
        self.overrides
            .get(&format!("file:{name}"))
            .cloned()
            .or_else(|| {
                BUILTIN_FILES
                    .iter()
                    .find(|(f, _)| *f == name)
                    .map(|(_, i)| i.to_string())
            })
    }
    /// Project files in lookup order: overrides first (sorted), then the built-in order.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .overrides
            .keys()
            .filter_map(|k| k.strip_prefix("file:").map(str::to_string))
            .collect();
        for (f, _) in BUILTIN_FILES {
            if !v.iter().any(|x| x == f) {
                v.push(f.to_string());
            }
        }
        v
    }
}

/// The program a command line runs: argv[0]'s file name, looking through `env [VAR=…]` and
/// `sh -c 'PROGRAM …'`.
pub fn program(argv: &[String]) -> Option<String> {
    let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
    for _ in 0..4 {
        let first = *args.first()?;
        let name = first.rsplit('/').next().unwrap_or(first);
        if name == "env" {
            args.remove(0);
            while args
                .first()
                .is_some_and(|a| a.contains('=') || a.starts_with('-'))
            {
                args.remove(0);
            }
            continue;
        }
        if SHELLS.contains(&name) && args.get(1) == Some(&"-c") {
            let script = args.get(2)?;
            let word = script.split_whitespace().find(|w| !w.contains('='))?;
            return Some(word.rsplit('/').next().unwrap_or(word).to_string());
        }
        return Some(name.to_string());
    }
    None
}

/// Pick the image for `argv` in a project whose top-level file names are `project_files`.
/// A command with an image of its own wins; a shell (or nothing known) defers to the project's
/// files, then to the shell's image, then to `[images] runtimes.default`, else `host`.
pub fn detect(
    argv: &[String],
    project_files: &[String],
    overrides: &BTreeMap<String, String>,
) -> Detected {
    let table = Table::new(overrides);
    let prog = program(argv);
    let by_command = prog
        .as_deref()
        .filter(|p| !SHELLS.contains(p))
        .and_then(|p| table.command(p).map(|i| (p.to_string(), i)));
    if let Some((p, image)) = by_command {
        return Detected {
            image,
            reason: format!("the command `{p}`"),
        };
    }
    for f in table.files() {
        if project_files.contains(&f) {
            if let Some(image) = table.file(&f) {
                return Detected {
                    image,
                    reason: format!("the project file {f}"),
                };
            }
        }
    }
    let first = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string());
    if let Some((p, image)) = [prog, first]
        .into_iter()
        .flatten()
        .find_map(|p| table.command(&p).map(|i| (p, i)))
    {
        return Detected {
            image,
            reason: format!("the command `{p}`"),
        };
    }
    match overrides.get("default") {
        Some(image) => Detected {
            image: image.clone(),
            reason: "[images] runtimes.default".into(),
        },
        None => Detected {
            image: "host".into(),
            reason: "nothing in the table matched the command or the project".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }
    fn files(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn commands_pick_their_runtime() {
        let none = BTreeMap::new();
        let table = [
            ("python3 x.py", PYTHON),
            ("/usr/bin/pip install -r r.txt", PYTHON),
            ("pytest -q", PYTHON),
            ("uv run x", "ghcr.io/astral-sh/uv:python3.12-alpine"),
            ("node index.js", NODE),
            ("npm test", NODE),
            ("npx tsc", NODE),
            ("pnpm i", NODE),
            ("bun test", BUN),
            ("cargo test", RUST),
            ("go test ./...", GO),
            ("ruby x.rb", RUBY),
            ("bundle exec rake", RUBY),
            ("java -jar x.jar", JAVA),
            ("mvn package", MAVEN),
            ("gradle build", GRADLE),
            ("php x.php", PHP),
            ("composer install", COMPOSER),
            ("gcc -o x x.c", GCC),
            ("make", GCC),
            ("cmake .", GCC),
            ("dotnet test", DOTNET),
            ("terraform plan", TERRAFORM),
            ("lua x.lua", LUA),
            ("sh -c true", SHELL),
            ("bash", BASH),
            ("env A=1 python3 x.py", PYTHON),
            ("sh -c npm_test=1", SHELL),
            ("sh -c true", SHELL),
        ];
        for (cmd, want) in table {
            let d = detect(&argv(cmd), &[], &none);
            assert_eq!(d.image, want, "{cmd}");
        }
        let d = detect(
            &["sh".into(), "-c".into(), "cd x && npm test".into()],
            &[],
            &none,
        );
        assert_eq!(d.image, SHELL, "the first word of the script is `cd`");
        let d = detect(
            &["sh".into(), "-c".into(), "python3 -m pytest".into()],
            &[],
            &none,
        );
        assert_eq!(
            (d.image.as_str(), d.reason.as_str()),
            (PYTHON, "the command `python3`")
        );
    }

    #[test]
    fn project_files_decide_for_shells_and_unknown_commands() {
        let none = BTreeMap::new();
        let table = [
            (&["pyproject.toml"][..], PYTHON),
            (&["README.md", "package.json"][..], NODE),
            (&["bun.lockb", "package.json"][..], BUN),
            (&["Cargo.toml"][..], RUST),
            (&["go.mod"][..], GO),
            (&["Gemfile"][..], RUBY),
            (&["pom.xml"][..], MAVEN),
            (&["build.gradle.kts"][..], GRADLE),
            (&["composer.json"][..], COMPOSER),
            (&["CMakeLists.txt"][..], GCC),
            (&["main.tf"][..], TERRAFORM),
        ];
        for (fs, want) in table {
            assert_eq!(detect(&argv("sh"), &files(fs), &none).image, want, "{fs:?}");
            let d = detect(&argv("./run-tests"), &files(fs), &none);
            assert_eq!(d.image, want, "{fs:?}");
            assert!(d.reason.starts_with("the project file"), "{}", d.reason);
        }
        // The command wins over the project.
        assert_eq!(
            detect(&argv("node x.js"), &files(&["Cargo.toml"]), &none).image,
            NODE
        );
        // Nothing known: the host.
        let d = detect(&argv("./tool"), &files(&["notes.txt"]), &none);
        assert_eq!(d.image, "host");
    }

    #[test]
    fn the_table_is_overridable() {
        let mut o = BTreeMap::new();
        o.insert("python3".to_string(), "python:3.11-slim".to_string());
        o.insert("file:Cargo.toml".to_string(), "rust:1.80".to_string());
        o.insert(
            "file:deno.json".to_string(),
            "denoland/deno:alpine".to_string(),
        );
        o.insert("mytool".to_string(), "example.com/mytool:1".to_string());
        o.insert("default".to_string(), "alpine:3.20".to_string());
        assert_eq!(
            detect(&argv("python3 x"), &[], &o).image,
            "python:3.11-slim"
        );
        assert_eq!(detect(&argv("pip x"), &[], &o).image, PYTHON);
        assert_eq!(
            detect(&argv("sh"), &files(&["Cargo.toml"]), &o).image,
            "rust:1.80"
        );
        assert_eq!(
            detect(&argv("./x"), &files(&["deno.json"]), &o).image,
            "denoland/deno:alpine"
        );
        assert_eq!(
            detect(&argv("mytool"), &[], &o).image,
            "example.com/mytool:1"
        );
        let d = detect(&argv("./x"), &[], &o);
        assert_eq!(
            (d.image.as_str(), d.reason.as_str()),
            ("alpine:3.20", "[images] runtimes.default")
        );
    }
}
