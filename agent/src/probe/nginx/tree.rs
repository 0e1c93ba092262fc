//! One file's directive tree, built from its tokens.

use std::ops::Range;

use super::lex::Token;
use super::model::BlockStep;

/// Deeper `{` nesting is cut off: nginx itself has no use for more, and the walk recurses.
const MAX_NESTING: usize = 64;

/// A directive: its words, and its block when it has one, with where each part is in the
/// file's text (the editor, `crate::edit`, changes exactly those bytes).
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
    /// The line of the name (1-based).
    pub(crate) line: u32,
    pub(crate) block: Option<Vec<Node>>,
    /// The raw bytes of each word, quotes included: the name first, then one per argument.
    pub(crate) spans: Vec<Range<usize>>,
    /// The byte offset of the block's `{`.
    pub(crate) open: Option<usize>,
    /// The byte offset of the `;` that ends the directive, or of the `}` that closes its
    /// block; `None` when something else ended it (the text, or its parent's `}`).
    pub(crate) end: Option<usize>,
}

impl Node {
    /// This block as a step of a block path: a `server` is known by the `server_name`s in its
    /// own text.
    pub(crate) fn step(&self) -> BlockStep {
        let children = self.block.as_deref().unwrap_or_default();
        BlockStep::new(
            &self.name,
            &self.args,
            children
                .iter()
                .filter(|n| n.name == "server_name")
                .flat_map(|n| &n.args),
        )
    }
}

/// A word on its way into a node.
struct Word {
    text: String,
    line: u32,
    span: Range<usize>,
}

/// Builds the directive tree of one file, without recursion (the input may nest deeply).
/// Unbalanced input is closed where it ends; a stray `}` is dropped; words that no `;` ends
/// at the end of the text still form a directive; blocks deeper than [`MAX_NESTING`] are
/// dropped with their contents.
pub(crate) fn tree(tokens: Vec<Token>) -> Vec<Node> {
    // Each open level: the directive that opened it (none for the file) and its children.
    let mut levels: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    let mut words: Vec<Word> = Vec::new();
    let mut skipping: usize = 0;
    for token in tokens {
        if skipping > 0 {
            match token {
                Token::Open { .. } => skipping += 1,
                Token::Close { .. } => skipping -= 1,
                _ => {}
            }
            continue;
        }
        match token {
            Token::Word { text, line, span } => words.push(Word { text, line, span }),
            Token::Semicolon { at } => {
                if let Some(mut node) = node_of(std::mem::take(&mut words), None)
                    && let Some((_, children)) = levels.last_mut()
                {
                    node.end = Some(at);
                    children.push(node);
                }
            }
            Token::Open { at } => {
                if levels.len() > MAX_NESTING {
                    words.clear();
                    skipping = 1;
                    continue;
                }
                let mut opener =
                    node_of(std::mem::take(&mut words), Some(Vec::new())).unwrap_or(Node {
                        name: String::new(),
                        args: Vec::new(),
                        line: 0,
                        block: Some(Vec::new()),
                        spans: Vec::new(),
                        open: None,
                        end: None,
                    });
                opener.open = Some(at);
                levels.push((Some(opener), Vec::new()));
            }
            Token::Close { at } => {
                if let Some(node) = node_of(std::mem::take(&mut words), None)
                    && let Some((_, children)) = levels.last_mut()
                {
                    children.push(node);
                }
                if let Some((Some(opener), _)) = levels.last_mut() {
                    opener.end = Some(at);
                }
                close_level(&mut levels);
            }
        }
    }
    if let Some(node) = node_of(words, None)
        && let Some((_, children)) = levels.last_mut()
    {
        children.push(node);
    }
    while levels.len() > 1 {
        close_level(&mut levels);
    }
    levels
        .pop()
        .map(|(_, children)| children)
        .unwrap_or_default()
}

/// Closes the innermost open block into its parent; the file level is never closed.
fn close_level(levels: &mut Vec<(Option<Node>, Vec<Node>)>) {
    if levels.len() < 2 {
        return;
    }
    if let Some((Some(mut opener), children)) = levels.pop() {
        opener.block = Some(children);
        if let Some((_, parent)) = levels.last_mut() {
            parent.push(opener);
        }
    }
}

fn node_of(words: Vec<Word>, block: Option<Vec<Node>>) -> Option<Node> {
    let spans = words.iter().map(|w| w.span.clone()).collect();
    let mut words = words.into_iter();
    let first = words.next()?;
    Some(Node {
        name: first.text,
        args: words.map(|w| w.text).collect(),
        line: first.line,
        block,
        spans,
        open: None,
        end: None,
    })
}
