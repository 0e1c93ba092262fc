//! The tailer on real files in a temporary directory, through real inotify: every way a log
//! is rotated, replaced or written half-way, and many logs at once.
//!
//! Writers are plain `File`s opened for append, as nginx and php-fpm hold their logs. Each test
//! waits for the lines it expects with a generous deadline; none measures time.

// A test reports a failure by panicking.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatemend_agent::detect::tail::MAX_LINE;
use gatemend_agent::detect::{Line, StartAt, Tailer};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

fn start(paths: &[&Path], at: StartAt) -> (Tailer, mpsc::Receiver<Line>) {
    let (tx, rx) = mpsc::channel(64);
    let tailer = Tailer::spawn(paths.iter().map(|p| p.to_path_buf()).collect(), at, tx).unwrap();
    (tailer, rx)
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn write(file: &mut File, text: &str) {
    file.write_all(text.as_bytes()).unwrap();
}

async fn next(rx: &mut mpsc::Receiver<Line>) -> Line {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(line)) => line,
        Ok(None) => panic!("the tailer stopped"),
        Err(_) => panic!("no line within {DEADLINE:?}"),
    }
}

async fn next_text(rx: &mut mpsc::Receiver<Line>) -> String {
    String::from_utf8(next(rx).await.bytes).unwrap()
}

#[tokio::test]
async fn start_at_end_skips_what_the_log_already_holds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    write(&mut w, "old 1\nold 2\nold half");
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    // The rest of the line that was half-written at the start is not a line of ours either.
    write(&mut w, " finished\nnew 1\n");
    let line = next(&mut rx).await;
    assert_eq!(line.bytes, b"new 1");
    assert_eq!(line.path, log);
}

#[tokio::test]
async fn start_at_beginning_reads_what_the_log_holds_then_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    write(&mut w, "old 1\nold 2\n");
    let (_tailer, mut rx) = start(&[&log], StartAt::Beginning);
    assert_eq!(next_text(&mut rx).await, "old 1");
    assert_eq!(next_text(&mut rx).await, "old 2");
    write(&mut w, "new 1\n");
    assert_eq!(next_text(&mut rx).await, "new 1");
}

#[tokio::test]
async fn a_half_written_line_is_delivered_only_once_its_newline_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    write(&mut w, "first ha");
    w.sync_all().unwrap();
    // Give the tailer an event for the partial write on its own, then finish the line.
    write(&mut w, "lf");
    write(&mut w, " done\nsecond\n");
    assert_eq!(next_text(&mut rx).await, "first half done");
    assert_eq!(next_text(&mut rx).await, "second");
}

#[tokio::test]
async fn a_partial_line_seen_between_writes_is_kept_until_complete() {
    // The same as above, but the tailer is known to have read the partial line: a complete
    // line is written before it and received first.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    write(&mut w, "whole\npart");
    assert_eq!(next_text(&mut rx).await, "whole");
    write(&mut w, "ial\n");
    assert_eq!(next_text(&mut rx).await, "partial");
}

#[tokio::test]
async fn rotation_by_rename_finishes_the_old_file_then_reads_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let mut old = append(&log);
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    write(&mut old, "before\n");
    assert_eq!(next_text(&mut rx).await, "before");

    // logrotate renames; the writer still holds the old file and writes on.
    std::fs::rename(&log, &rotated).unwrap();
    write(&mut old, "after rename, old file\n");
    assert_eq!(next_text(&mut rx).await, "after rename, old file");

    // logrotate's `create`, then the writer reopens (nginx on USR1) — but one more line lands in
    // the old file between the two.
    let mut new = append(&log);
    write(&mut old, "straggler\n");
    write(&mut new, "fresh 1\n");
    drop(old);
    write(&mut new, "fresh 2\n");
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        got.insert(next_text(&mut rx).await);
    }
    let want: BTreeSet<String> = ["straggler", "fresh 1", "fresh 2"].map(String::from).into();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_new_file_is_read_from_its_beginning_after_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut old = append(&log);
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    write(&mut old, "before\n");
    assert_eq!(next_text(&mut rx).await, "before");
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    // Written in one go with the creation: nothing of it may be taken as "old content".
    std::fs::write(&log, "first of new\nsecond of new\n").unwrap();
    assert_eq!(next_text(&mut rx).await, "first of new");
    assert_eq!(next_text(&mut rx).await, "second of new");
}

#[tokio::test]
async fn copytruncate_is_read_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut w = append(&log);
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    // Longer than what follows the truncation: a truncation is seen as the file getting
    // shorter than what was read (a file refilled past that before the tailer looks cannot be
    // told from one that grew; logrotate's copytruncate has that window too).
    let long = "x".repeat(200);
    write(&mut w, &format!("{long}\n"));
    assert_eq!(next_text(&mut rx).await, long);

    std::fs::copy(&log, dir.path().join("access.log.1")).unwrap();
    // copytruncate truncates through its own handle; the writer appends on (O_APPEND).
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    write(&mut w, "after truncate\n");
    assert_eq!(next_text(&mut rx).await, "after truncate");
    write(&mut w, "and on\n");
    assert_eq!(next_text(&mut rx).await, "and on");
}

#[tokio::test]
async fn a_log_deleted_and_recreated_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("php8.2-fpm.log");
    let mut w = append(&log);
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    write(&mut w, "one\n");
    assert_eq!(next_text(&mut rx).await, "one");
    drop(w);
    std::fs::remove_file(&log).unwrap();
    let mut w = append(&log);
    write(&mut w, "two\n");
    assert_eq!(next_text(&mut rx).await, "two");
    write(&mut w, "three\n");
    assert_eq!(next_text(&mut rx).await, "three");
}

#[tokio::test]
async fn a_log_that_does_not_exist_yet_is_read_once_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("later.log");
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    let mut w = append(&log);
    // Created after the start: read from its beginning even though the start was End.
    write(&mut w, "first\n");
    assert_eq!(next_text(&mut rx).await, "first");
    write(&mut w, "second\n");
    assert_eq!(next_text(&mut rx).await, "second");
}

#[tokio::test]
async fn a_log_whose_directory_does_not_exist_yet_is_read_once_both_appear() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("var/log/nginx/error.log");
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    std::fs::create_dir(dir.path().join("var")).unwrap();
    std::fs::create_dir(dir.path().join("var/log")).unwrap();
    std::fs::create_dir(dir.path().join("var/log/nginx")).unwrap();
    let mut w = append(&log);
    write(&mut w, "appeared\n");
    assert_eq!(next_text(&mut rx).await, "appeared");
    write(&mut w, "and grew\n");
    assert_eq!(next_text(&mut rx).await, "and grew");
}

#[tokio::test]
async fn a_log_directory_deleted_and_recreated_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("nginx");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("error.log");
    let mut w = append(&log);
    let (_tailer, mut rx) = start(&[&log], StartAt::End);
    write(&mut w, "before\n");
    assert_eq!(next_text(&mut rx).await, "before");
    drop(w);
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::create_dir(&logs).unwrap();
    let mut w = append(&log);
    write(&mut w, "after\n");
    assert_eq!(next_text(&mut rx).await, "after");
    // The new directory is watched itself, not only found by the first event in it.
    write(&mut w, "and on\n");
    assert_eq!(next_text(&mut rx).await, "and on");
}

#[tokio::test]
async fn many_logs_in_several_directories_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for d in 0..4 {
        std::fs::create_dir(dir.path().join(format!("d{d}"))).unwrap();
        for f in 0..8 {
            paths.push(dir.path().join(format!("d{d}/f{f}.log")));
        }
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let (_tailer, mut rx) = start(&refs, StartAt::End);
    let mut writers: Vec<File> = paths.iter().map(|p| append(p)).collect();
    let mut want = BTreeSet::new();
    for round in 0..3 {
        for (i, w) in writers.iter_mut().enumerate() {
            write(w, &format!("{i} {round}\n"));
            want.insert((paths[i].clone(), format!("{i} {round}")));
        }
    }
    let mut got = BTreeSet::new();
    while got.len() < want.len() {
        let line = next(&mut rx).await;
        got.insert((line.path, String::from_utf8(line.bytes).unwrap()));
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn the_same_log_named_twice_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    let (_tailer, mut rx) = start(&[&log, &log], StartAt::End);
    write(&mut w, "once\n");
    write(&mut w, "twice\n");
    assert_eq!(next_text(&mut rx).await, "once");
    assert_eq!(next_text(&mut rx).await, "twice");
}

#[tokio::test]
async fn a_line_over_the_maximum_is_cut_counted_and_the_next_line_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    let (tailer, mut rx) = start(&[&log], StartAt::End);
    let huge = vec![b'a'; MAX_LINE * 3 + 17];
    w.write_all(&huge).unwrap();
    w.write_all(b"\nafter\n").unwrap();
    let cut = next(&mut rx).await;
    assert_eq!(cut.bytes.len(), MAX_LINE);
    assert!(cut.bytes.iter().all(|&b| b == b'a'));
    assert_eq!(next_text(&mut rx).await, "after");
    assert_eq!(tailer.truncated(), 1);
    assert_eq!(tailer.dropped(), 1);
}

#[tokio::test]
async fn a_line_of_exactly_the_maximum_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    let (tailer, mut rx) = start(&[&log], StartAt::End);
    let mut exact = vec![b'b'; MAX_LINE];
    exact.push(b'\n');
    w.write_all(&exact).unwrap();
    assert_eq!(next(&mut rx).await.bytes.len(), MAX_LINE);
    assert_eq!(tailer.truncated(), 0);
}

#[tokio::test]
async fn lines_the_receiver_is_gone_for_are_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let mut w = append(&log);
    let (tailer, rx) = start(&[&log], StartAt::End);
    drop(rx);
    write(&mut w, "nobody reads this\n");
    let deadline = std::time::Instant::now() + DEADLINE;
    while tailer.dropped() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lost line was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tailer.dropped(), 1);
}

#[tokio::test]
async fn a_slow_receiver_loses_nothing() {
    // A channel of one: the tailer has to wait for room for every line.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut w = append(&log);
    let (tx, mut rx) = mpsc::channel(1);
    let tailer = Tailer::spawn(vec![log.clone()], StartAt::End, tx).unwrap();
    let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    write(&mut w, &text);
    for i in 0..2000 {
        assert_eq!(next_text(&mut rx).await, format!("line {i}"));
    }
    assert_eq!(tailer.dropped(), 0);
}

/// `gatemend-agent tail` as an operator runs it: the old content with --from-start, then a
/// line written later, each classified and with its path.
#[test]
fn the_tail_command_prints_each_line_classified_with_its_path() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let later = dir.path().join("later.log");
    std::fs::write(
        &log,
        "2026/11/21 03:15:03 [notice] 1#1: signal process started\n",
    )
    .unwrap();
    // Killed when the test ends, passed or failed: `tail` runs until interrupted.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatemend-agent"))
        .arg("tail")
        .arg(&log)
        .arg(&later)
        .arg("--from-start")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("a line from gatemend-agent tail");
        serde_json::from_str(&line).unwrap()
    };
    let first = next();
    assert_eq!(first["path"], log.to_str().unwrap());
    assert_eq!(first["cause"], "none");

    let crit = "2026/11/21 03:15:03 [crit] 812#812: *7 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 10.77.1.1, server: _, request: \"GET /index.php HTTP/1.0\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"10.77.1.2\"\n";
    write(&mut append(&later), crit);
    let second = next();
    assert_eq!(second["path"], later.to_str().unwrap());
    assert_eq!(second["cause"], "upstream_socket_missing");
    assert_eq!(second["upstream"], "unix:/run/php/php8.2-fpm.sock");
}
