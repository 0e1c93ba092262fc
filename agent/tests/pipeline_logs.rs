//! Which logs the agent reads, from the real `nginx -T` of a testbed host
//! (fixtures/nginx/debian_default.txt).

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use gatemend_agent::diagnose::Probes;
use gatemend_agent::pipeline::{access_logs, log_paths};
use gatemend_agent::probe::nginx;

fn debian() -> Probes {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nginx/debian_default.txt"
    ))
    .unwrap();
    Probes {
        nginx: Some(nginx::parse(&text)),
        ..Probes::default()
    }
}

#[test]
fn the_error_log_nginx_names_is_tailed_and_its_access_log_counted() {
    let p = debian();
    let root = tempfile::tempdir().unwrap();
    let paths = log_paths(&p, root.path(), &[PathBuf::from("/var/log/extra.log")]);
    assert_eq!(
        paths,
        [
            PathBuf::from("/var/log/nginx/error.log"),
            PathBuf::from("/var/log/extra.log")
        ]
    );
    let access = access_logs(&p);
    assert_eq!(
        access.keys().collect::<Vec<_>>(),
        [&PathBuf::from("/var/log/nginx/access.log")]
    );
}

#[test]
fn without_an_error_log_directive_nginx_default_is_tailed() {
    let root = tempfile::tempdir().unwrap();
    assert_eq!(
        log_paths(&Probes::default(), root.path(), &[]),
        [PathBuf::from("/var/log/nginx/error.log")]
    );
}
