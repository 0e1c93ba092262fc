//! A host whose agent runs under a 63-character name, as on a cloud fleet
//! (`ip-10-0-1-23.eu-west-1.compute.internal...`), is mended end to end with the shipped
//! policies: php-fpm stopped, the controller restarts it through the agent, PHP answers again.
//!
//! Every action id carries the host name (`{host}/{cause}/{upstream}#{time}@{rev}/{policy}/{i}`).
//! The agent's ledger used to name its files `hex(id).started`: twice the id's length, over the
//! 255 bytes a file name may have once the host name is long. The first action then failed
//! with ENAMETOOLONG, the error ended the agent, systemd restarted it, and the controller sent
//! the same action again: a crash loop, and php-fpm never restarted. The test asserts the id it
//! saw would have overflowed that layout, and that the agent never restarted.
//!
//! The binaries must be built first: `cargo build --workspace --bins`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gatemend_tests::stack::{AGENT_UNIT, Stack, StackSpec};
use gatemend_tests::testbed::{Host, http};
use sha2::{Digest, Sha256};

/// 63 characters: the longest DNS label, and an EC2-style name padded to it.
const LONG_NAME: &str = "ip-10-0-1-23.eu-west-1.compute.internal-gatemend-long-hostname0";
/// The agent's ledger inside the host (`state_dir` of the stack's config, then `actions/`).
const LEDGER_INSIDE: &str = "/var/lib/gatemend/state/actions";

/// Requests from outside until nginx answers `status`.
fn until_status(host: &Host, path: &str, status: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from((host.host_addr(), 80));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http::get(addr, path).is_ok_and(|r| r.status == status) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn php_fpm_stopped_on_a_host_with_a_63_character_name_is_restarted_and_php_answers() {
    let name = LONG_NAME;
    assert_eq!(name.len(), 63);
    let spec = StackSpec {
        agent_host_names: vec![name.to_owned()],
        ..StackSpec::shipped(1)
    };
    let stack = match Stack::start(&spec) {
        Ok(stack) => stack,
        Err(e) => panic!("{e:#}"),
    };
    assert_eq!(stack.agent_name(0), name);
    let web = &stack.hosts()[0];

    web.exec(&["systemctl", "stop", "php8.2-fpm"]).unwrap();
    // Traffic makes nginx fail, and then succeed again once php-fpm is back.
    let served = until_status(web, "/index.php", 200, Duration::from_secs(60));
    if !served {
        // The stack keeps its files when a test panics.
        panic!(
            "PHP was not served again on {name}; agent journal:\n{}\ncontroller log:\n{}",
            web.sh(&format!(
                "journalctl -u {AGENT_UNIT} -o cat --no-pager | tail -40"
            ))
            .unwrap_or_default(),
            stack.controller().unwrap().log()
        );
    }
    let ctl = stack.controller().unwrap();
    ctl.wait_for("the verified result", Duration::from_secs(30), |l| {
        l.says("Action succeeded and verified.") && l.field("host").as_deref() == Some(name)
    })
    .unwrap();
    assert_eq!(
        web.unit_property("php8.2-fpm.service", "ActiveState")
            .unwrap(),
        "active"
    );
    let page = http::get(SocketAddr::from((web.host_addr(), 80)), "/index.php").unwrap();
    assert_eq!(page.status, 200, "{}", page.body);

    // The audit holds the restart, dispatched and succeeded, under the long name.
    let records = stack.audit_records().unwrap();
    let about = |kind: &str| -> Vec<&serde_json::Value> {
        records
            .iter()
            .filter(|r| r["kind"] == kind && r["host"] == name)
            .collect()
    };
    let dispatched = about("action_dispatched");
    assert_eq!(dispatched.len(), 1, "{dispatched:?}");
    assert_eq!(dispatched[0]["body"]["kind"], "restart_unit");
    assert_eq!(dispatched[0]["body"]["unit"], "php8.2-fpm.service");
    let id = dispatched[0]["body"]["action_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with(&format!("{name}/")), "{id}");
    // What the old ledger would have named its file: more than a file name may hold.
    assert!(
        2 * id.len() + ".started".len() > 255,
        "the id {id} ({} bytes) would not have overflowed the old hex layout",
        id.len()
    );
    let results = about("action_result");
    assert!(
        results
            .iter()
            .any(|r| r["body"]["action_id"] == id.as_str() && r["body"]["status"] == "succeeded"),
        "{results:?}"
    );

    // The agent noted the action under a bounded name, the id inside, and never restarted.
    let stem = hex(&Sha256::digest(id.as_bytes()));
    assert_eq!(
        web.read(&format!("{LEDGER_INSIDE}/{stem}.started"))
            .unwrap(),
        id
    );
    assert!(
        web.exec(&["test", "-s", &format!("{LEDGER_INSIDE}/{stem}.result")])
            .is_ok(),
        "the result is kept in the ledger"
    );
    assert_eq!(web.unit_property(AGENT_UNIT, "NRestarts").unwrap(), "0");
    assert_eq!(
        web.unit_property(AGENT_UNIT, "ActiveState").unwrap(),
        "active"
    );
    stack.verify_audit().unwrap();
}
