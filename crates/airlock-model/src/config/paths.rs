//! Host paths in a layer become absolute: `~/x` expands to `$HOME/x`, relative paths resolve
//! against the directory of the file that wrote them (the working directory for the CLI).

use super::origin::KeyPath;
use super::plugins::is_plugin_path;
use super::schema::{Layer, SecretSource};
use super::validate::Invalid;
use std::path::{Component, Path, PathBuf};

/// What relative and `~/` paths of one layer are resolved against.
pub(crate) struct PathCtx<'a> {
    pub base: &'a Path,
    pub home: Option<&'a Path>,
}

impl PathCtx<'_> {
    pub(crate) fn resolve(&self, p: &Path) -> Result<PathBuf, String> {
        let mut comps = p.components();
        let joined = match comps.next() {
            Some(Component::Normal(first)) if first == "~" => match self.home {
                Some(home) => home.join(comps.as_path()),
                None => {
                    return Err(
                        "cannot expand `~`: the home directory is unknown (HOME is not set)".into(),
                    )
                }
            },
            Some(Component::Normal(first)) if first.as_encoded_bytes().starts_with(b"~") => {
                return Err(format!(
                    "{:?}: only `~/` (your own home) is expanded",
                    p.display().to_string()
                ))
            }
            _ => self.base.join(p),
        };
        // Drop `.` components; `..` is kept because symlinks make removing it unsound.
        Ok(joined
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect())
    }

    fn resolve_at(&self, key: KeyPath, p: &mut PathBuf) -> Result<(), Invalid> {
        *p = self
            .resolve(p)
            .map_err(|message| Invalid { key, message })?;
        Ok(())
    }
}

pub(crate) fn resolve_layer(layer: &mut Layer, ctx: &PathCtx) -> Result<(), Invalid> {
    for (i, name) in layer.plugins.iter_mut().flatten().enumerate() {
        if is_plugin_path(name) {
            let key = KeyPath::of(&["plugins"]).index(i);
            let abs = ctx.resolve(Path::new(name.as_str()));
            let abs = abs.and_then(|p| {
                p.to_str()
                    .map(str::to_string)
                    .ok_or_else(|| "the resolved path is not UTF-8".to_string())
            });
            *name = abs.map_err(|message| Invalid { key, message })?;
        }
    }
    if let Some(repos) = layer.workspace.as_mut().and_then(|w| w.repos.as_mut()) {
        for (i, r) in repos.iter_mut().enumerate() {
            ctx.resolve_at(
                KeyPath::of(&["workspace", "repos"]).index(i).key("source"),
                &mut r.source,
            )?;
        }
    }
    for (i, m) in layer.mounts.iter_mut().flatten().enumerate() {
        ctx.resolve_at(
            KeyPath::of(&["mounts"]).index(i).key("source"),
            &mut m.source,
        )?;
    }
    for (k, s) in layer.secrets.iter_mut().flatten() {
        if let SecretSource::FromFile(p) = &mut s.source {
            ctx.resolve_at(KeyPath::of(&["secrets"]).key(k).key("from_file"), p)?;
        }
    }
    for (i, s) in layer.setup.iter_mut().flatten().enumerate() {
        ctx.resolve_at(KeyPath::of(&["setup"]).index(i), s)?;
    }
    for (k, h) in layer.home_files.iter_mut().flatten() {
        if let Some(src) = &mut h.source {
            ctx.resolve_at(KeyPath::of(&["home_files"]).key(k).key("source"), src)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_rules() {
        let ctx = PathCtx {
            base: Path::new("/p/sub"),
            home: Some(Path::new("/home/u")),
        };
        let r = |s: &str| ctx.resolve(Path::new(s));
        assert_eq!(r("./data"), Ok(PathBuf::from("/p/sub/data")));
        assert_eq!(r("../x/./y"), Ok(PathBuf::from("/p/sub/../x/y")));
        assert_eq!(r("/abs"), Ok(PathBuf::from("/abs")));
        assert_eq!(r("~"), Ok(PathBuf::from("/home/u")));
        assert_eq!(r("~/notes/a.md"), Ok(PathBuf::from("/home/u/notes/a.md")));
        assert!(r("~bob/x").is_err());
        let homeless = PathCtx {
            base: Path::new("/p"),
            home: None,
        };
        assert!(homeless.resolve(Path::new("~/x")).is_err());
        assert_eq!(
            homeless.resolve(Path::new("x~")),
            Ok(PathBuf::from("/p/x~"))
        );
    }
}
