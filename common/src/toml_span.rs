//! Locating problems in TOML files: byte spans to file, line, column and dotted key.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in a TOML file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The dotted key it is about, e.g. `roles.web.containers[0].ports[1]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )
    }
}

/// Turns byte spans in `text` into file, line, column and the dotted key each belongs to. The
/// text is parsed once for all of them: parsing it again for each made a file with many problems
/// take time quadratic in its size.
pub fn locate_all(file: &str, text: &str, spans: Vec<(Range<usize>, String)>) -> Vec<Problem> {
    let table = DeTable::parse(text).ok();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    spans
        .into_iter()
        .map(|(span, message)| {
            let start = span.start.min(text.len());
            let boundary = floor_char_boundary(text, start);
            let line = line_starts.partition_point(|&line_start| line_start <= boundary);
            let column = text[line_starts[line - 1]..boundary].chars().count() + 1;
            let key = table
                .as_ref()
                .and_then(|table| key_path_in_table(table.get_ref(), start))
                .unwrap_or_else(|| "(top level)".to_owned());
            Problem {
                file: file.to_owned(),
                line,
                column,
                key,
                message,
            }
        })
        .collect()
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// The dotted path of the key whose key or value contains byte `offset`.
///
/// Tables written as `[header]` sections have spans that do not cover their contents, so every
/// table and array is searched, not only those whose span contains the offset.
fn key_path_in_table(table: &DeTable<'_>, offset: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let in_key = key.span().contains(&offset) || key.span().end == offset;
        let inner = match value.get_ref() {
            _ if in_key => None,
            DeValue::Table(table) => key_path_in_table(table, offset),
            DeValue::Array(items) => key_path_in_array(items, offset),
            _ => None,
        };
        let key = written_key(key.get_ref());
        match inner {
            Some(inner) if inner.starts_with('[') => Some(format!("{key}{inner}")),
            Some(inner) => Some(format!("{key}.{inner}")),
            None if in_key || value.span().contains(&offset) => Some(key),
            None => None,
        }
    })
}

/// A key as it is written in a dotted path: quoted when it is empty or holds what would make the
/// path ambiguous or unreadable (a '.', a bracket, a quote, a space, a control character), as
/// TOML quotes it. Unquoted, an empty key named nothing and `"a.b"` read as two keys.
fn written_key(key: &str) -> String {
    let plain = !key.is_empty()
        && !key.contains(|c: char| {
            matches!(c, '.' | '[' | ']' | '"' | '\'') || c.is_whitespace() || c.is_control()
        });
    if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn key_path_in_array(items: &[Spanned<DeValue<'_>>], offset: usize) -> Option<String> {
    items.iter().enumerate().find_map(|(index, item)| {
        let inner = match item.get_ref() {
            DeValue::Table(table) => key_path_in_table(table, offset),
            DeValue::Array(items) => key_path_in_array(items, offset),
            _ => None,
        };
        match inner {
            Some(inner) if inner.starts_with('[') => Some(format!("[{index}]{inner}")),
            Some(inner) => Some(format!("[{index}].{inner}")),
            None if item.span().contains(&offset) => Some(format!("[{index}]")),
            None => None,
        }
    })
}

/// The line (1-based) where the dotted `key` (as configuration libraries name keys, e.g.
/// `labels.zone`, or `hooks[1].url` in an array of tables) is written in `text`, if it is.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let table = DeTable::parse(text).ok()?;
    let line_at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut current = table.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        // `name[index]`: the table at `index` of the array `name`.
        let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, index)) => (name, Some(index.parse::<usize>().ok()?)),
            None => (part, None),
        };
        let (found_key, value) = current.iter().find(|(k, _)| k.get_ref() == name)?;
        let value = match index {
            Some(index) => match value.get_ref() {
                DeValue::Array(items) => items.get(index)?,
                _ => return None,
            },
            None => value,
        };
        if parts.peek().is_none() {
            return Some(match index {
                Some(_) => line_at(value.span().start),
                None => line_at(found_key.span().start),
            });
        }
        match value.get_ref() {
            DeValue::Table(inner) => current = inner,
            _ => return None,
        }
    }
    None
}

/// A configuration file that could not be loaded, located where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{line}: {key}{message}", line = line.map(|l| format!(":{l}")).unwrap_or_default(), key = key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigFileError {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigFileError {
    /// The TOML syntax error in `text`, located, if there is one. Configuration libraries report
    /// syntax errors without a usable position, so files are checked with this first.
    pub fn syntax(file: &str, text: &str) -> Option<Self> {
        let err = text.parse::<toml::Table>().err()?;
        let offset = err.span().map_or(0, |s| s.start).min(text.len());
        let line = text[..offset].matches('\n').count() + 1;
        Some(Self {
            file: file.to_owned(),
            line: Some(line),
            key: None,
            message: err.message().to_owned(),
        })
    }

    /// Locates a configuration error in `text`. `key` is the key the configuration library
    /// named, if any; otherwise the first backquoted word of serde's message (`unknown field
    /// `x``) is taken as the key.
    pub fn locate(file: &str, text: &str, key: Option<String>, message: String) -> Self {
        let key = key.or_else(|| {
            message
                .split('`')
                .nth(1)
                .filter(|k| !k.is_empty() && !k.contains(' '))
                .map(str::to_owned)
        });
        Self {
            file: file.to_owned(),
            line: key.as_deref().and_then(|k| line_of_key(text, k)),
            key,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_their_line() {
        let err = ConfigFileError::syntax("m.toml", "a = 1\nb = 2\na = 3\n").unwrap();
        assert_eq!(err.line, Some(3));
        assert!(err.to_string().starts_with("m.toml:3: "), "{err}");
        assert!(ConfigFileError::syntax("m.toml", "a = 1\n").is_none());
    }

    #[test]
    fn keys_that_a_dotted_path_cannot_show_plainly_are_quoted() {
        let key = |text: &str, at: &str| {
            let offset = text.find(at).unwrap();
            let [problem] = &locate_all("f.toml", text, vec![(offset..offset, "x".into())])[..]
            else {
                panic!("one span, one problem");
            };
            problem.key.clone()
        };
        // An empty key was shown as nothing at all: "f.toml:1:1: : unknown field ``".
        assert_eq!(key("\"\" = 1\n", "1"), "\"\"");
        assert_eq!(key("[a.\"b.c\"]\nd = [1, 2]\n", "2"), "a.\"b.c\".d[1]");
        assert_eq!(
            key("[\"x y\"]\n\"\\u0007\" = 1\n", "1"),
            "\"x y\".\"\\u{7}\""
        );
        assert_eq!(key("[assign]\n\"web-*\" = [1]\n", "1"), "assign.web-*[0]");
    }

    #[test]
    fn finds_the_line_of_keys_in_arrays_of_tables() {
        let text = "a = 1\n\n[[hooks]]\nname = \"x\"\n\n[[hooks]]\nname = \"y\"\nurl = \"z\"\n";
        assert_eq!(line_of_key(text, "hooks[1].url"), Some(8));
        assert_eq!(line_of_key(text, "hooks[0].name"), Some(4));
        assert_eq!(line_of_key(text, "hooks[2].name"), None);
        assert_eq!(line_of_key(text, "hooks[x].name"), None);
    }

    #[test]
    fn finds_the_line_of_nested_keys() {
        let text = "a = 1\n[labels]\nzone = \"x\"\n";
        assert_eq!(line_of_key(text, "a"), Some(1));
        assert_eq!(line_of_key(text, "labels.zone"), Some(3));
        assert_eq!(line_of_key(text, "labels.missing"), None);
        assert_eq!(line_of_key("not toml = = ", "a"), None);
    }
}
