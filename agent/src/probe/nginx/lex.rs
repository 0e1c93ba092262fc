//! nginx's configuration grammar, word by word.

use std::ops::Range;

/// A token of nginx's configuration grammar, with where it is in the text: the editor
/// (`crate::edit`) replaces exactly a word's bytes, so every token keeps its byte span.
#[derive(Debug, PartialEq)]
pub(crate) enum Token {
    /// A word, unquoted and unescaped; `span` is its raw bytes, quotes included.
    Word {
        text: String,
        line: u32,
        span: Range<usize>,
    },
    /// `;` at this byte offset.
    Semicolon { at: usize },
    /// `{` at this byte offset.
    Open { at: usize },
    /// `}` at this byte offset.
    Close { at: usize },
}

/// Tokenizes as nginx's `ngx_conf_read_token` does: whitespace separates words; `;` and `{`
/// end a word; `}` and `#` are special only where a word would start; `'…'` and `"…"` quote;
/// a backslash makes the next character literal; `${` does not open a block.
pub(crate) fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line: u32 = 1;
    let mut chars = text.char_indices().peekable();
    // The byte offset just past a character.
    let after = |(i, c): (usize, char)| i + c.len_utf8();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            '\n' => {
                line = line.saturating_add(1);
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            ';' => {
                chars.next();
                out.push(Token::Semicolon { at });
            }
            '{' => {
                chars.next();
                out.push(Token::Open { at });
            }
            '}' => {
                chars.next();
                out.push(Token::Close { at });
            }
            '#' => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
            '"' | '\'' => {
                chars.next();
                let quote = c;
                let start = line;
                let mut end = at + 1;
                let mut raw = String::new();
                while let Some((i, c)) = chars.next() {
                    end = after((i, c));
                    if c == '\n' {
                        line = line.saturating_add(1);
                    }
                    if c == quote {
                        break;
                    }
                    raw.push(c);
                    if c == '\\'
                        && let Some((j, next)) = chars.next()
                    {
                        // The escaped character is literal, even a quote or a `;`.
                        end = after((j, next));
                        if next == '\n' {
                            line = line.saturating_add(1);
                        }
                        raw.push(next);
                    }
                }
                out.push(Token::Word {
                    text: unescape(&raw),
                    line: start,
                    span: at..end,
                });
            }
            _ => {
                let start = line;
                let mut end = at;
                let mut raw = String::new();
                let mut after_dollar = false;
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || c == ';' || (c == '{' && !after_dollar) {
                        break;
                    }
                    chars.next();
                    end = after((i, c));
                    after_dollar = c == '$';
                    raw.push(c);
                    if c == '\\'
                        && let Some((j, next)) = chars.next()
                    {
                        // The escaped character is literal, even a quote or a `;`.
                        end = after((j, next));
                        if next == '\n' {
                            line = line.saturating_add(1);
                        }
                        raw.push(next);
                    }
                }
                out.push(Token::Word {
                    text: unescape(&raw),
                    line: start,
                    span: at..end,
                });
            }
        }
    }
    out
}

/// nginx's unescaping of a word: `\"`, `\'` and `\\` lose their backslash, `\t`, `\r`, `\n`
/// become the control characters, any other backslash stays (regexes keep `\d`, `\.`).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some(&next @ ('"' | '\'' | '\\')) => {
                out.push(next);
                chars.next();
            }
            Some('t') => {
                out.push('\t');
                chars.next();
            }
            Some('r') => {
                out.push('\r');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            _ => out.push('\\'),
        }
    }
    out
}
