//! The unified diff an operator approves, and the SHA-256 that ties it to a file's text.
//!
//! The lines are compared with Myers' algorithm (O((N+M)·D), D the lines that differ, a few
//! for an edit) after the common head and tail are set aside, and grouped into `@@` hunks with
//! three lines of context, as `diff -u` prints them. Written here rather than taken from a
//! crate: it is some eighty lines, edits need nothing more, and the agent's dependencies stay
//! the ones it has.

use sha2::{Digest, Sha256};

/// Lines of context around each change, as `diff -u`.
const CONTEXT: usize = 3;

/// Most V entries the comparison may keep (D steps of N+M+1 each); beyond it, the differing
/// middle is shown as removed then added: still a correct diff, only not the smallest, and
/// time and memory stay bounded whatever the texts.
const BUDGET: usize = 1 << 22;

/// The SHA-256 of `text`, in lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// `--- a/PATH` / `+++ b/PATH` and `@@` hunks from `old` to `new`, in GNU diff's form (a
/// range of one line is written without its count; a line without a final newline is followed
/// by `\ No newline at end of file`). Empty when the texts are equal. `path` is shown without
/// its leading `/`.
pub fn unified(path: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = compare(&a, &b);
    // Each op with the line it shows: the old line unless it was added.
    let mut lines = Vec::with_capacity(ops.len());
    let (mut x, mut y) = (0, 0);
    for op in &ops {
        match op {
            Op::Same | Op::Removed => {
                lines.push((*op, a.get(x).copied().unwrap_or_default(), x, y));
                x += 1;
                y += usize::from(*op == Op::Same);
            }
            Op::Added => {
                lines.push((*op, b.get(y).copied().unwrap_or_default(), x, y));
                y += 1;
            }
        }
    }
    let changes: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].0 != Op::Same)
        .collect();
    let Some(&first) = changes.first() else {
        return String::new();
    };
    // Changes closer than twice the context share a hunk, as diff -u prints them.
    let mut hunks: Vec<(usize, usize)> = vec![(first, first)];
    for &change in &changes[1..] {
        match hunks.last_mut() {
            Some((_, last)) if change - *last <= 2 * CONTEXT + 1 => *last = change,
            _ => hunks.push((change, change)),
        }
    }
    let shown = path.trim_start_matches('/');
    let mut out = format!("--- a/{shown}\n+++ b/{shown}\n");
    for (first, last) in hunks {
        let start = first.saturating_sub(CONTEXT);
        let end = (last + 1 + CONTEXT).min(lines.len());
        let part = &lines[start..end];
        let old_count = part.iter().filter(|l| l.0 != Op::Added).count();
        let new_count = part.iter().filter(|l| l.0 != Op::Removed).count();
        let (_, _, old_start, new_start) = part[0];
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(old_start, old_count),
            range(new_start, new_count)
        ));
        for (op, text, _, _) in part {
            out.push(match op {
                Op::Same => ' ',
                Op::Removed => '-',
                Op::Added => '+',
            });
            out.push_str(text);
            if !text.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// A hunk range: `START,COUNT` with START 1-based, `START` alone for one line, and the line
/// before (0 at the top) for an empty range.
fn range(start: usize, count: usize) -> String {
    match count {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{count}", start + 1),
    }
}

/// The shortest edit script from `a` to `b`: the common head and tail, and Myers' algorithm
/// on what lies between.
fn compare(a: &[&str], b: &[&str]) -> Vec<Op> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops = vec![Op::Same; head];
    ops.extend(myers(a_mid, b_mid).unwrap_or_else(|| {
        let mut all = vec![Op::Removed; a_mid.len()];
        all.extend(vec![Op::Added; b_mid.len()]);
        all
    }));
    ops.extend(vec![Op::Same; tail]);
    ops
}

/// Myers' O((N+M)·D) greedy algorithm, keeping each step's V to walk back the path. `None`
/// when it would keep more than [`BUDGET`] entries.
fn myers(a: &[&str], b: &[&str]) -> Option<Vec<Op>> {
    let (n, m) = (a.len(), b.len());
    let max = n + m;
    // Diagonals -max-1..=max+1: a step reads its neighbours, also at the edges.
    let width = 2 * max + 3;
    let index = |k: isize| (k + max as isize + 1) as usize;
    let mut v = vec![0usize; width];
    let mut trace: Vec<Vec<usize>> = Vec::new();
    for d in 0..=max as isize {
        if (trace.len() + 1).saturating_mul(width) > BUDGET {
            return None;
        }
        trace.push(v.clone());
        for k in (-d..=d).step_by(2) {
            let down = k == -d || (k != d && v[index(k - 1)] < v[index(k + 1)]);
            let mut x = if down {
                v[index(k + 1)]
            } else {
                v[index(k - 1)] + 1
            };
            let mut y = (x as isize - k) as usize;
            while x < n && y < m && a[x] == b[y] {
                x += 1;
                y += 1;
            }
            v[index(k)] = x;
            if x >= n && y >= m {
                return Some(backtrack(&trace, n, m, index));
            }
        }
    }
    None
}

/// Walks the steps back from (n, m) to (0, 0), newest first, and returns the ops in order.
fn backtrack(trace: &[Vec<usize>], n: usize, m: usize, index: impl Fn(isize) -> usize) -> Vec<Op> {
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for (d, v) in trace.iter().enumerate().skip(1).rev() {
        let d = d as isize;
        let k = x as isize - y as isize;
        let down = k == -d || (k != d && v[index(k - 1)] < v[index(k + 1)]);
        let prev_k = if down { k + 1 } else { k - 1 };
        let prev_x = v[index(prev_k)];
        let prev_y = (prev_x as isize - prev_k) as usize;
        while x > prev_x && y > prev_y {
            ops.push(Op::Same);
            x -= 1;
            y -= 1;
        }
        if down {
            ops.push(Op::Added);
            y -= 1;
        } else {
            ops.push(Op::Removed);
            x -= 1;
        }
    }
    while x > 0 && y > 0 {
        ops.push(Op::Same);
        x -= 1;
        y -= 1;
    }
    ops.reverse();
    ops
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Applies a diff made by [`unified`] to `old`, the way `patch` would: a test that the
    /// diff says what changed, not only that it looks right.
    fn apply(old: &str, diff: &str) -> String {
        if diff.is_empty() {
            return old.to_owned();
        }
        let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
        let mut lines = diff.split_inclusive('\n').peekable();
        assert!(lines.next().unwrap().starts_with("--- a/"));
        assert!(lines.next().unwrap().starts_with("+++ b/"));
        let mut out: Vec<String> = Vec::new();
        let mut cursor = 0;
        while let Some(header) = lines.next() {
            let old_range = header
                .strip_prefix("@@ -")
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            let (start, count) = match old_range.split_once(',') {
                Some((s, c)) => (s.parse::<usize>().unwrap(), c.parse::<usize>().unwrap()),
                None => (old_range.parse().unwrap(), 1),
            };
            let start = if count == 0 { start } else { start - 1 };
            assert!(start >= cursor, "hunks overlap or go backwards");
            out.extend(old_lines[cursor..start].iter().map(|l| (*l).to_owned()));
            let mut consumed = 0;
            let mut last_added = false;
            while let Some(l) = lines.next_if(|l| !l.starts_with("@@")) {
                if l.starts_with('\\') {
                    // The line before had no newline.
                    if last_added {
                        let text = out.last_mut().unwrap();
                        assert!(text.ends_with('\n'));
                        text.pop();
                    }
                    continue;
                }
                let (prefix, text) = l.split_at(1);
                match prefix {
                    " " => {
                        assert_eq!(
                            old_lines[start + consumed].trim_end_matches('\n'),
                            text.trim_end_matches('\n')
                        );
                        consumed += 1;
                        out.push(text.to_owned());
                        last_added = true;
                    }
                    "-" => {
                        assert_eq!(
                            old_lines[start + consumed].trim_end_matches('\n'),
                            text.trim_end_matches('\n')
                        );
                        consumed += 1;
                        last_added = false;
                    }
                    "+" => {
                        out.push(text.to_owned());
                        last_added = true;
                    }
                    other => panic!("line prefix {other:?}"),
                }
            }
            assert_eq!(consumed, count, "the hunk's old count");
            cursor = start + count;
        }
        out.extend(old_lines[cursor..].iter().map(|l| (*l).to_owned()));
        out.concat()
    }

    #[test]
    fn separate_changes_are_separate_hunks() {
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new = old
            .replace("\n2\n", "\ntwo\n")
            .replace("\n18\n", "\n18\neighteen+\n");
        let diff = unified("f", &old, &new);
        assert_eq!(
            diff,
            "--- a/f\n+++ b/f\n@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n\
             @@ -16,5 +16,6 @@\n 16\n 17\n 18\n+eighteen+\n 19\n 20\n"
        );
        assert_eq!(apply(&old, &diff), new);
        // Changes six lines apart share a hunk (their contexts touch).
        let near = old.replace("\n2\n", "\ntwo\n").replace("\n9\n", "\nnine\n");
        let diff = unified("f", &old, &near);
        assert_eq!(diff.matches("@@ -").count(), 1, "{diff}");
        assert_eq!(apply(&old, &diff), near);
    }

    #[test]
    fn one_changed_line_with_three_lines_of_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        let diff = unified("/etc/nginx/x.conf", old, new);
        assert_eq!(
            diff,
            "--- a/etc/nginx/x.conf\n+++ b/etc/nginx/x.conf\n@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
        assert_eq!(apply(old, &diff), new);
    }

    #[test]
    fn insertions_at_the_edges_and_missing_newlines() {
        let cases = [
            ("", "x\n"),
            ("a\n", "a\nb\n"),
            ("a\n", "b\na\n"),
            ("a", "a\n"),
            ("a\n", "a"),
            ("a\nb", "a\nc"),
            (
                "1\n2\n3\n4\n5\n6\n7\n8\n9\n",
                "1\n2\n3\n4\n4.5\n5\n6\n7\n8\n9\n",
            ),
            ("x\nx\nx\n", "x\nx\nx\nx\n"),
            ("same\n", "same\n"),
        ];
        for (old, new) in cases {
            let diff = unified("f", old, new);
            assert_eq!(apply(old, &diff), new, "{old:?} -> {new:?}:\n{diff}");
        }
        assert_eq!(
            unified("f", "", "x\n"),
            "--- a/f\n+++ b/f\n@@ -0,0 +1 @@\n+x\n"
        );
        assert_eq!(
            unified("f", "a", "a\n"),
            "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+a\n"
        );
        assert_eq!(unified("f", "same\n", "same\n"), "");
    }

    #[test]
    fn any_two_texts_give_a_diff_that_patches_one_into_the_other() {
        // xorshift64*, fixed seed: a failure reproduces.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let words = ["a\n", "b\n", "c\n", "\n", "a", "b"];
        for _ in 0..5_000 {
            let mut text = || -> String {
                let n = next() % 30;
                (0..n)
                    .map(|_| words[(next() % words.len() as u64) as usize])
                    .collect::<String>()
            };
            let old = text();
            let new = text();
            let diff = unified("f", &old, &new);
            assert_eq!(apply(&old, &diff), new, "{old:?} -> {new:?}:\n{diff}");
            // And the smallest: every line not in a longest common subsequence, no more.
            let changed = diff
                .lines()
                .skip(2)
                .filter(|l| l.starts_with('-') || l.starts_with('+'))
                .count();
            let (a, b): (Vec<&str>, Vec<&str>) = (
                old.split_inclusive('\n').collect(),
                new.split_inclusive('\n').collect(),
            );
            assert_eq!(changed, a.len() + b.len() - 2 * lcs(&a, &b), "{diff}");
        }
    }

    fn lcs(a: &[&str], b: &[&str]) -> usize {
        let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for i in (0..a.len()).rev() {
            for j in (0..b.len()).rev() {
                table[i][j] = if a[i] == b[j] {
                    table[i + 1][j + 1] + 1
                } else {
                    table[i + 1][j].max(table[i][j + 1])
                };
            }
        }
        table[0][0]
    }

    #[test]
    fn texts_too_different_to_compare_still_diff_correctly() {
        let old: String = (0..3_000).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..3_000).map(|i| format!("new {i}\n")).collect();
        let diff = unified("f", &old, &new);
        assert_eq!(apply(&old, &diff), new);
        let removed = diff.lines().skip(2).filter(|l| l.starts_with('-'));
        assert_eq!(removed.count(), 3_000);
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
