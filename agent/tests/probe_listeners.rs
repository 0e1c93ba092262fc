//! The TCP listener probe: `/proc/net/tcp{,6}` text recorded on a testbed host, cgroup files,
//! address matching, and a real `/proc` (this test process's own listener).

// Test helpers panic on what a test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use gatemend_agent::probe::listeners::{self, Listener};

/// `/proc/net/tcp` on a testbed host: python on 127.0.0.1:3000 (inode 511853), nginx on
/// 0.0.0.0:80 (509134), two TIME_WAIT connections to 10.77.1.2:80 (state 06). Trailing spaces
/// are the kernel's.
const TCP: &str = r#"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 511853 1 0000000026349129 100 0 0 10 0                    
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 509134 1 00000000966ab9f4 100 0 0 10 0                    
   2: 02014D0A:0050 01014D0A:BE4C 06 00000000:00000000 03:00000954 00000000     0        0 0 3 00000000803122cd                                      
   3: 02014D0A:0050 01014D0A:BE58 06 00000000:00000000 03:00000954 00000000     0        0 0 3 000000005f4fe6ef                                      
"#;

/// `/proc/net/tcp6` on the same host: a socket bound to the v4-mapped ::ffff:127.0.0.1:3002,
/// one on [::1]:3001, nginx on [::]:80.
const TCP6: &str = r#"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:0BBA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 512404 1 00000000215e97b4 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 512162 1 00000000f394021d 100 0 0 10 0
   2: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 509135 1 000000003a469293 100 0 0 10 0
"#;

fn addrs(listeners: &[Listener]) -> Vec<(String, u64)> {
    listeners
        .iter()
        .map(|l| (l.addr.to_string(), l.inode))
        .collect()
}

fn listener(addr: &str) -> Listener {
    Listener {
        addr: addr.parse().unwrap(),
        inode: 1,
        pids: Vec::new(),
        unit: None,
        process: None,
    }
}

#[test]
fn ipv4_listeners_are_decoded_and_connections_skipped() {
    let found = listeners::parse_proc_net_tcp(TCP, false);
    assert_eq!(
        addrs(&found),
        [
            ("127.0.0.1:3000".to_owned(), 511853),
            ("0.0.0.0:80".to_owned(), 509134)
        ]
    );
    assert!(found.iter().all(|l| l.pids.is_empty() && l.unit.is_none()));
}

#[test]
fn ipv6_listeners_are_decoded_with_v4_mapped_as_v4() {
    let found = listeners::parse_proc_net_tcp(TCP6, true);
    assert_eq!(
        addrs(&found),
        [
            ("127.0.0.1:3002".to_owned(), 512404),
            ("[::1]:3001".to_owned(), 512162),
            ("[::]:80".to_owned(), 509135),
        ]
    );
}

#[test]
fn the_wrong_family_reads_nothing() {
    assert!(listeners::parse_proc_net_tcp(TCP, true).is_empty());
    assert!(listeners::parse_proc_net_tcp(TCP6, false).is_empty());
}

#[test]
fn garbage_lines_are_skipped() {
    let text = "\
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1
   1: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1
   2: 0100007G:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9 1
   3: 0100007F:10000 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10 1
   4: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 x 1
   5: 0100007F:0050 00000000:0000 0A
   6: \u{e9}\u{e9}\u{e9}\u{e9}:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11 1
";
    assert_eq!(
        addrs(&listeners::parse_proc_net_tcp(text, false)),
        [("127.0.0.1:3000".to_owned(), 7)]
    );
}

#[test]
fn random_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7463703a);
    let alphabet = b"0123456789ABCDEFabcdef: \n0A";
    for round in 0..2000 {
        let len = rng.random_range(0..300);
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..len).map(|_| rng.random()).collect()
        } else {
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        };
        let text = String::from_utf8_lossy(&bytes);
        let _ = listeners::parse_proc_net_tcp(&text, round % 3 == 0);
        let _ = listeners::unit_of_cgroup(&text);
    }
}

#[test]
fn unit_from_cgroup_files() {
    // A testbed host (hybrid hierarchy, seen from inside the host).
    let nginx = "9:name=systemd:/system.slice/nginx.service\n8:pids:/\n4:memory:/\n0::/system.slice/nginx.service\n";
    assert_eq!(
        listeners::unit_of_cgroup(nginx).as_deref(),
        Some("nginx.service")
    );
    let init = "9:name=systemd:/init.scope\n8:pids:/\n0::/init.scope\n";
    assert_eq!(
        listeners::unit_of_cgroup(init).as_deref(),
        Some("init.scope")
    );
    // Pure v2; a service with its own sub-cgroups; a host seen from outside its container.
    assert_eq!(
        listeners::unit_of_cgroup("0::/system.slice/php8.2-fpm.service\n").as_deref(),
        Some("php8.2-fpm.service")
    );
    assert_eq!(
        listeners::unit_of_cgroup("0::/system.slice/app.service/workers/w1\n").as_deref(),
        Some("app.service")
    );
    assert_eq!(
        listeners::unit_of_cgroup(
            "0::/machine.slice/systemd-nspawn@web1.service/payload/system.slice/nginx.service\n"
        )
        .as_deref(),
        Some("nginx.service")
    );
    // A login session.
    assert_eq!(
        listeners::unit_of_cgroup("0::/user.slice/user-0.slice/session-3.scope\n").as_deref(),
        Some("session-3.scope")
    );
    // Hybrid with an empty unified hierarchy: systemd's named one still says.
    assert_eq!(
        listeners::unit_of_cgroup("9:name=systemd:/system.slice/cron.service\n0::/\n").as_deref(),
        Some("cron.service")
    );
    // No unit: outside systemd (this machine's test processes), or garbage.
    for text in [
        "0::/\n",
        "9:name=systemd:/../../..\n0::/../../..\n",
        "",
        "::::",
        "0::/.service\n",
    ] {
        assert_eq!(listeners::unit_of_cgroup(text), None, "{text:?}");
    }
}

#[test]
fn listening_on_prefers_the_exact_address_then_a_wildcard() {
    let all = [
        listener("0.0.0.0:80"),
        listener("127.0.0.1:80"),
        listener("[::]:81"),
        listener("[::1]:3001"),
        listener("127.0.0.1:3000"),
        listener("0.0.0.0:8080"),
    ];
    let on = |host: &str, port: u16| listeners::listening_on(&all, host, port).map(|l| l.addr);
    let addr = |a: &str| Some(a.parse::<SocketAddr>().unwrap());
    assert_eq!(on("127.0.0.1", 80), addr("127.0.0.1:80"));
    assert_eq!(on("10.77.1.2", 80), addr("0.0.0.0:80"));
    assert_eq!(
        on("backend.example", 80),
        addr("0.0.0.0:80"),
        "a name: a wildcard"
    );
    assert_eq!(on("127.0.0.1", 81), addr("[::]:81"), ":: accepts IPv4 too");
    assert_eq!(on("[::1]", 81), addr("[::]:81"));
    assert_eq!(on("::1", 3001), addr("[::1]:3001"));
    assert_eq!(on("[::1]", 3001), addr("[::1]:3001"));
    assert_eq!(on("127.0.0.1", 3001), None, "[::1] does not accept IPv4");
    assert_eq!(on("localhost", 3001), addr("[::1]:3001"));
    assert_eq!(on("localhost", 3000), addr("127.0.0.1:3000"));
    assert_eq!(on("::ffff:127.0.0.1", 3000), addr("127.0.0.1:3000"));
    assert_eq!(on("10.0.0.1", 3000), None, "bound to loopback only");
    assert_eq!(on("::1", 8080), None, "0.0.0.0 does not accept IPv6");
    assert_eq!(on("127.0.0.1", 9), None);
}

#[test]
fn read_finds_this_process_listening() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let found = listeners::read(Path::new("/proc")).unwrap();
    let me = found
        .iter()
        .find(|l| l.addr == addr)
        .unwrap_or_else(|| panic!("{addr} not among {found:#?}"));
    assert_eq!(me.pids, [std::process::id()]);
    assert!(me.inode != 0);
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(me.process.as_deref(), Some(comm.trim_end()));
    drop(socket);
    let after = listeners::read(Path::new("/proc")).unwrap();
    assert!(
        after.iter().all(|l| l.addr != addr),
        "closed, no longer listed"
    );
}

#[test]
fn read_of_a_missing_proc_says_which_file() {
    let err = listeners::read(Path::new("/nonexistent/proc")).unwrap_err();
    assert_eq!(err.to_string(), "cannot read /nonexistent/proc/net/tcp");
}
