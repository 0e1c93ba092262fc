//! One file's directive tree, built from its tokens.

use super::lex::Token;

/// Deeper `{` nesting is cut off: nginx itself has no use for more, and the walk recurses.
const MAX_NESTING: usize = 64;

/// A directive: its words, and its block when it has one.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) line: u32,
    pub(super) block: Option<Vec<Node>>,
}

/// Builds the directive tree of one file, without recursion (the input may nest deeply).
/// Unbalanced input is closed where it ends; a stray `}` is dropped; words that no `;` ends
/// at the end of the text still form a directive; blocks deeper than [`MAX_NESTING`] are
/// dropped with their contents.
pub(super) fn tree(tokens: Vec<Token>) -> Vec<Node> {
    // Each open level: the directive that opened it (none for the file) and its children.
    let mut levels: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    let mut words: Vec<(String, u32)> = Vec::new();
    let mut skipping: usize = 0;
    for token in tokens {
        if skipping > 0 {
            match token {
                Token::Open => skipping += 1,
                Token::Close => skipping -= 1,
                _ => {}
            }
            continue;
        }
        match token {
            Token::Word { text, line } => words.push((text, line)),
            Token::Semicolon => {
                if let Some(node) = node_of(std::mem::take(&mut words), None)
                    && let Some((_, children)) = levels.last_mut()
                {
                    children.push(node);
                }
            }
            Token::Open => {
                if levels.len() > MAX_NESTING {
                    words.clear();
                    skipping = 1;
                    continue;
                }
                let opener =
                    node_of(std::mem::take(&mut words), Some(Vec::new())).unwrap_or(Node {
                        name: String::new(),
                        args: Vec::new(),
                        line: 0,
                        block: Some(Vec::new()),
                    });
                levels.push((Some(opener), Vec::new()));
            }
            Token::Close => {
                if let Some(node) = node_of(std::mem::take(&mut words), None)
                    && let Some((_, children)) = levels.last_mut()
                {
                    children.push(node);
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

fn node_of(words: Vec<(String, u32)>, block: Option<Vec<Node>>) -> Option<Node> {
    let mut words = words.into_iter();
    let (name, line) = words.next()?;
    Some(Node {
        name,
        args: words.map(|(w, _)| w).collect(),
        line,
        block,
    })
}
