//! nginx's configuration grammar, word by word.

/// A token of nginx's configuration grammar.
#[derive(Debug, PartialEq)]
pub(super) enum Token {
    Word { text: String, line: u32 },
    Semicolon,
    Open,
    Close,
}

/// Tokenizes as nginx's `ngx_conf_read_token` does: whitespace separates words; `;` and `{`
/// end a word; `}` and `#` are special only where a word would start; `'…'` and `"…"` quote;
/// a backslash makes the next character literal; `${` does not open a block.
pub(super) fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line: u32 = 1;
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
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
                out.push(Token::Semicolon);
            }
            '{' => {
                chars.next();
                out.push(Token::Open);
            }
            '}' => {
                chars.next();
                out.push(Token::Close);
            }
            '#' => while chars.next_if(|&c| c != '\n').is_some() {},
            '"' | '\'' => {
                chars.next();
                let quote = c;
                let start = line;
                let mut raw = String::new();
                while let Some(c) = chars.next() {
                    if c == '\n' {
                        line = line.saturating_add(1);
                    }
                    if c == quote {
                        break;
                    }
                    raw.push(c);
                    if c == '\\'
                        && let Some(next) = chars.next()
                    {
                        // The escaped character is literal, even a quote or a `;`.
                        if next == '\n' {
                            line = line.saturating_add(1);
                        }
                        raw.push(next);
                    }
                }
                out.push(Token::Word {
                    text: unescape(&raw),
                    line: start,
                });
            }
            _ => {
                let start = line;
                let mut raw = String::new();
                let mut after_dollar = false;
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == ';' || (c == '{' && !after_dollar) {
                        break;
                    }
                    chars.next();
                    after_dollar = c == '$';
                    raw.push(c);
                    if c == '\\'
                        && let Some(next) = chars.next()
                    {
                        // The escaped character is literal, even a quote or a `;`.
                        if next == '\n' {
                            line = line.saturating_add(1);
                        }
                        raw.push(next);
                    }
                }
                out.push(Token::Word {
                    text: unescape(&raw),
                    line: start,
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
