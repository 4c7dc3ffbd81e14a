//! `airlock init`: write a commented starter `airlock.toml`.

use airlock_model::config::{INIT_TEMPLATE, PROJECT_FILE};
use anyhow::{bail, Context};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Writes the starter file into `dir` and returns its path. An existing file is kept unless
/// `force`; with `force` it is replaced atomically (a symlink in its place is replaced, not
/// followed).
pub fn run_init(dir: &Path, force: bool) -> anyhow::Result<PathBuf> {
    let path = dir.join(PROJECT_FILE);
    if !force {
        return match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(INIT_TEMPLATE.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(path)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                bail!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                )
            }
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        };
    }
    let tmp = dir.join(format!(".{PROJECT_FILE}.{}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(INIT_TEMPLATE.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use airlock_model::config::{load, Effective, LoadOptions};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("airlock-init-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn writes_a_file_that_loads() {
        let t = TempDir::new("loads");
        let path = run_init(&t.0, false).unwrap();
        assert_eq!(path, t.0.join("airlock.toml"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), INIT_TEMPLATE);
        let opts = LoadOptions {
            no_user_config: true,
            ..LoadOptions::new(&t.0)
        };
        assert_eq!(load(&opts).unwrap().effective, Effective::default());
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let t = TempDir::new("force");
        let path = t.0.join("airlock.toml");
        std::fs::write(&path, "# mine\n").unwrap();
        let err = run_init(&t.0, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
        assert_eq!(run_init(&t.0, true).unwrap(), path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), INIT_TEMPLATE);
        let leftovers: Vec<_> = std::fs::read_dir(&t.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("airlock.toml")]);
    }

    #[test]
    fn force_replaces_a_symlink_instead_of_following_it() {
        let t = TempDir::new("symlink");
        let victim = t.0.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, t.0.join("airlock.toml")).unwrap();
        assert!(run_init(&t.0, false).is_err());
        run_init(&t.0, true).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(t.0.join("airlock.toml")).unwrap(),
            INIT_TEMPLATE
        );
    }

    #[test]
    fn missing_directory_is_an_error() {
        let t = TempDir::new("missing");
        assert!(run_init(&t.0.join("nope"), false).is_err());
        assert!(run_init(&t.0.join("nope"), true).is_err());
    }
}
