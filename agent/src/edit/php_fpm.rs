//! Typed edits of php-fpm pool files, located through the pool probe's own line reader
//! (`probe::php_fpm`): the `[pool]` section, then its `key = value` line; exactly the value's
//! bytes are replaced, or one `key = value` line is added to the section. The result is read
//! again with the probe's parser before it is returned.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{EditError, EditResult, PoolKey, line_end, printable, value};
use crate::probe::php_fpm::{IniLine, ini_lines, parse_pools};

/// One edit of one key of one pool: in `file`, in `[pool]`, set `key` from `old` to `new`.
/// `old: None` adds the key to the pool, where it must not be yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEdit {
    /// The pool file, e.g. `/etc/php/8.2/fpm/pool.d/www.conf`.
    pub file: PathBuf,
    /// The pool's section name, e.g. `www`.
    pub pool: String,
    pub key: PoolKey,
    /// The value the edit was computed against, unquoted; `None` to add the key.
    pub old: Option<String>,
    /// The value to write, checked by the key's type.
    pub new: String,
}

/// Applies one pool edit to the text of its file. Pure: the caller reads and writes the file.
pub fn apply_pool_edit(original: &str, edit: &PoolEdit) -> Result<EditResult, EditError> {
    let key = edit.key.name();
    let file = &edit.file;
    let new = value::check(edit.key.value_kind(), &edit.new)
        .map_err(|why| EditError::Value {
            what: key.to_owned(),
            value: printable(&edit.new),
            why,
        })?
        .join(" ");
    let lines = ini_lines(original);
    let sections: Vec<(usize, u32)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match l {
            IniLine::Section { name, line } if *name == edit.pool => Some((i, *line)),
            _ => None,
        })
        .collect();
    let section = match sections.as_slice() {
        [(index, _)] => *index,
        [] => {
            return Err(EditError::PoolNotFound {
                file: file.clone(),
                pool: edit.pool.clone(),
            });
        }
        many => {
            return Err(EditError::PoolAmbiguous {
                file: file.clone(),
                pool: edit.pool.clone(),
                lines: many.iter().map(|(_, line)| *line).collect(),
            });
        }
    };
    // The section's lines run to the next section.
    let body: Vec<&IniLine> = lines
        .iter()
        .skip(section + 1)
        .take_while(|l| matches!(l, IniLine::Entry { .. }))
        .collect();
    let found: Vec<&IniLine> = body
        .iter()
        .copied()
        .filter(|l| matches!(l, IniLine::Entry { key: k, .. } if k == key))
        .collect();
    let path = format!("[{}]", edit.pool);
    let (range, replacement) = match (&edit.old, found.as_slice()) {
        (_, [_, _, ..]) => {
            return Err(EditError::Duplicate {
                file: file.clone(),
                what: key.to_owned(),
                path,
                lines: found.iter().map(|l| line_of(l)).collect(),
            });
        }
        (Some(_), []) => {
            return Err(EditError::NotFound {
                file: file.clone(),
                what: key.to_owned(),
                path,
            });
        }
        (
            None,
            [
                IniLine::Entry {
                    value: current,
                    line,
                    ..
                },
            ],
        ) => {
            return Err(EditError::AlreadySet {
                file: file.clone(),
                line: *line,
                what: key.to_owned(),
                path,
                current: current.clone(),
            });
        }
        (
            Some(old),
            [
                IniLine::Entry {
                    value: current,
                    line,
                    value_span,
                    ..
                },
            ],
        ) => {
            if old.trim() != current {
                return Err(EditError::Stale {
                    file: file.clone(),
                    line: *line,
                    what: key.to_owned(),
                    expected: printable(old),
                    found: current.clone(),
                });
            }
            if *current == new {
                return Err(EditError::NoChange {
                    file: file.clone(),
                    line: *line,
                    what: key.to_owned(),
                    value: new,
                });
            }
            (value_span.clone(), new.clone())
        }
        (None, []) => insertion(original, &lines, section, &body, key, &new),
        // A section header is never in `found`.
        (_, [IniLine::Section { line, .. }]) => {
            return Err(EditError::SelfCheck {
                file: file.clone(),
                why: format!("line {line} was taken for a key"),
            });
        }
    };
    let mut text = String::with_capacity(original.len() + replacement.len());
    text.push_str(original.get(..range.start).unwrap_or_default());
    text.push_str(&replacement);
    text.push_str(original.get(range.end..).unwrap_or_default());
    let line = self_check(original, &text, edit, &new)?;
    Ok(EditResult::new(file, original, text, vec![line]))
}

fn line_of(line: &IniLine) -> u32 {
    match line {
        IniLine::Section { line, .. } | IniLine::Entry { line, .. } => *line,
    }
}

/// A new `key = value` line after the section's last entry (at its indentation), or after the
/// section's header when it has none.
fn insertion(
    text: &str,
    lines: &[IniLine],
    section: usize,
    body: &[&IniLine],
    key: &str,
    new: &str,
) -> (std::ops::Range<usize>, String) {
    let after_line = |line: u32| -> usize {
        // The byte after the newline ending this 1-based line (the end of text on the last).
        text.split_inclusive('\n')
            .take(line as usize)
            .map(str::len)
            .sum()
    };
    let (at, indent) = match body.last() {
        Some(IniLine::Entry {
            line, line_span, ..
        }) => {
            let raw = text.get(line_span.clone()).unwrap_or_default();
            let indent: String = raw
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            (after_line(*line), indent)
        }
        _ => {
            let header = lines.get(section).map(line_of).unwrap_or(0);
            (after_line(header), String::new())
        }
    };
    let eol = line_end(text);
    let newline = if at == 0 || text.get(..at).is_some_and(|t| t.ends_with('\n')) {
        ""
    } else {
        eol
    };
    (at..at, format!("{newline}{indent}{key} = {new}{eol}"))
}

/// The new text is the old one with exactly this key of this pool changed, as the probe's
/// parser reads both. Returns the key's line in the new text.
fn self_check(old: &str, new_text: &str, edit: &PoolEdit, new: &str) -> Result<u32, EditError> {
    let failed = |why: String| EditError::SelfCheck {
        file: edit.file.clone(),
        why,
    };
    let key = edit.key.name();
    let strip = |lines: Vec<IniLine>| -> Vec<(String, String)> {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in lines {
            match line {
                IniLine::Section { name, .. } => {
                    section.clone_from(&name);
                    out.push((format!("[{name}]"), String::new()));
                }
                IniLine::Entry { key: k, value, .. } => {
                    if !(section == edit.pool && k == key) {
                        out.push((k, value));
                    }
                }
            }
        }
        out
    };
    if strip(ini_lines(old)) != strip(ini_lines(new_text)) {
        return Err(failed("lines other than the edited key changed".to_owned()));
    }
    let entries: Vec<(u32, String)> = {
        let mut in_pool = false;
        let mut found = Vec::new();
        for line in ini_lines(new_text) {
            match line {
                IniLine::Section { name, .. } => in_pool = name == edit.pool,
                IniLine::Entry {
                    key: k,
                    value,
                    line,
                    ..
                } if in_pool && k == key => found.push((line, value)),
                IniLine::Entry { .. } => {}
            }
        }
        found
    };
    let [(line, value)] = entries.as_slice() else {
        return Err(failed(format!(
            "{key} is found {} times in [{}]",
            entries.len(),
            edit.pool
        )));
    };
    if value != new {
        return Err(failed(format!("{key} reads back as `{value}`")));
    }
    // The probe sees the new value too.
    let pools = parse_pools(&edit.file, new_text);
    let seen = pools
        .iter()
        .find(|p| p.name == edit.pool)
        .and_then(|p| p.max_children);
    if edit.key == PoolKey::MaxChildren && seen.map(|n| n.to_string()) != Some(new.to_owned()) {
        return Err(failed(format!("the pool probe reads {key} as {seen:?}")));
    }
    Ok(*line)
}
