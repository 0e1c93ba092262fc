//! fix_socket_ownership on real hosts: a socket chowned to root:root 0600 (nginx answers 502)
//! goes back to the pool's owner and mode and PHP is served again; a regular file or a symlink
//! at an allow-listed socket path is refused and left exactly as it was.

mod act_support;

use act_support::{PHP_SOCKET, act, assert_php_serves, boot, get, lstat, www_data};

#[test]
fn a_root_owned_socket_is_given_back_to_the_pools_owner_and_php_is_served_again() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    let (uid, gid) = www_data(host);
    host.sh(&format!(
        "chown root:root {PHP_SOCKET} && chmod 600 {PHP_SOCKET}"
    ))
    .unwrap();
    assert_eq!(get(host, 80, "/index.php").unwrap().status, 502);

    let fixed = act(host, &["fix_socket_ownership", "--socket", PHP_SOCKET]);
    assert_eq!(fixed.code, 0, "{fixed}");
    assert_eq!(fixed.status(), "succeeded", "{fixed}");
    assert_eq!(lstat(host, PHP_SOCKET), (uid, gid, 0o660, true, false));
    let done = fixed.step("do");
    assert!(
        done.contains(&format!(
            "chown {PHP_SOCKET} root:root (0:0) -> www-data:www-data ({uid}:{gid})"
        )),
        "{fixed}"
    );
    assert!(
        done.contains("chmod /run/php/php8.2-fpm.sock 0600 -> 0660"),
        "{fixed}"
    );
    let verify = fixed.step("verify");
    assert!(verify.contains("www-data (uid 33) may connect"), "{fixed}");
    assert!(verify.contains("connect() as www-data"), "{fixed}");
    assert!(
        !fixed.message().contains("pool file"),
        "the pool agrees: {fixed}"
    );
    assert_php_serves(host);
}

#[test]
fn values_the_pool_file_disagrees_with_are_applied_only_when_the_host_allows_them() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.sh(&format!(
        "chown root:root {PHP_SOCKET} && chmod 600 {PHP_SOCKET}"
    ))
    .unwrap();
    let args = [
        "fix_socket_ownership",
        "--socket",
        PHP_SOCKET,
        "--owner",
        "root",
        "--group",
        "www-data",
        "--mode",
        "0660",
    ];
    // The pool says www-data: another owner is the host's decision, not the request's.
    let refused = act(host, &args);
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused
            .message()
            .contains("this host's config does not allow `root`"),
        "{refused}"
    );
    assert_eq!(lstat(host, PHP_SOCKET), (0, 0, 0o600, true, false));
    let mut config = act_support::CONFIG.to_owned();
    config.push_str("  socket_ownership: { owners: [root] }\n");
    host.write("/etc/gatemend/agent.yaml", &config).unwrap();
    let fixed = act(host, &args);
    assert_eq!(fixed.code, 0, "{fixed}");
    let (_, gid) = www_data(host);
    assert_eq!(lstat(host, PHP_SOCKET), (0, gid, 0o660, true, false));
    assert!(
        fixed.message().contains("/etc/php/8.2/fpm/pool.d/www.conf"),
        "{fixed}"
    );
    assert!(
        fixed
            .message()
            .contains("the pool file is what makes this fix last"),
        "{fixed}"
    );
    assert_php_serves(host);
}

#[test]
fn a_regular_file_or_a_symlink_at_the_socket_path_is_refused_and_untouched() {
    let fleet = boot();
    let host = &fleet.hosts()[0];
    host.sh(&format!(
        "chown root:root {PHP_SOCKET} && chmod 600 {PHP_SOCKET}"
    ))
    .unwrap();

    let file = "/run/php/not-a-socket.sock";
    host.sh(&format!("echo data > {file} && chmod 600 {file}"))
        .unwrap();
    let refused = act(
        host,
        &[
            "fix_socket_ownership",
            "--socket",
            file,
            "--owner",
            "www-data",
            "--group",
            "www-data",
            "--mode",
            "0660",
        ],
    );
    assert_eq!(refused.code, 1, "{refused}");
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(refused.message().contains("is not a socket"), "{refused}");
    assert_eq!(lstat(host, file), (0, 0, 0o600, false, false));
    assert_eq!(host.read(file).unwrap(), "data\n");

    // A link that passes the glob and points at the real (root-owned) socket.
    let link = "/run/php/link.sock";
    host.sh(&format!("ln -s {PHP_SOCKET} {link}")).unwrap();
    let refused = act(
        host,
        &[
            "fix_socket_ownership",
            "--socket",
            link,
            "--owner",
            "www-data",
            "--group",
            "www-data",
            "--mode",
            "0660",
        ],
    );
    assert_eq!(refused.code, 1, "{refused}");
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(refused.message().contains("symlink"), "{refused}");
    assert!(lstat(host, link).4, "the link is still a link");
    assert_eq!(
        lstat(host, PHP_SOCKET),
        (0, 0, 0o600, true, false),
        "its target is untouched"
    );

    // A socket whose directory is reached through a link: /run/php-link -> /run/php.
    host.sh("ln -s /run/php /run/php-link").unwrap();
    let mut config = act_support::CONFIG.to_owned();
    config.push_str("  sockets: [\"/run/php/*.sock\", \"/run/php-link/*.sock\"]\n");
    host.write("/etc/gatemend/agent.yaml", &config).unwrap();
    let through = "/run/php-link/php8.2-fpm.sock";
    let refused = act(
        host,
        &[
            "fix_socket_ownership",
            "--socket",
            through,
            "--owner",
            "www-data",
            "--group",
            "www-data",
            "--mode",
            "0660",
        ],
    );
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused
            .message()
            .contains("resolves through a link to /run/php/php8.2-fpm.sock"),
        "{refused}"
    );
    assert_eq!(
        lstat(host, PHP_SOCKET),
        (0, 0, 0o600, true, false),
        "untouched"
    );

    // Outside the allow-list altogether.
    let refused = act(
        host,
        &["fix_socket_ownership", "--socket", "/run/nginx.pid"],
    );
    assert_eq!(refused.status(), "refused", "{refused}");
    assert!(
        refused.message().contains("not in this host's allow-list"),
        "{refused}"
    );
}
