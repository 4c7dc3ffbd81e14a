//! One source's text → a checked, path-resolved [`Layer`], with errors that name the dotted
//! key path, the file and the line.
//!
//! The text is parsed twice: once into toml's spanned document tree (syntax errors, and the
//! map from byte offsets back to key paths), once into the typed [`Layer`] (schema errors).

use super::error::{suggest, ConfigError, Location};
use super::origin::{KeyPath, Seg, Source};
use super::paths::{resolve_layer, PathCtx};
use super::plugins::{is_builtin, is_plugin_path};
use super::schema::Layer;
use super::validate::validate;
use std::cmp::Reverse;
use std::ops::Range;
use std::path::PathBuf;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A parsed document kept for mapping key paths to lines.
struct Doc<'a> {
    text: &'a str,
    table: DeTable<'a>,
}

/// Parses, checks and resolves one TOML source.
pub(crate) fn parse_layer(
    text: &str,
    source: &Source,
    ctx: &PathCtx,
) -> Result<Layer, ConfigError> {
    let table = DeTable::parse(text).map_err(|e| syntax_error(&e, text, source))?;
    let doc = Doc {
        text,
        table: table.into_inner(),
    };
    let mut layer: Layer = toml::from_str(text).map_err(|e| schema_error(&e, &doc, source))?;
    prepare_with(&mut layer, ctx, source, Some(&doc))?;
    Ok(layer)
}

/// Checks and resolves a layer that did not come from text (the command line).
pub(crate) fn prepare(
    layer: &mut Layer,
    ctx: &PathCtx,
    source: &Source,
) -> Result<(), ConfigError> {
    prepare_with(layer, ctx, source, None)
}

fn prepare_with(
    layer: &mut Layer,
    ctx: &PathCtx,
    source: &Source,
    doc: Option<&Doc>,
) -> Result<(), ConfigError> {
    let location = |key: &KeyPath| Location {
        source: source.clone(),
        line: doc.and_then(|d| d.line_of(key)),
    };
    validate(layer)
        .and_then(|()| resolve_layer(layer, ctx))
        .map_err(|inv| ConfigError::InvalidValue {
            location: location(&inv.key),
            key: inv.key.to_string(),
            message: inv.message,
        })?;
    for (i, name) in layer.plugins.iter().flatten().enumerate() {
        if !is_plugin_path(name) && !is_builtin(name) {
            let key = KeyPath::of(&["plugins"]).index(i);
            return Err(ConfigError::UnknownPlugin {
                name: name.clone(),
                location: location(&key),
            });
        }
    }
    Ok(())
}

fn syntax_error(e: &toml::de::Error, text: &str, source: &Source) -> ConfigError {
    let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
    let path = source
        .file()
        .map_or_else(|| PathBuf::from(source.describe()), PathBuf::from);
    ConfigError::Syntax {
        path,
        line,
        column,
        message: e.message().trim().to_string(),
    }
}

fn schema_error(e: &toml::de::Error, doc: &Doc, source: &Source) -> ConfigError {
    let msg = e.message().trim();
    let at = e.span().map(|s| s.start);
    let path = at.and_then(|off| doc.locate(off)).unwrap_or_default();
    let location = Location {
        source: source.clone(),
        line: at.map(|off| line_col(doc.text, off).0),
    };
    let (name, rest) = first_backticked(msg).unwrap_or_default();
    if msg.starts_with("unknown field `") {
        let key = if path.0.last() == Some(&Seg::Key(name.to_string())) {
            path
        } else {
            path.key(name)
        };
        let candidates: Vec<&str> = backticked(rest).collect();
        let suggestion = suggest(name, candidates);
        ConfigError::UnknownKey {
            key: key.to_string(),
            location,
            suggestion,
        }
    } else if msg.starts_with("missing field `") {
        ConfigError::MissingKey {
            key: path.key(name).to_string(),
            location,
        }
    } else {
        let key = if path.0.is_empty() {
            "(top level)".to_string()
        } else {
            path.to_string()
        };
        ConfigError::InvalidValue {
            key,
            location,
            message: msg.to_string(),
        }
    }
}

/// The first `quoted` word of a serde message and the text after it.
fn first_backticked(s: &str) -> Option<(&str, &str)> {
    let (_, after) = s.split_once('`')?;
    after.split_once('`')
}

fn backticked(mut s: &str) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        let (word, rest) = first_backticked(s)?;
        s = rest;
        Some(word)
    })
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Doc<'_> {
    /// The key path of the node an error offset points at: a key whose span contains it,
    /// else the smallest value containing it.
    fn locate(&self, offset: usize) -> Option<KeyPath> {
        // Best = a key over a value, then the narrowest span, then the deepest node.
        let mut best: Option<((bool, Reverse<usize>), KeyPath)> = None;
        let mut consider = |is_key: bool, span: Range<usize>, path: &KeyPath| {
            let fits = span.contains(&offset) || (span.is_empty() && span.start == offset);
            let rank = (is_key, Reverse(span.len()));
            let better = match &best {
                None => true,
                Some((r, _)) => rank >= *r,
            };
            if fits && better {
                best = Some((rank, path.clone()));
            }
        };
        walk_table(&self.table, &KeyPath::default(), &mut consider);
        best.map(|(_, p)| p)
    }

    /// The line where `key` (or its deepest existing ancestor) is written.
    fn line_of(&self, key: &KeyPath) -> Option<usize> {
        let mut span = None;
        let mut table = Some(&self.table);
        let mut value: Option<&Spanned<DeValue>> = None;
        for seg in &key.0 {
            let next = match (seg, table, value.map(|v| v.get_ref())) {
                (Seg::Key(k), Some(t), _) => t
                    .iter()
                    .find(|(tk, _)| tk.get_ref() == k)
                    .map(|(tk, v)| (tk.span(), v)),
                (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i).map(|v| (v.span(), v)),
                _ => None,
            };
            let Some((s, v)) = next else { break };
            span = Some(s);
            value = Some(v);
            table = match v.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        span.map(|s| line_col(self.text, s.start).0)
    }
}

type Visit<'f> = dyn FnMut(bool, Range<usize>, &KeyPath) + 'f;

fn walk_table(t: &DeTable, at: &KeyPath, f: &mut Visit) {
    for (k, v) in t {
        let here = at.key(k.get_ref());
        f(true, k.span(), &here);
        walk_value(v, &here, f);
    }
}

fn walk_value(v: &Spanned<DeValue>, here: &KeyPath, f: &mut Visit) {
    f(false, v.span(), here);
    match v.get_ref() {
        DeValue::Table(t) => walk_table(t, here, f),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                walk_value(item, &here.index(i), f);
            }
        }
        _ => {}
    }
}
