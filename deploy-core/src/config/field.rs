//! What every section's validator shares: the error a rule returns, with the span it points
//! at, and the rules that any value may have (not empty, unique).

use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;

/// Where in the file's text.
pub(super) type Span = Range<usize>;

/// A rule broken: where, and the message (what is wrong and how to fix it). `Config::parse`
/// turns the span into a line and column.
pub(super) type Invalid = (Span, String);

/// `s` trimmed, or an error when that is empty.
pub(super) fn nonempty(s: &Spanned<String>, what: &str) -> Result<String, Invalid> {
    let v = s.get_ref().trim();
    if v.is_empty() {
        return Err((s.span(), format!("{what} cannot be empty")));
    }
    Ok(v.to_owned())
}

/// An error at the second of two equal names.
pub(super) fn unique<'a>(
    items: impl Iterator<Item = &'a Spanned<String>>,
    what: &str,
) -> Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for item in items {
        if !seen.insert(item.get_ref().as_str()) {
            return Err((
                item.span(),
                format!(
                    "{what} {:?} is defined twice; names must be unique",
                    item.get_ref()
                ),
            ));
        }
    }
    Ok(())
}

/// The span of an optional key, or the file's start when it is absent.
pub(super) fn span_of<T>(s: &Option<Spanned<T>>) -> Span {
    s.as_ref().map_or(0..0, Spanned::span)
}
