//! The php-fpm pool editor on a pool file as Debian ships it: `pm.max_children` changed or
//! added in exactly one pool, everything else kept, and refusals where they are due.

// Test helpers panic on what a test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use gatemend_agent::edit::{EditError, PoolEdit, PoolKey, apply_pool_edit, sha256_hex};
use gatemend_agent::probe::php_fpm::parse_pools;

const FILE: &str = "/etc/php/8.2/fpm/pool.d/www.conf";

/// An excerpt of Debian bookworm's `/etc/php/8.2/fpm/pool.d/www.conf`, its comments kept.
const WWW: &str = "; Start a new pool named 'www'.
; the variable $pool can be used in any directive and will be replaced by the
; pool name ('www' here)
[www]

; Unix user/group of the child processes.
user = www-data
group = www-data

listen = /run/php/php8.2-fpm.sock

listen.owner = www-data
listen.group = www-data
;listen.mode = 0660

; Choose how the process manager will control the number of child processes.
pm = dynamic

; The number of child processes to be created when pm is set to 'static' and the
; maximum number of child processes when pm is set to 'dynamic' or 'ondemand'.
; Note: Used when pm is set to 'static', 'dynamic' or 'ondemand'
; Note: This value is mandatory.
pm.max_children = 5

; The number of child processes created on startup.
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
;pm.max_requests = 500
";

fn edit(pool: &str, old: Option<&str>, new: &str) -> PoolEdit {
    PoolEdit {
        file: PathBuf::from(FILE),
        pool: pool.to_owned(),
        key: PoolKey::MaxChildren,
        old: old.map(str::to_owned),
        new: new.to_owned(),
    }
}

fn max_children(text: &str, pool: &str) -> Option<u32> {
    parse_pools(Path::new(FILE), text)
        .into_iter()
        .find(|p| p.name == pool)
        .and_then(|p| p.max_children)
}

#[test]
fn max_children_is_raised_by_exactly_its_value() {
    let result = apply_pool_edit(WWW, &edit("www", Some("5"), "12")).unwrap();
    assert_eq!(
        result.new_text,
        WWW.replace("pm.max_children = 5\n", "pm.max_children = 12\n")
    );
    assert_eq!(
        result.diff,
        "--- a/etc/php/8.2/fpm/pool.d/www.conf\n+++ b/etc/php/8.2/fpm/pool.d/www.conf\n\
         @@ -20,7 +20,7 @@\n \
         ; maximum number of child processes when pm is set to 'dynamic' or 'ondemand'.\n \
         ; Note: Used when pm is set to 'static', 'dynamic' or 'ondemand'\n \
         ; Note: This value is mandatory.\n\
         -pm.max_children = 5\n\
         +pm.max_children = 12\n \
         \n \
         ; The number of child processes created on startup.\n \
         pm.start_servers = 2\n"
    );
    assert_eq!(result.sha256_before, sha256_hex(WWW));
    assert_eq!(result.sha256_after, sha256_hex(&result.new_text));
    assert_eq!(result.lines, [23]);
    assert_eq!(max_children(&result.new_text, "www"), Some(12));
}

#[test]
fn stale_hostile_and_absent_are_refused() {
    assert_eq!(
        apply_pool_edit(WWW, &edit("www", Some("8"), "12")).unwrap_err(),
        EditError::Stale {
            file: PathBuf::from(FILE),
            line: 23,
            what: "pm.max_children".into(),
            expected: "8".into(),
            found: "5".into(),
        }
    );
    for hostile in [
        "12\nuser = root",
        "12 ; comment",
        "12\"",
        "$pool",
        "0",
        "-1",
        "twelve",
        "99999999999",
        "",
    ] {
        assert!(
            matches!(
                apply_pool_edit(WWW, &edit("www", Some("5"), hostile)),
                Err(EditError::Value { .. })
            ),
            "{hostile:?}"
        );
    }
    assert_eq!(
        apply_pool_edit(WWW, &edit("api", Some("5"), "12")).unwrap_err(),
        EditError::PoolNotFound {
            file: PathBuf::from(FILE),
            pool: "api".into(),
        }
    );
    assert!(matches!(
        apply_pool_edit(WWW, &edit("www", None, "12")),
        Err(EditError::AlreadySet { line: 23, .. })
    ));
    assert!(matches!(
        apply_pool_edit(WWW, &edit("www", Some("5"), "5")),
        Err(EditError::NoChange { .. })
    ));
    let twice = format!("{WWW}pm.max_children = 7\n");
    assert!(matches!(
        apply_pool_edit(&twice, &edit("www", Some("5"), "12")),
        Err(EditError::Duplicate { ref lines, .. }) if *lines == [23, 30]
    ));
    let two_sections = format!("{WWW}[www]\nlisten = /run/other.sock\n");
    assert!(matches!(
        apply_pool_edit(&two_sections, &edit("www", Some("5"), "12")),
        Err(EditError::PoolAmbiguous { .. })
    ));
}

#[test]
fn only_the_named_pool_changes() {
    let text = format!(
        "{WWW}\n[api]\nuser = app\nlisten = /run/php/api.sock\npm = static\n  pm.max_children = 4\n"
    );
    let result = apply_pool_edit(&text, &edit("api", Some("4"), "6")).unwrap();
    assert_eq!(
        result.new_text,
        text.replace("  pm.max_children = 4\n", "  pm.max_children = 6\n")
    );
    assert_eq!(max_children(&result.new_text, "www"), Some(5));
    assert_eq!(max_children(&result.new_text, "api"), Some(6));
}

#[test]
fn a_missing_key_is_added_after_the_pools_last_line() {
    let text = "[www]\nuser = www-data\nlisten = /run/php/php8.2-fpm.sock\n\n[api]\n\tlisten = /run/php/api.sock\n";
    let result = apply_pool_edit(text, &edit("www", None, "10")).unwrap();
    assert_eq!(
        result.new_text,
        "[www]\nuser = www-data\nlisten = /run/php/php8.2-fpm.sock\npm.max_children = 10\n\n[api]\n\tlisten = /run/php/api.sock\n"
    );
    let result = apply_pool_edit(text, &edit("api", None, "3")).unwrap();
    assert!(
        result
            .new_text
            .ends_with("[api]\n\tlisten = /run/php/api.sock\n\tpm.max_children = 3\n")
    );
    // An empty pool at the end of a file without a final newline.
    let result = apply_pool_edit("[www]", &edit("www", None, "2")).unwrap();
    assert_eq!(result.new_text, "[www]\npm.max_children = 2\n");
    assert_eq!(max_children(&result.new_text, "www"), Some(2));
}

#[test]
fn quoted_and_crlf_values() {
    let text = "[www]\r\npm.max_children = \"5\"\r\npm = dynamic\r\n";
    let result = apply_pool_edit(text, &edit("www", Some("5"), "9")).unwrap();
    assert_eq!(
        result.new_text,
        "[www]\r\npm.max_children = 9\r\npm = dynamic\r\n"
    );
    // A line added to a file with CRLF line ends ends the same way.
    let result = apply_pool_edit("[www]\r\npm = dynamic\r\n", &edit("www", None, "4")).unwrap();
    assert_eq!(
        result.new_text,
        "[www]\r\npm = dynamic\r\npm.max_children = 4\r\n"
    );
}

#[test]
fn an_edit_reads_back_from_json() {
    let json = r#"{"file":"/etc/php/8.2/fpm/pool.d/www.conf","pool":"www",
        "key":"pm.max_children","old":"5","new":"12"}"#;
    let parsed: PoolEdit = serde_json::from_str(json).unwrap();
    assert_eq!(parsed, edit("www", Some("5"), "12"));
    assert!(serde_json::from_str::<PoolEdit>(&json.replace("pm.max_children", "user")).is_err());
}

#[test]
fn any_text_never_panics() {
    // xorshift64*, fixed seed: a failure reproduces.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut successes = 0;
    for _ in 0..5_000 {
        let mut text = WWW.as_bytes().to_vec();
        for _ in 0..(next() % 4) {
            if text.is_empty() {
                break;
            }
            let at = (next() % text.len() as u64) as usize;
            match next() % 3 {
                0 => text.truncate(at),
                1 => text[at] = b"[]=;#\"\n\r x"[(next() % 10) as usize],
                _ => text.insert(at, b"[]=\n"[(next() % 4) as usize]),
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let old = match next() % 3 {
            0 => None,
            _ => Some("5"),
        };
        if let Ok(result) = apply_pool_edit(&text, &edit("www", old, "12")) {
            successes += 1;
            assert_eq!(max_children(&result.new_text, "www"), Some(12));
        }
    }
    assert!(successes > 0);
}
