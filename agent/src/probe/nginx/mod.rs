//! nginx's configuration as `nginx -T` prints it: every file, each introduced by a
//! `# configuration file PATH:` line.
//!
//! [`parse`] is pure and total: any text gives a (possibly empty) [`NginxConfig`], never a
//! panic. [`dump`] runs `nginx -T` and keeps what it printed and how it exited.
//!
//! The stages, one file each: [`dump`] (running `nginx -T`, splitting its output into
//! files), `lex` (nginx's tokenizer), `tree` (one file's directive tree), `walk` (from the
//! main file through `include`s, filling the model), `target` (addresses decoded and
//! compared) and `model` (what diagnosis reads).

mod dump;
mod lex;
mod model;
mod target;
mod tree;
mod walk;

pub use dump::{NginxDump, dump};
pub(crate) use lex::{Token, tokens};
pub use model::{
    AccessLog, BlockPath, BlockStep, Directive, LogDestination, LogFile, NginxConfig, Pass,
    PassKind, Target, UpstreamBlock, UpstreamServer,
};
pub(crate) use tree::Node;

/// Parses `nginx -T` output. Total: text that is not nginx configuration yields what could be
/// recognised of it, possibly nothing.
///
/// Each file listed by a `# configuration file PATH:` line is parsed on its own, then the
/// files are walked from the first (the main file) following `include` directives, so a file
/// included inside a `server` or `location` block gets that block's context, as nginx reads
/// it. Text before the first such line is read as a file with an empty path. Line numbers are
/// those of the directive's name in its file.
pub fn parse(text: &str) -> NginxConfig {
    let sources: Vec<walk::Source> = dump::split_files(text)
        .into_iter()
        .map(|(path, body)| walk::Source {
            nodes: tree::tree(lex::tokens(body)),
            path,
        })
        .collect();
    walk::walk(&sources)
}

/// One file's directive tree, with the byte span of every word: what the editor
/// (`crate::edit`) locates a directive in. Pure and total, like [`parse`].
pub(crate) fn file_tree(text: &str) -> Vec<Node> {
    tree::tree(lex::tokens(text))
}

/// Each file of `nginx -T` output with its text as it is on disk (nginx prints a file's bytes
/// and then a newline, which is not the file's): what an edit is computed against.
pub fn files(text: &str) -> Vec<(std::path::PathBuf, &str)> {
    dump::split_files(text)
        .into_iter()
        .filter(|(path, _)| !path.as_os_str().is_empty())
        .map(|(path, body)| (path, body.strip_suffix('\n').unwrap_or(body)))
        .collect()
}
