//! reload_nginx on real hosts: a valid change is reloaded (same master, all workers new, the
//! change live); a broken config is not reloaded (nginx -t's error in the result, the same
//! workers keep serving the old config).

mod act_support;

use act_support::{act, boot, get, nginx_pids};

#[test]
fn a_valid_change_is_reloaded_with_new_workers_and_is_live() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let (master, workers) = nginx_pids(host);
    assert!(get(host, 8081, "/").is_err(), "nothing listens on 8081 yet");
    host.write(
        "/etc/nginx/conf.d/gatemend-reload.conf",
        "server { listen 8081; return 200 \"reloaded\\n\"; }\n",
    )
    .unwrap();

    let reloaded = act(host, &["reload_nginx"]);
    assert_eq!(reloaded.code, 0, "{reloaded}");
    assert_eq!(reloaded.status(), "succeeded", "{reloaded}");
    assert_eq!(
        reloaded.step_names(),
        ["precheck", "precheck", "do", "verify"],
        "{reloaded}"
    );
    assert!(
        reloaded.step("precheck").contains("$ /usr/sbin/nginx -t"),
        "{reloaded}"
    );
    assert!(
        reloaded.step("precheck").contains("test is successful"),
        "{reloaded}"
    );
    assert!(
        reloaded
            .step("do")
            .contains("ReloadUnit(\"nginx.service\", \"replace\")"),
        "{reloaded}"
    );
    assert!(reloaded.step("verify").contains("HTTP/1.1"), "{reloaded}");

    let (master_after, workers_after) = nginx_pids(host);
    assert_eq!(master_after, master);
    assert!(!workers_after.is_empty());
    assert!(
        workers_after.iter().all(|w| !workers.contains(w)),
        "{workers:?} -> {workers_after:?}"
    );
    let page = get(host, 8081, "/").unwrap();
    assert_eq!((page.status, page.body.as_str()), (200, "reloaded\n"));
}

#[test]
fn a_broken_config_is_not_reloaded_and_the_old_workers_keep_serving() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let (master, workers) = nginx_pids(host);
    host.write(
        "/etc/nginx/conf.d/gatemend-broken.conf",
        "server { listen 8082; gatemend_bogus on; }\n",
    )
    .unwrap();

    let refused = act(host, &["reload_nginx"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused.message().contains("nothing was reloaded"),
        "{refused}"
    );
    assert!(
        refused
            .message()
            .contains("unknown directive \"gatemend_bogus\""),
        "{refused}"
    );
    let precheck = refused.step("precheck");
    assert!(
        precheck.contains("/etc/nginx/conf.d/gatemend-broken.conf:1"),
        "{refused}"
    );
    assert!(precheck.contains("test failed"), "{refused}");
    assert!(
        !refused.step_names().contains(&"do".to_owned()),
        "{refused}"
    );

    assert_eq!(nginx_pids(host), (master, workers), "nothing was reloaded");
    assert!(
        get(host, 8082, "/").is_err(),
        "the broken server is not live"
    );
    let page = get(host, 80, "/index.nginx-debian.html").unwrap();
    assert_eq!(page.status, 200, "nginx keeps serving the old config");
}

#[test]
fn nginx_outside_systemd_is_reloaded_by_sighup_to_the_master_from_its_pid_file() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    // The config names a unit that does not exist: nginx counts as not run by systemd.
    let mut config = act_support::CONFIG.to_owned();
    config.push_str("  nginx_unit: gatemend-no-such-nginx.service\n");
    host.write("/etc/gatemend/agent.yaml", &config).unwrap();
    let (master, workers) = nginx_pids(host);

    let reloaded = act(host, &["reload_nginx"]);
    assert_eq!(reloaded.code, 0, "{reloaded}");
    assert!(
        reloaded
            .step("do")
            .contains(&format!("SIGHUP -> master {master} (from /run/nginx.pid)")),
        "{reloaded}"
    );
    let (master_after, workers_after) = nginx_pids(host);
    assert_eq!(master_after, master);
    assert!(
        workers_after.iter().all(|w| !workers.contains(w)),
        "{workers:?} -> {workers_after:?}"
    );
}
