//! The nginx and TCP listener probes on real hosts: `gatemend-agent probe nginx` and
//! `gatemend-agent probe listeners` run inside a host against its real nginx, php-fpm and
//! systemd.

use std::path::{Path, PathBuf};

use gatemend_tests::testbed::{Fleet, Host, HostSpec, binaries};

#[track_caller]
fn boot() -> Fleet {
    let agent = binaries::path("gatemend-agent").unwrap();
    let spec = HostSpec::default().bind_ro(agent, agent_inside());
    match Fleet::boot(1, &spec) {
        Ok(fleet) => fleet,
        Err(e) => panic!("testbed: {:#}", anyhow::Error::from(e)),
    }
}

fn agent_inside() -> String {
    format!("{}/gatemend-agent", binaries::HOST_BIN_DIR)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/nginx")
}

/// Records `agent/tests/fixtures/nginx/*.txt` from a fresh host (see the README there):
/// `cargo test -p gatemend-tests --test probe_host -- --ignored record_nginx_fixtures`.
#[test]
#[ignore = "records fixtures; run deliberately, then read the diff"]
fn record_nginx_fixtures() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    std::fs::write(fixtures().join("debian_default.txt"), nginx_t(host)).unwrap();

    let extra = std::fs::read_to_string(fixtures().join("upstreams.conf")).unwrap();
    host.write("/etc/nginx/conf.d/upstreams.conf", &extra).unwrap();
    host.sh("echo '127.0.0.1 backend.example app.internal' >> /etc/hosts").unwrap();
    std::fs::write(fixtures().join("upstreams.txt"), nginx_t(host)).unwrap();
}

/// The bytes `nginx -T` prints on stdout, as they are (the fixtures keep them exactly).
#[track_caller]
fn nginx_t(host: &Host) -> Vec<u8> {
    let out = host.output(&["nginx", "-T"]).unwrap();
    assert!(
        out.status.success(),
        "nginx -T: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
