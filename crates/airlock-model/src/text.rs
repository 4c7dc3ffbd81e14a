//! Text the sandbox chose (paths, report texts, patch lines), made safe to print on the user's
//! terminal.

/// A path (or any text) the sandbox chose, made safe to print on the user's terminal: control
/// characters (escape sequences, newlines that would forge extra lines) shown as `\xNN`, and
/// the bidirectional overrides and isolates that reorder what a reader sees ("Trojan Source")
/// as `\u{NNNN}`.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    shown_but(text, &[])
}

/// [`shown`], leaving the characters in `keep` as they are (a patch line keeps its tabs).
pub fn shown_but<'a>(text: &'a str, keep: &[char]) -> std::borrow::Cow<'a, str> {
    let hidden = |c: char| (c.is_control() || is_bidi_control(c)) && !keep.contains(&c);
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !hidden(c) {
            out.push(c);
        } else if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The explicit bidirectional formatting characters (embeddings, overrides, isolates, and the
/// Arabic letter mark) that make text display in another order than it is read.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_terminal_controls() {
        assert_eq!(shown("src/a.rs"), "src/a.rs");
        assert_eq!(shown("a\x1b]52;c;x\x07b"), "a\\x1b]52;c;x\\x07b");
        assert_eq!(shown("x\n  ok"), "x\\x0a  ok");
        assert_eq!(shown("\u{9b}31m"), "\\x9b31m");
        assert_eq!(shown("a\u{202e}b\u{2066}c"), "a\\u{202e}b\\u{2066}c");
        assert_eq!(shown("\tx"), "\\x09x");
        assert_eq!(shown_but("\tx\r", &['\t']), "\tx\\x0d");
    }
}
