//! The edits diagnosis proposes, on real configuration: `nginx -T` as recorded on testbed
//! hosts (`tests/fixtures/nginx/`), the site the classifier's fixture lines were logged
//! under (`tests/fixtures/testbed/fx.conf`), Debian's pool file (`tests/fixtures/php_fpm/`),
//! and real log lines. Each proposal must name the file and block of the directive, change
//! exactly that directive, hash the file it was computed against, and be withheld (with the
//! reason in the detail) when it cannot be right.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gatemend_proto::{ConfigKind, RootCause};

use super::{line, socket, unit};
use crate::diagnose::{Aggregator, Diagnosis, EditBounds, Probes, ProposedEdit, diagnose};
use crate::edit::sha256_hex;
use crate::probe::listeners::Listener;
use crate::probe::memory::{Memory, PoolMemory};
use crate::probe::nginx::{self, file_tree};
use crate::probe::php_fpm::parse_pools;

const SITE: &str = "/etc/nginx/sites-enabled/default";
const POOL_FILE: &str = "/etc/php/8.2/fpm/pool.d/www.conf";
const MIB: u64 = 1 << 20;

fn fixture(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The text of `file` in an `nginx -T` output.
fn file_text(dump: &str, file: &str) -> String {
    nginx::files(dump)
        .into_iter()
        .find(|(path, _)| path == Path::new(file))
        .unwrap_or_else(|| panic!("no {file} in the dump"))
        .1
        .to_owned()
}

/// The dump with `file`'s text replaced, as `nginx -T` prints it after that change.
fn dump_with(dump: &str, file: &str, text: &str) -> String {
    let marker = format!("# configuration file {file}:\n");
    let old = file_text(dump, file);
    let replaced = dump.replacen(&format!("{marker}{old}\n"), &format!("{marker}{text}\n"), 1);
    assert_ne!(replaced, dump, "{file} was not replaced");
    replaced
}

/// The dump with one more file, printed right after `after` (as nginx prints an included
/// file after the one that includes it).
fn dump_adding(dump: &str, after: &str, file: &str, text: &str) -> String {
    let marker = format!("# configuration file {after}:\n");
    let old = file_text(dump, after);
    dump.replacen(
        &format!("{marker}{old}\n"),
        &format!("{marker}{old}\n# configuration file {file}:\n{text}\n"),
        1,
    )
}

/// The Debian testbed host as the demo sees it: php8.2-fpm up with its pool file, its
/// socket www-data:www-data 0660, nginx as `dump` says; the pool's five children measured.
fn host(dump: &str) -> Probes {
    let pool_text = fixture("php_fpm/www.conf");
    Probes {
        nginx: Some(nginx::parse(dump)),
        nginx_files: nginx::files(dump)
            .into_iter()
            .map(|(path, text)| (path, text.to_owned()))
            .collect(),
        pools: parse_pools(Path::new(POOL_FILE), &pool_text),
        pool_files: [(PathBuf::from(POOL_FILE), pool_text)].into(),
        units: [
            (
                "php8.2-fpm.service".to_owned(),
                unit("php8.2-fpm.service", "active", "running", "success"),
            ),
            (
                "nginx.service".to_owned(),
                unit("nginx.service", "active", "running", "success"),
            ),
        ]
        .into(),
        sockets: [socket(
            "/run/php/php8.2-fpm.sock",
            "www-data",
            0o660,
            true,
            true,
        )]
        .into(),
        nameservers: vec!["127.0.0.53".into()],
        memory: memory(5, 12 * MIB, 1024 * MIB),
        ..Probes::default()
    }
}

fn memory(children: u32, each: u64, available: u64) -> Memory {
    Memory {
        available: Some(available),
        pools: [(
            ("php8.2-fpm.service".to_owned(), "www".to_owned()),
            PoolMemory {
                children,
                rss: each * u64::from(children),
            },
        )]
        .into(),
    }
}

fn debian() -> String {
    fixture("nginx/debian_default.txt")
}

/// The testbed's Debian host serving the site the fixture lines were recorded under.
fn fx() -> String {
    dump_with(&debian(), SITE, &fixture("testbed/fx.conf"))
}

fn proposed(d: &Diagnosis) -> &ProposedEdit {
    d.edit
        .as_ref()
        .unwrap_or_else(|| panic!("no edit proposed: {}", d.detail))
}

/// Every directive of a file's text as (block path, name, arguments), blocks included.
fn directives(text: &str) -> Vec<(String, String, String)> {
    fn walk(nodes: &[nginx::Node], path: &str, out: &mut Vec<(String, String, String)>) {
        for node in nodes {
            out.push((path.to_owned(), node.name.clone(), node.args.join(" ")));
            if let Some(children) = &node.block {
                walk(children, &format!("{path} > {}", node.step()), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&file_tree(text), "", &mut out);
    out
}

/// Checks `edit` against the probes' text of its file: the hash is that text's, and the
/// text with the edit applied (from its diff's new side, by the editor) differs from it by
/// exactly this directive: `old -> new` in the edit's block, or added there. Returns the new
/// text.
#[track_caller]
fn assert_one_directive(p: &Probes, edit: &ProposedEdit) -> String {
    let file = PathBuf::from(&edit.file);
    let old_text = match edit.kind {
        ConfigKind::PhpFpmPool => p.pool_files[&file].clone(),
        _ => p.nginx_files[&file].clone(),
    };
    assert_eq!(edit.file_sha256, sha256_hex(&old_text), "{edit:#?}");
    // The diff names the file as `diff -u a/ b/` does, without its leading `/`.
    let shown = edit.file.trim_start_matches('/');
    assert!(
        edit.diff
            .starts_with(&format!("--- a/{shown}\n+++ b/{shown}\n")),
        "{}",
        edit.diff
    );
    let new_text = apply_diff(&old_text, &edit.diff);
    if edit.kind == ConfigKind::PhpFpmPool {
        let before = parse_pools(&file, &old_text);
        let after = parse_pools(&file, &new_text);
        assert_eq!(before.len(), after.len());
        let pool = after
            .iter()
            .find(|pool| edit.block == [pool.name.clone()])
            .unwrap();
        assert_eq!(
            pool.max_children.map(|m| m.to_string()),
            Some(edit.new_value.clone())
        );
        let (removed, added) = changed_lines(&edit.diff);
        assert_eq!(removed.len(), 1, "{}", edit.diff);
        assert_eq!(added.len(), 1, "{}", edit.diff);
        assert_eq!(
            removed[0].replace(&edit.old_value, &edit.new_value),
            added[0],
            "{}",
            edit.diff
        );
        return new_text;
    }
    let mut before = directives(&old_text);
    let mut after = directives(&new_text);
    let path: String = edit.block.iter().map(|step| format!(" > {step}")).collect();
    let new = (path.clone(), edit.directive.clone(), edit.new_value.clone());
    let at = after
        .iter()
        .position(|d| *d == new)
        .unwrap_or_else(|| panic!("{new:?} is not in the new text:\n{new_text}"));
    after.remove(at);
    if !edit.old_value.is_empty() {
        let old = (path, edit.directive.clone(), edit.old_value.clone());
        let at = before
            .iter()
            .position(|d| *d == old)
            .unwrap_or_else(|| panic!("{old:?} is not in the old text"));
        before.remove(at);
    }
    assert_eq!(
        before, after,
        "the edit changed more than {}",
        edit.directive
    );
    new_text
}

/// The diff's changed lines: (removed, added).
fn changed_lines(diff: &str) -> (Vec<&str>, Vec<&str>) {
    let body = diff.lines().skip(2);
    (
        body.clone().filter_map(|l| l.strip_prefix('-')).collect(),
        body.filter_map(|l| l.strip_prefix('+')).collect(),
    )
}

/// The unified diff applied to `old` (its hunks in order, context checked).
fn apply_diff(old: &str, diff: &str) -> String {
    let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut at = 0;
    for line in diff.split_inclusive('\n').skip(2) {
        if let Some(header) = line.strip_prefix("@@ -") {
            let start: usize = header.split([',', ' ']).next().unwrap().parse().unwrap();
            let start = start.saturating_sub(1).max(at);
            for l in &old_lines[at..start] {
                out.push_str(l);
            }
            at = start;
        } else if let Some(text) = line.strip_prefix(' ') {
            assert_eq!(
                old_lines[at].trim_end_matches('\n'),
                text.trim_end_matches('\n')
            );
            out.push_str(old_lines[at]);
            at += 1;
        } else if let Some(text) = line.strip_prefix('-') {
            assert_eq!(
                old_lines[at].trim_end_matches('\n'),
                text.trim_end_matches('\n')
            );
            at += 1;
        } else if let Some(text) = line.strip_prefix('+') {
            out.push_str(text);
        }
        // `\ No newline at end of file` lines change nothing here.
    }
    for l in &old_lines[at..] {
        out.push_str(l);
    }
    out
}

const MISSING_74: &str = "2026/11/21 01:02:03 [crit] 317#317: *113 connect() to unix:/run/php/php7.4-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 10.77.1.1, server: _, request: \"GET /index.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php7.4-fpm.sock:\", host: \"10.77.1.2\"";

/// The demo's third fault: the Debian site pointed at the old php7.4 socket.
fn debian_on_php74() -> String {
    let site = file_text(&debian(), SITE).replace("php8.2-fpm.sock", "php7.4-fpm.sock");
    dump_with(&debian(), SITE, &site)
}

#[test]
fn the_wrong_socket_is_repointed_where_php_fpm_listens_in_the_site_that_names_it() {
    let p = host(&debian_on_php74());
    let d = diagnose(&line(MISSING_74), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::WrongTarget);
    let edit = proposed(&d);
    assert_eq!(edit.kind, ConfigKind::Nginx);
    assert_eq!(edit.file, SITE);
    assert_eq!(edit.block, ["server[_]", "location[~ \\.php$]"]);
    assert_eq!(edit.block_outer, ["http"]);
    assert_eq!(edit.directive, "fastcgi_pass");
    assert_eq!(edit.old_value, "unix:/run/php/php7.4-fpm.sock");
    assert_eq!(edit.new_value, "unix:/run/php/php8.2-fpm.sock");
    assert!(
        edit.why.contains("php8.2-fpm.service") && edit.why.contains("pool `www`"),
        "{}",
        edit.why
    );
    let (removed, added) = changed_lines(&edit.diff);
    assert_eq!(
        removed,
        ["        fastcgi_pass unix:/run/php/php7.4-fpm.sock;"]
    );
    assert_eq!(
        added,
        ["        fastcgi_pass unix:/run/php/php8.2-fpm.sock;"]
    );
    let fixed = assert_one_directive(&p, edit);
    // The site as the edit leaves it is the site the host was built with.
    assert_eq!(fixed, file_text(&debian(), SITE));
    // And the detail is the one the demo narrates, without a refusal.
    assert!(!d.detail.contains("no edit proposed"), "{}", d.detail);
}

#[test]
fn a_wrong_socket_in_an_included_snippet_is_edited_in_the_snippet() {
    const SNIPPET: &str = "/etc/nginx/snippets/php.conf";
    let site = file_text(&debian(), SITE).replace(
        "        fastcgi_pass unix:/run/php/php8.2-fpm.sock;\n",
        "        include snippets/php.conf;\n",
    );
    let dump = dump_with(&debian(), SITE, &site);
    let dump = dump_adding(
        &dump,
        SITE,
        SNIPPET,
        "# PHP through php-fpm (written for PHP 7.4).\nfastcgi_pass unix:/run/php/php7.4-fpm.sock;\n",
    );
    let p = host(&dump);
    let d = diagnose(&line(MISSING_74), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::WrongTarget, "{}", d.detail);
    let edit = proposed(&d);
    assert_eq!(edit.file, SNIPPET);
    assert!(edit.block.is_empty(), "{edit:#?}");
    assert_eq!(
        edit.block_outer,
        ["http", "server[_]", "location[~ \\.php$]"]
    );
    assert_eq!(edit.new_value, "unix:/run/php/php8.2-fpm.sock");
    let fixed = assert_one_directive(&p, edit);
    assert_eq!(
        fixed,
        "# PHP through php-fpm (written for PHP 7.4).\nfastcgi_pass unix:/run/php/php8.2-fpm.sock;\n"
    );
}

#[test]
fn a_wrong_socket_is_found_among_many_passes_by_the_lines_server_and_path() {
    // fx.test passes PHP to php8.2 in `location ~ \.php$` and to php7.4 in one location.
    let p = host(&fx());
    let raw = "2026/11/21 01:02:03 [crit] 317#317: *120 connect() to unix:/run/php/php7.4-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 127.0.0.1, server: fx.test, request: \"GET /fcgi_wrong_sock HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php7.4-fpm.sock:\", host: \"fx.test\"";
    let d = diagnose(&line(raw), &p).unwrap();
    let edit = proposed(&d);
    assert_eq!(
        edit.block,
        ["server[fx.test]", "location[/fcgi_wrong_sock]"]
    );
    assert_eq!(edit.new_value, "unix:/run/php/php8.2-fpm.sock");
    assert_one_directive(&p, edit);
}

#[test]
fn a_proxy_pass_port_typo_is_repointed_at_the_port_its_unit_listens_on() {
    // upstreams.conf: `location /api/ { proxy_pass http://127.0.0.1:3000/v1/; }` in app.test,
    // and `location / { proxy_pass http://app; }` whose group has 127.0.0.1:3000 too.
    let mut p = host(&fixture("nginx/upstreams.txt"));
    p.units_map
        .insert("127.0.0.1:3000".into(), "app.service".into());
    p.listeners.push(Listener {
        addr: "127.0.0.1:3001".parse().unwrap(),
        inode: 1,
        pids: vec![7],
        unit: Some("app.service".into()),
        process: Some("python3".into()),
    });
    let raw = "2026/11/21 01:01:15 [error] 110#110: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: app.test, request: \"GET /api/users?id=1 HTTP/1.1\", upstream: \"http://127.0.0.1:3000/v1/users?id=1\", host: \"app.test\"";
    let d = diagnose(&line(raw), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::WrongTarget, "{}", d.detail);
    let edit = proposed(&d);
    assert_eq!(edit.file, "/etc/nginx/conf.d/upstreams.conf");
    assert_eq!(
        edit.block,
        ["server[app.test www.app.test]", "location[/api/]"]
    );
    assert_eq!(edit.directive, "proxy_pass");
    assert_eq!(edit.old_value, "http://127.0.0.1:3000/v1/");
    assert_eq!(edit.new_value, "http://127.0.0.1:3001/v1/");
    assert!(edit.why.contains("app.service"), "{}", edit.why);
    assert_one_directive(&p, edit);

    // The same line from `/`: nginx reached the port through `upstream app`, whose server
    // lines are no edit the agent makes; the detail says so.
    let raw = raw.replace("GET /api/users?id=1", "GET /index.html");
    let d = diagnose(&line(&raw), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::WrongTarget);
    assert_eq!(d.edit, None);
    assert!(
        d.detail.contains("no edit proposed") && d.detail.contains("upstream app"),
        "{}",
        d.detail
    );
}

#[test]
fn a_proposal_the_editor_refuses_is_not_sent_and_the_detail_says_why() {
    // Two unnamed servers in one file: the step `server` names both, so the editor cannot
    // tell which block the pass is in.
    let two = "server {\n    listen 8081;\n    location ~ \\.php$ {\n        fastcgi_pass unix:/run/php/php7.4-fpm.sock;\n    }\n}\n\
               server {\n    listen 8082;\n    location / {\n        return 204;\n    }\n}\n";
    let dump = dump_adding(
        &debian(),
        "/etc/nginx/nginx.conf",
        "/etc/nginx/conf.d/two.conf",
        two,
    );
    let p = host(&dump);
    let raw = MISSING_74.replace("server: _,", "server: ,");
    let d = diagnose(&line(&raw), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::WrongTarget, "{}", d.detail);
    assert_eq!(d.edit, None);
    assert!(
        d.detail.contains("no edit proposed") && d.detail.contains("ambiguous"),
        "{}",
        d.detail
    );
    // Without nginx -T's text of the file, nothing is proposed either.
    let mut p = host(&debian_on_php74());
    p.nginx_files.clear();
    let d = diagnose(&line(MISSING_74), &p).unwrap();
    assert_eq!(d.edit, None);
    assert!(
        d.detail.contains("not in nginx -T's output"),
        "{}",
        d.detail
    );
}

const FPM_READ_TIMEOUT: &str = "2026/11/21 01:02:02 [error] 317#317: *109 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: fx.test, request: \"GET /slow.php?s=3 HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock\", host: \"fx.test\"";

#[test]
fn a_read_timeout_is_raised_on_the_location_that_timed_out_from_the_timeout_in_effect() {
    // fx.test sets `fastcgi_read_timeout 1s;` for the whole server: the location gets 2s.
    let p = host(&fx());
    let d = diagnose(&line(FPM_READ_TIMEOUT), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::UpstreamSlow);
    let edit = proposed(&d);
    assert_eq!(edit.file, SITE);
    assert_eq!(edit.block, ["server[fx.test]", "location[~ \\.php$]"]);
    assert_eq!(edit.directive, "fastcgi_read_timeout");
    assert_eq!(edit.old_value, "");
    assert_eq!(edit.new_value, "2s");
    assert!(
        edit.why.contains("fastcgi_read_timeout 1s") && edit.why.contains("x1.5"),
        "{}",
        edit.why
    );
    assert!(
        edit.why.contains(&format!("set at {SITE}:")),
        "{}",
        edit.why
    );
    assert_one_directive(&p, edit);

    // A proxied location: `proxy_read_timeout 1s` at the server, /hang is the location (the
    // same port is also behind /tls_hang, which the path rules out).
    let raw = fixture("lines/read_timeout_header.log");
    let raw = raw.lines().next().unwrap();
    let d = diagnose(&line(raw), &p).unwrap();
    let edit = proposed(&d);
    assert_eq!(edit.block, ["server[fx.test]", "location[/hang]"]);
    assert_eq!(edit.directive, "proxy_read_timeout");
    assert_eq!(edit.new_value, "2s");
    assert_one_directive(&p, edit);
}

#[test]
fn a_timeout_set_in_the_location_is_changed_there_and_never_beyond_the_bound() {
    let with = |timeout: &str| {
        let site = fixture("testbed/fx.conf").replace(
            "location ~ \\.php$          { include snippets/fastcgi-php.conf;",
            &format!("location ~ \\.php$ {{ fastcgi_read_timeout {timeout}; include snippets/fastcgi-php.conf;"),
        );
        host(&dump_with(&debian(), SITE, &site))
    };
    let p = with("100s");
    let d = diagnose(&line(FPM_READ_TIMEOUT), &p).unwrap();
    let edit = proposed(&d);
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("100s", "150s")
    );
    assert_one_directive(&p, edit);

    // 250s x1.5 is 375s: the bound, 300s, is proposed.
    let p = with("4m10s");
    let edit = proposed(&diagnose(&line(FPM_READ_TIMEOUT), &p).unwrap()).clone();
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("4m10s", "300s")
    );
    assert!(
        edit.why.contains("capped at the bound 300s"),
        "{}",
        edit.why
    );
    assert_one_directive(&p, &edit);

    // At the bound: nothing, and the detail says why.
    let p = with("5m");
    let d = diagnose(&line(FPM_READ_TIMEOUT), &p).unwrap();
    assert_eq!(d.edit, None);
    assert!(
        d.detail.contains("at or above the bound 300s"),
        "{}",
        d.detail
    );

    // A host with a lower bound.
    let mut p = with("100s");
    p.edit_bounds = EditBounds {
        max_timeout: std::time::Duration::from_secs(120),
        ..EditBounds::default()
    };
    let edit = proposed(&diagnose(&line(FPM_READ_TIMEOUT), &p).unwrap()).clone();
    assert_eq!(edit.new_value, "120s");
}

#[test]
fn a_read_timeout_under_nginxs_default_adds_90s_to_the_location() {
    let p = host(&debian());
    let raw = FPM_READ_TIMEOUT.replace("server: fx.test", "server: _");
    let d = diagnose(&line(&raw), &p).unwrap();
    let edit = proposed(&d);
    assert_eq!(edit.block, ["server[_]", "location[~ \\.php$]"]);
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("", "90s")
    );
    assert!(edit.why.contains("nginx's default"), "{}", edit.why);
    let (removed, added) = changed_lines(&edit.diff);
    assert!(removed.is_empty(), "{}", edit.diff);
    assert_eq!(added, ["        fastcgi_read_timeout 90s;"]);
    assert_one_directive(&p, edit);
}

#[test]
fn a_header_too_big_raises_the_locations_buffer_to_the_next_power_of_two() {
    let raw = fixture("lines/header_too_big.log");
    let raw = raw.lines().next().unwrap();
    let p = host(&fx());
    let d = diagnose(&line(raw), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::CapacityExhausted);
    assert!(d.detail.contains("proxy_buffer_size 4k"), "{}", d.detail);
    let edit = proposed(&d);
    assert_eq!(edit.block, ["server[fx.test]", "location[/huge_header]"]);
    assert_eq!(edit.directive, "proxy_buffer_size");
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("", "8k")
    );
    assert_one_directive(&p, edit);

    // 8k -> 16k would break nginx -t beside the default `proxy_buffers 8 4k` (busy buffers
    // 32k > 7 x 4k): withheld, with the numbers.
    let with = |extra: &str| {
        let site = fixture("testbed/fx.conf").replace(
            "location /huge_header      { proxy_pass http://127.0.0.1:3005; }",
            &format!("location /huge_header {{ proxy_pass http://127.0.0.1:3005; {extra} }}"),
        );
        host(&dump_with(&debian(), SITE, &site))
    };
    let p = with("proxy_buffer_size 8k;");
    let d = diagnose(&line(raw), &p).unwrap();
    assert_eq!(d.edit, None);
    assert!(
        d.detail
            .contains("proxy_buffer_size 16k would fail nginx -t")
            && d.detail.contains("7 x 4k = 28k"),
        "{}",
        d.detail
    );
    // With buffers large enough, it is raised where it is set.
    let p = with("proxy_buffers 8 16k; proxy_buffer_size 16k;");
    let edit = proposed(&diagnose(&line(raw), &p).unwrap()).clone();
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("16k", "32k")
    );
    assert_one_directive(&p, &edit);
    // Never beyond the bound.
    let p = with("proxy_buffers 8 64k; proxy_buffer_size 64k;");
    let d = diagnose(&line(raw), &p).unwrap();
    assert_eq!(d.edit, None);
    assert!(
        d.detail.contains("at or above the bound 64k"),
        "{}",
        d.detail
    );
}

const MAX_CHILDREN: &str = "[21-Nov-2026 01:02:27] WARNING: [pool www] server reached pm.max_children setting (5), consider raising it";

#[test]
fn max_children_is_raised_by_what_available_memory_holds_at_the_childrens_size() {
    // 5 children of 12 MiB; 1 GiB available: 80% holds 68 more.
    let p = host(&debian());
    let d = diagnose(&line(MAX_CHILDREN), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::CapacityExhausted);
    let edit = proposed(&d);
    assert_eq!(edit.kind, ConfigKind::PhpFpmPool);
    assert_eq!(edit.file, POOL_FILE);
    assert_eq!(edit.block, ["www"]);
    assert!(edit.block_outer.is_empty());
    assert_eq!(edit.directive, "pm.max_children");
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("5", "73")
    );
    assert!(
        edit.why.contains("5 children") && edit.why.contains("12.0 MiB each"),
        "{}",
        edit.why
    );
    let (removed, added) = changed_lines(&edit.diff);
    assert_eq!(
        (removed, added),
        (vec!["pm.max_children = 5"], vec!["pm.max_children = 73"])
    );
    assert_one_directive(&p, edit);

    // Plenty of memory: the bound.
    let mut p = host(&debian());
    p.memory = memory(5, 12 * MIB, 64 * 1024 * MIB);
    let edit = proposed(&diagnose(&line(MAX_CHILDREN), &p).unwrap()).clone();
    assert_eq!(edit.new_value, "256");
    assert!(edit.why.contains("capped at the bound 256"), "{}", edit.why);
}

#[test]
fn with_no_memory_to_spare_no_raise_is_proposed_and_the_detail_gives_the_numbers() {
    // 40 MiB available: 80% is 32 MiB, less than one 40 MiB child.
    let mut p = host(&debian());
    p.memory = memory(5, 40 * MIB, 40 * MIB);
    let d = diagnose(&line(MAX_CHILDREN), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::CapacityExhausted);
    assert_eq!(d.edit, None);
    assert!(
        d.detail.contains("no memory to spare")
            && d.detail.contains("MemAvailable 40.0 MiB")
            && d.detail.contains("32.0 MiB")
            && d.detail.contains("40.0 MiB each"),
        "{}",
        d.detail
    );
    // Children not measured: no guess either.
    p.memory = Memory {
        available: Some(1024 * MIB),
        pools: BTreeMap::new(),
    };
    let d = diagnose(&line(MAX_CHILDREN), &p).unwrap();
    assert_eq!(d.edit, None);
    assert!(d.detail.contains("could be measured"), "{}", d.detail);
}

#[test]
fn a_full_backlog_on_a_pools_socket_raises_its_max_children_too() {
    let raw = fixture("lines/fpm_overloaded.log");
    let raw = raw
        .lines()
        .find(|l| l.contains("(11: Resource temporarily unavailable)"))
        .unwrap();
    let p = host(&debian());
    let d = diagnose(&line(raw), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::CapacityExhausted, "{}", d.detail);
    let edit = proposed(&d);
    assert_eq!(edit.directive, "pm.max_children");
    assert_one_directive(&p, edit);
}

#[test]
fn worker_connections_are_doubled_in_the_events_block_within_the_bound() {
    let raw = fixture("lines/worker_connections.log");
    let raw = raw.lines().next().unwrap();
    let p = host(&debian());
    let d = diagnose(&line(raw), &p).unwrap();
    let edit = proposed(&d);
    assert_eq!(edit.file, "/etc/nginx/nginx.conf");
    assert_eq!(edit.block, ["events"]);
    assert!(edit.block_outer.is_empty());
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("768", "1536")
    );
    assert!(edit.why.contains("worker_rlimit_nofile"), "{}", edit.why);
    assert_one_directive(&p, edit);

    let conf = file_text(&debian(), "/etc/nginx/nginx.conf")
        .replace("worker_connections 768;", "worker_connections 40000;");
    let p = host(&dump_with(&debian(), "/etc/nginx/nginx.conf", &conf));
    let edit = proposed(&diagnose(&line(raw), &p).unwrap()).clone();
    assert_eq!(edit.new_value, "65536");
    assert!(
        edit.why.contains("capped at the bound 65536"),
        "{}",
        edit.why
    );
}

#[test]
fn no_resolver_declares_the_hosts_nameservers_in_the_http_block() {
    let raw = fixture("lines/dns.log");
    let raw = raw
        .lines()
        .find(|l| l.contains("no resolver defined"))
        .unwrap();
    let mut p = host(&fx());
    p.nameservers = vec!["127.0.0.53".into(), "::1".into(), "fe80::1%eth0".into()];
    let d = diagnose(&line(raw), &p).unwrap();
    assert_eq!(d.root_cause, RootCause::DnsFailure);
    let edit = proposed(&d);
    assert_eq!(edit.file, "/etc/nginx/nginx.conf");
    assert_eq!(edit.block, ["http"]);
    assert_eq!(edit.directive, "resolver");
    assert_eq!(
        (edit.old_value.as_str(), edit.new_value.as_str()),
        ("", "127.0.0.53 [::1]")
    );
    assert!(edit.why.contains("fe80::1%eth0"), "{}", edit.why);
    assert_one_directive(&p, edit);

    p.nameservers.clear();
    let d = diagnose(&line(raw), &p).unwrap();
    assert_eq!(d.edit, None);
    assert!(d.detail.contains("names no nameserver"), "{}", d.detail);
}

#[test]
fn a_finding_carries_its_proposal_to_the_wire_and_to_json_as_edit() {
    let p = host(&debian_on_php74());
    let l = line(MISSING_74);
    let d = diagnose(&l, &p).unwrap();
    let mut agg = Aggregator::new("gm3", std::time::Duration::from_secs(10));
    agg.observe(&l, MISSING_74.as_bytes(), &d, 1_000);
    let f = agg.changed().pop().unwrap();
    let edit = f.proposed_edit.clone().unwrap();
    let wire = f.to_wire().proposed_edit.unwrap();
    assert_eq!(wire.kind, ConfigKind::Nginx as i32);
    assert_eq!(wire.file, SITE);
    assert_eq!(wire.block, edit.block);
    assert_eq!(wire.block_outer, ["http"]);
    assert_eq!(wire.directive, "fastcgi_pass");
    assert_eq!(wire.old_value, "unix:/run/php/php7.4-fpm.sock");
    assert_eq!(wire.new_value, "unix:/run/php/php8.2-fpm.sock");
    assert_eq!(wire.file_sha256, edit.file_sha256);
    assert_eq!(wire.diff, edit.diff);
    assert_eq!(wire.why, edit.why);
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["edit"]["kind"], "nginx");
    assert_eq!(json["edit"]["directive"], "fastcgi_pass");
    assert_eq!(json["edit"]["diff"], edit.diff.as_str());
    // A finding without one has no `edit` at all.
    let mut p = p;
    p.nginx_files.clear();
    let d = diagnose(&l, &p).unwrap();
    let mut agg = Aggregator::new("gm3", std::time::Duration::from_secs(10));
    agg.observe(&l, MISSING_74.as_bytes(), &d, 1_000);
    let f = agg.changed().pop().unwrap();
    assert!(f.to_wire().proposed_edit.is_none());
    assert!(serde_json::to_value(&f).unwrap().get("edit").is_none());
}
