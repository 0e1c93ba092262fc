//! Typed edits of nginx configuration files, located through the probe's own tokenizer and
//! tree (`probe::nginx`), never by searching the text: the directive is found by its block
//! path and name, and exactly the bytes of its value words are replaced (or one directive is
//! added to the block, at the block's indentation).
//!
//! Every result is checked before it is returned: the new text, tokenized again, is the old
//! token stream with exactly this change, and the directive, located again, has the new
//! value. A text that fails is an error, not a result.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{EditError, EditResult, EditableDirective, line_end, printable, value};
use crate::probe::nginx::{BlockPath, BlockStep, Node, Token, file_tree, tokens};

/// One edit of one nginx directive: in `file`, in the block at `block_path`, set `directive`
/// from `old` to `new`. `old: None` adds the directive to the block, where it must not be yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxEdit {
    /// The file, as `nginx -T` names it.
    pub file: PathBuf,
    /// Where the directive sits: `outer` (where the file is included; not in the file's text,
    /// so only its directive context is checked) and `inner` (located in the file).
    pub block_path: BlockPath,
    pub directive: EditableDirective,
    /// The value the edit was computed against, words joined by one space as
    /// [`crate::probe::nginx::Directive::args`] holds them; `None` to add the directive.
    pub old: Option<String>,
    /// The value to write, checked by the directive's type.
    pub new: String,
}

/// Applies one edit to the text of its file. Pure: the caller reads the file and writes the
/// result.
pub fn apply_edit(original: &str, edit: &NginxEdit) -> Result<EditResult, EditError> {
    apply_edits(original, std::slice::from_ref(edit))
}

/// Applies edits of one file in order (`worker_connections` with `worker_rlimit_nofile`,
/// a buffer size with its buffers), each located in the text the one before left; the diff
/// and hashes are from the original to the end. All or none: the first refusal is returned.
pub fn apply_edits(original: &str, edits: &[NginxEdit]) -> Result<EditResult, EditError> {
    let Some(first) = edits.first() else {
        return Err(EditError::NoEdits);
    };
    let mut text = original.to_owned();
    for edit in edits {
        if edit.file != first.file {
            return Err(EditError::MixedFiles {
                first: first.file.clone(),
                other: edit.file.clone(),
            });
        }
        text = apply_one(&text, edit)?;
    }
    // Lines in the final text: a later insertion moves what an earlier edit changed.
    let lines = edits
        .iter()
        .map(|edit| directive_in(&text, edit).map(|(line, _)| line))
        .collect::<Result<Vec<u32>, EditError>>()?;
    Ok(EditResult::new(&first.file, original, text, lines))
}

/// What to splice into the text: `replacement` instead of the bytes of `range`.
struct Splice {
    range: Range<usize>,
    replacement: String,
}

fn apply_one(text: &str, edit: &NginxEdit) -> Result<String, EditError> {
    let name = edit.directive.name();
    let file = &edit.file;
    let path = edit.block_path.to_string();
    let steps: Vec<BlockStep> = edit.block_path.steps().cloned().collect();
    edit.directive
        .allowed_in(&steps)
        .map_err(|why| EditError::Context {
            directive: name.to_owned(),
            path: path.clone(),
            why,
        })?;
    let new =
        value::check(edit.directive.value_kind(), &edit.new).map_err(|why| EditError::Value {
            what: name.to_owned(),
            value: printable(&edit.new),
            why,
        })?;
    let nodes = file_tree(text);
    let block = find_block(&nodes, &edit.block_path.inner, file, &path)?;
    let children: &[Node] = match block {
        Some(node) => node.block.as_deref().unwrap_or_default(),
        None => &nodes,
    };
    let found: Vec<&Node> = children.iter().filter(|n| n.name == name).collect();
    let splice = match (&edit.old, found.as_slice()) {
        (_, [_, _, ..]) => {
            return Err(EditError::Duplicate {
                file: file.clone(),
                what: name.to_owned(),
                path,
                lines: found.iter().map(|n| n.line).collect(),
            });
        }
        (Some(_), []) => {
            return Err(EditError::NotFound {
                file: file.clone(),
                what: name.to_owned(),
                path,
            });
        }
        (None, [node]) => {
            return Err(EditError::AlreadySet {
                file: file.clone(),
                line: node.line,
                what: name.to_owned(),
                path,
                current: node.args.join(" "),
            });
        }
        (Some(old), [node]) => replace(text, node, old, &new, name, file)?,
        (None, []) => insert(text, block, children, name, &new, file)?,
    };
    let mut out = String::with_capacity(text.len() + splice.replacement.len());
    out.push_str(text.get(..splice.range.start).unwrap_or_default());
    out.push_str(&splice.replacement);
    out.push_str(text.get(splice.range.end..).unwrap_or_default());
    self_check(text, &out, &splice, edit, &new)?;
    Ok(out)
}

/// The block the inner path names, from the file's top level: each step must name exactly
/// one block. `None` is the file's top level.
fn find_block<'a>(
    nodes: &'a [Node],
    inner: &[BlockStep],
    file: &Path,
    path: &str,
) -> Result<Option<&'a Node>, EditError> {
    let mut block = None;
    let mut level = nodes;
    for step in inner {
        let matches: Vec<&Node> = level
            .iter()
            .filter(|n| n.block.is_some() && n.step() == *step)
            .collect();
        match matches.as_slice() {
            [one] => {
                block = Some(*one);
                level = one.block.as_deref().unwrap_or_default();
            }
            [] => {
                return Err(EditError::BlockNotFound {
                    file: file.to_owned(),
                    path: path.to_owned(),
                    step: step.to_string(),
                });
            }
            many => {
                return Err(EditError::AmbiguousBlock {
                    file: file.to_owned(),
                    path: path.to_owned(),
                    step: step.to_string(),
                    lines: many.iter().map(|n| n.line).collect(),
                });
            }
        }
    }
    Ok(block)
}

/// The value words of `node`, from the first to the last, become `new`.
fn replace(
    text: &str,
    node: &Node,
    old: &str,
    new: &[String],
    name: &str,
    file: &Path,
) -> Result<Splice, EditError> {
    let unsupported = |why: &str| EditError::Unsupported {
        file: file.to_owned(),
        line: node.line,
        why: format!("{name} {why}; a person edits this one"),
    };
    if node.block.is_some() {
        return Err(unsupported("opens a block"));
    }
    if node.end.is_none() {
        return Err(unsupported("is not ended by `;`"));
    }
    let expected: Vec<&str> = old.split_whitespace().collect();
    if expected != node.args {
        return Err(EditError::Stale {
            file: file.to_owned(),
            line: node.line,
            what: name.to_owned(),
            expected: printable(old),
            found: node.args.join(" "),
        });
    }
    if node.args == new {
        return Err(EditError::NoChange {
            file: file.to_owned(),
            line: node.line,
            what: name.to_owned(),
            value: new.join(" "),
        });
    }
    let values = node.spans.get(1..).unwrap_or_default();
    let (Some(first), Some(last)) = (values.first(), values.last()) else {
        return Err(unsupported("has no value"));
    };
    // Only whitespace may sit between the value words: a comment there would be lost.
    let gaps_blank = values.windows(2).all(|pair| {
        text.get(pair[0].end..pair[1].start)
            .is_some_and(|gap| gap.trim().is_empty())
    });
    if !gaps_blank {
        return Err(unsupported("has a comment between its values"));
    }
    Ok(Splice {
        range: first.start..last.end,
        replacement: new.join(" "),
    })
}

/// A new `NAME VALUE;` in `block` (the file's top level when `None`): on its own line before
/// the block's `}`, at the indentation of the block's directives; in a block written on one
/// line, before its `}` on that line. At the top level, after the last directive that comes
/// before the first block, or at the end of the file.
fn insert(
    text: &str,
    block: Option<&Node>,
    children: &[Node],
    name: &str,
    new: &[String],
    file: &Path,
) -> Result<Splice, EditError> {
    let directive = format!("{name} {};", new.join(" "));
    let Some(block) = block else {
        return insert_top(text, children, &directive, file);
    };
    let (Some(_), Some(close)) = (block.open, block.end) else {
        return Err(EditError::Unsupported {
            file: file.to_owned(),
            line: block.line,
            why: format!("the block {} is not closed", block.step()),
        });
    };
    let close_line = line_start(text, close);
    if text
        .get(close_line..close)
        .is_some_and(|before| before.trim().is_empty())
    {
        let indent = children
            .first()
            .and_then(|child| child.spans.first())
            .and_then(|span| indent_at(text, span.start))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let outer = block
                    .spans
                    .first()
                    .and_then(|span| indent_at(text, span.start))
                    .unwrap_or_default();
                format!("{outer}{}", indent_unit(text))
            });
        return Ok(Splice {
            range: close_line..close_line,
            replacement: format!("{indent}{directive}{}", line_end(text)),
        });
    }
    let spaced = text
        .get(..close)
        .and_then(|before| before.chars().next_back())
        .is_some_and(char::is_whitespace);
    Ok(Splice {
        range: close..close,
        replacement: format!("{}{directive} ", if spaced { "" } else { " " }),
    })
}

fn insert_top(
    text: &str,
    nodes: &[Node],
    directive: &str,
    file: &Path,
) -> Result<Splice, EditError> {
    let before_blocks = nodes.iter().take_while(|n| n.block.is_none()).last();
    let eol = line_end(text);
    let Some(last) = before_blocks else {
        let newline = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            eol
        };
        return Ok(Splice {
            range: text.len()..text.len(),
            replacement: format!("{newline}{directive}{eol}"),
        });
    };
    let indent = last
        .spans
        .first()
        .and_then(|span| indent_at(text, span.start))
        .unwrap_or_default();
    let Some(end) = last.end else {
        return Err(EditError::Unsupported {
            file: file.to_owned(),
            line: last.line,
            why: format!("{} is not ended by `;`", last.name),
        });
    };
    let rest = text.get(end + 1..).unwrap_or_default();
    let (rest_of_line, next_line) = match rest.find('\n') {
        Some(at) => (rest.get(..at).unwrap_or_default(), Some(end + 1 + at + 1)),
        None => (rest, None),
    };
    let rest_of_line = rest_of_line.trim();
    if !(rest_of_line.is_empty() || rest_of_line.starts_with('#')) {
        return Err(EditError::Unsupported {
            file: file.to_owned(),
            line: last.line,
            why: format!("{} shares its line with more configuration", last.name),
        });
    }
    Ok(match next_line {
        Some(at) => Splice {
            range: at..at,
            replacement: format!("{indent}{directive}{eol}"),
        },
        None => Splice {
            range: text.len()..text.len(),
            replacement: format!("{eol}{indent}{directive}{eol}"),
        },
    })
}

/// The byte offset where the line holding `at` starts.
fn line_start(text: &str, at: usize) -> usize {
    text.get(..at)
        .and_then(|before| before.rfind('\n'))
        .map_or(0, |nl| nl + 1)
}

/// The whitespace before `at` on its line, when only whitespace is there.
fn indent_at(text: &str, at: usize) -> Option<&str> {
    text.get(line_start(text, at)..at)
        .filter(|before| before.chars().all(|c| c == ' ' || c == '\t'))
}

/// One level of indentation as the file writes it: a tab if its first indented line starts
/// with one, else four spaces.
fn indent_unit(text: &str) -> &'static str {
    let first = text
        .lines()
        .find_map(|line| line.chars().next().filter(|c| *c == ' ' || *c == '\t'));
    if first == Some('\t') { "\t" } else { "    " }
}

/// A token without its position, to compare token streams.
#[derive(Debug, PartialEq)]
enum Shape {
    Word(String),
    Semicolon,
    Open,
    Close,
}

fn shapes(tokens: impl IntoIterator<Item = Token>) -> Vec<Shape> {
    tokens
        .into_iter()
        .map(|token| match token {
            Token::Word { text, .. } => Shape::Word(text),
            Token::Semicolon { .. } => Shape::Semicolon,
            Token::Open { .. } => Shape::Open,
            Token::Close { .. } => Shape::Close,
        })
        .collect()
}

fn position(token: &Token) -> usize {
    match token {
        Token::Word { span, .. } => span.start,
        Token::Semicolon { at } | Token::Open { at } | Token::Close { at } => *at,
    }
}

/// The new text is the old one with exactly this change, to the token, and the directive in
/// its block now has the new value.
fn self_check(
    old: &str,
    new_text: &str,
    splice: &Splice,
    edit: &NginxEdit,
    new: &[String],
) -> Result<(), EditError> {
    let old_tokens = tokens(old);
    let (before, after): (Vec<Token>, Vec<Token>) = old_tokens
        .into_iter()
        .filter(|t| {
            let at = position(t);
            at < splice.range.start || at >= splice.range.end
        })
        .partition(|t| position(t) < splice.range.start);
    let mut expected = shapes(before);
    expected.extend(shapes(tokens(&splice.replacement)));
    expected.extend(shapes(after));
    if shapes(tokens(new_text)) != expected {
        return Err(EditError::SelfCheck {
            file: edit.file.clone(),
            why: "its words are not the old ones with this change".to_owned(),
        });
    }
    let (_, args) = directive_in(new_text, edit)?;
    if args != new {
        return Err(EditError::SelfCheck {
            file: edit.file.clone(),
            why: format!("{} reads back as `{}`", edit.directive, args.join(" ")),
        });
    }
    Ok(())
}

/// The line and arguments of the edit's directive in `text`, located again from scratch: the
/// one directive of its name in the block at its inner path.
fn directive_in(text: &str, edit: &NginxEdit) -> Result<(u32, Vec<String>), EditError> {
    let failed = |why: String| EditError::SelfCheck {
        file: edit.file.clone(),
        why,
    };
    let nodes = file_tree(text);
    let block = find_block(
        &nodes,
        &edit.block_path.inner,
        &edit.file,
        &edit.block_path.to_string(),
    )
    .map_err(|e| failed(e.to_string()))?;
    let children: &[Node] = match block {
        Some(node) => node.block.as_deref().unwrap_or_default(),
        None => &nodes,
    };
    let found: Vec<&Node> = children
        .iter()
        .filter(|n| n.name == edit.directive.name())
        .collect();
    match found.as_slice() {
        [node] => Ok((node.line, node.args.clone())),
        _ => Err(failed(format!(
            "{} is found {} times in its block",
            edit.directive,
            found.len()
        ))),
    }
}
