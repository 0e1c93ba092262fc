//! The testbed itself, on real hosts: they boot, serve HTTP at their own addresses, answer
//! D-Bus calls from their real systemd, and run php-fpm with the pool's socket owner and mode.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use gatemend_agent::probe::php_fpm;
use gatemend_agent::probe::systemd::Systemd;
use gatemend_tests::testbed::{Fleet, HostSpec, http};

#[track_caller]
fn boot(count: usize) -> Fleet {
    Fleet::boot_for_test(count, &HostSpec::default())
}

#[test]
fn two_hosts_boot_with_their_own_names_addresses_and_systemd() {
    let fleet = boot(2);
    let [a, b] = fleet.hosts() else {
        panic!("expected two hosts")
    };
    assert_ne!(a.name(), b.name());
    assert_ne!(a.host_addr(), b.host_addr());
    for host in fleet.hosts() {
        assert_eq!(
            host.exec(&["systemctl", "is-system-running"])
                .unwrap()
                .trim(),
            "running"
        );
        assert_eq!(host.exec(&["hostname"]).unwrap().trim(), host.name());
        let addrs = host
            .exec(&["ip", "-4", "-o", "addr", "show", "host0"])
            .unwrap();
        assert!(
            addrs.contains(&format!("{}/24", host.host_addr())),
            "{addrs}"
        );
    }
}

#[test]
fn nginx_on_each_host_answers_http_at_its_own_address() {
    let fleet = boot(2);
    for host in fleet.hosts() {
        let addr = SocketAddr::from((host.host_addr(), 80));
        let page = http::get(addr, "/index.nginx-debian.html").unwrap();
        assert_eq!(page.status, 200, "{addr}: {}", page.body);
        assert!(page.body.contains("Welcome to nginx"), "{}", page.body);
        // PHP through the php-fpm socket: the page names the host that ran it.
        let php = http::get(addr, "/index.php").unwrap();
        assert_eq!(php.status, 200, "{addr}: {}", php.body);
        assert_eq!(php.body.trim(), format!("php ok on {}", host.name()));
    }
}

#[test]
fn restart_unit_over_dbus_restarts_php_fpm_with_a_new_main_pid() {
    let fleet = boot(1);
    let host = &fleet.hosts()[0];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let systemd = Systemd::at_address(&host.bus_address()).await.unwrap();
        let before = systemd.unit_state("php8.2-fpm.service").await.unwrap();
        assert_eq!(before.active_state, "active");
        let old_pid = before.main_pid.unwrap();
        assert_ne!(old_pid, 0);

        let job = systemd
            .manager()
            .await
            .unwrap()
            .restart_unit("php8.2-fpm.service", "replace")
            .await
            .unwrap();
        assert!(
            job.as_str().starts_with("/org/freedesktop/systemd1/job/"),
            "{}",
            job.as_str()
        );

        let deadline = Instant::now() + Duration::from_secs(30);
        let after = loop {
            let state = systemd.unit_state("php8.2-fpm.service").await.unwrap();
            if state.active_state == "active"
                && state.main_pid.is_some_and(|p| p != 0 && p != old_pid)
            {
                break state;
            }
            assert!(
                Instant::now() < deadline,
                "php8.2-fpm did not come back: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(after.sub_state, "running");
        // The MainPID seen over D-Bus is the one systemctl reports inside the host.
        assert_eq!(
            host.unit_property("php8.2-fpm.service", "MainPID").unwrap(),
            after.main_pid.unwrap().to_string()
        );
    });
}

#[test]
fn php_fpm_socket_exists_with_its_pools_owner_and_mode() {
    let fleet = boot(1);
    let host = &fleet.hosts()[0];
    let pools = php_fpm::read_pools(&host.path("/")).unwrap();
    let www = pools
        .iter()
        .find(|p| p.name == "www")
        .expect("the www pool");
    assert_eq!(www.unit().as_deref(), Some("php8.2-fpm.service"));
    let socket = www.socket_path().expect("www listens on a unix socket");
    assert_eq!(socket, "/run/php/php8.2-fpm.sock");

    let meta = std::fs::metadata(host.path(socket)).unwrap();
    assert!(meta.file_type().is_socket(), "{socket} is not a socket");
    let passwd = host.read("/etc/passwd").unwrap();
    let group = host.read("/etc/group").unwrap();
    assert_eq!(Some(name_of(&passwd, meta.uid())), www.listen_owner.clone());
    assert_eq!(Some(name_of(&group, meta.gid())), www.listen_group.clone());
    assert_eq!(
        format!("{:04o}", meta.permissions().mode() & 0o7777),
        www.listen_mode
    );
    assert!(Path::new(&host.path("/run/php/php8.2-fpm.pid")).exists());
}

/// The name of a uid/gid in a passwd/group file's text.
fn name_of(db: &str, id: u32) -> String {
    db.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&id.to_string().as_str()))
        .map(|f| f[0].to_owned())
        .unwrap_or_else(|| panic!("id {id} not in the host's database"))
}
