//! The nginx config editor on real configuration text: the files of the `nginx -T` output
//! recorded on testbed hosts (`fixtures/nginx/`), located by the block paths the probe gives.
//! Each edit must change exactly its value (or add one line), keep everything else byte for
//! byte, read back with the new value, and refuse what it must.

// Test helpers panic on what a test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use gatemend_agent::edit::{
    EditError, EditResult, EditableDirective, NginxEdit, apply_edit, apply_edits, sha256_hex,
};
use gatemend_agent::probe::nginx::{self, BlockPath, BlockStep, NginxConfig};

fn fixture_dump(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One file's text out of `nginx -T` output: nginx prints the file's bytes, then a newline.
fn file_in_dump(dump: &str, file: &str) -> String {
    let marker = format!("# configuration file {file}:\n");
    let start = dump.find(&marker).unwrap_or_else(|| panic!("no {file}")) + marker.len();
    let rest = &dump[start..];
    let end = rest.find("# configuration file ").unwrap_or(rest.len());
    rest[..end].strip_suffix('\n').unwrap().to_owned()
}

/// The dump with one file's text replaced: what `nginx -T` prints after the edit.
fn dump_with(dump: &str, file: &str, text: &str) -> String {
    let old = file_in_dump(dump, file);
    let marker = format!("# configuration file {file}:\n");
    dump.replacen(&format!("{marker}{old}\n"), &format!("{marker}{text}\n"), 1)
}

fn steps(path: &[&str]) -> Vec<BlockStep> {
    path.iter()
        .map(|s| BlockStep::try_from((*s).to_owned()).unwrap())
        .collect()
}

fn path(outer: &[&str], inner: &[&str]) -> BlockPath {
    BlockPath {
        outer: steps(outer),
        inner: steps(inner),
    }
}

fn edit(
    file: &str,
    block_path: BlockPath,
    directive: EditableDirective,
    old: Option<&str>,
    new: &str,
) -> NginxEdit {
    NginxEdit {
        file: PathBuf::from(file),
        block_path,
        directive,
        old: old.map(str::to_owned),
        new: new.to_owned(),
    }
}

/// The diff's changed lines: (removed, added).
fn changed_lines(result: &EditResult) -> (Vec<&str>, Vec<&str>) {
    let body = result.diff.lines().skip(2);
    let removed = body
        .clone()
        .filter_map(|l| l.strip_prefix('-'))
        .collect::<Vec<_>>();
    let added = body.filter_map(|l| l.strip_prefix('+')).collect::<Vec<_>>();
    (removed, added)
}

/// The lines of `a` and `b` that differ, by index; the texts must have the same line count.
fn differing_lines<'a>(a: &'a str, b: &'a str) -> Vec<(usize, &'a str, &'a str)> {
    assert_eq!(a.lines().count(), b.lines().count(), "line counts differ");
    a.lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i + 1, x, y))
        .collect()
}

const SITE: &str = "/etc/nginx/sites-enabled/default";
const PHP_LOCATION: &[&str] = &["server[_]", r"location[~ \.php$]"];

/// The demo's fault: the site still points at php7.4's socket after the upgrade.
fn site_on_php74() -> (String, String) {
    let dump = fixture_dump("debian_default.txt");
    let site = file_in_dump(&dump, SITE).replace("php8.2-fpm.sock", "php7.4-fpm.sock");
    let dump = dump_with(&dump, SITE, &site);
    (dump, site)
}

#[test]
fn the_wrong_socket_is_mended_by_exactly_one_token() {
    let (dump, site) = site_on_php74();
    // The edit as diagnosis builds it: from the pass the probe found.
    let config = nginx::parse(&dump);
    let [pass] = config.passes.as_slice() else {
        panic!("{:#?}", config.passes)
    };
    assert_eq!(pass.block_path, path(&["http"], PHP_LOCATION));
    let fix = edit(
        SITE,
        pass.block_path.clone(),
        EditableDirective::FastcgiPass,
        Some(&pass.raw),
        "unix:/run/php/php8.2-fpm.sock",
    );
    let result = apply_edit(&site, &fix).unwrap();

    assert_eq!(
        result.new_text,
        site.replace(
            "fastcgi_pass unix:/run/php/php7.4-fpm.sock;",
            "fastcgi_pass unix:/run/php/php8.2-fpm.sock;"
        )
    );
    assert_eq!(
        differing_lines(&site, &result.new_text),
        [(
            15,
            "        fastcgi_pass unix:/run/php/php7.4-fpm.sock;",
            "        fastcgi_pass unix:/run/php/php8.2-fpm.sock;"
        )]
    );
    assert_eq!(
        result.diff,
        "--- a/etc/nginx/sites-enabled/default\n\
         +++ b/etc/nginx/sites-enabled/default\n\
         @@ -12,6 +12,6 @@\n \
         \n     location ~ \\.php$ {\n         include snippets/fastcgi-php.conf;\n\
         -        fastcgi_pass unix:/run/php/php7.4-fpm.sock;\n\
         +        fastcgi_pass unix:/run/php/php8.2-fpm.sock;\n     }\n }\n"
    );
    assert_eq!(result.sha256_before, sha256_hex(&site));
    assert_eq!(result.sha256_after, sha256_hex(&result.new_text));
    assert_ne!(result.sha256_before, result.sha256_after);
    assert_eq!(result.lines, [15]);

    // nginx -T after the edit: the probe sees the new target, in the same place.
    let after = nginx::parse(&dump_with(&dump, SITE, &result.new_text));
    let [pass] = after.passes.as_slice() else {
        panic!("{:#?}", after.passes)
    };
    assert_eq!(pass.raw, "unix:/run/php/php8.2-fpm.sock");
    assert_eq!(pass.block_path, path(&["http"], PHP_LOCATION));
    assert_eq!(pass.line, 15);
}

#[test]
fn a_timeout_is_added_to_the_location_at_its_indentation() {
    let dump = fixture_dump("debian_default.txt");
    let site = file_in_dump(&dump, SITE);
    let result = apply_edit(
        &site,
        &edit(
            SITE,
            path(&["http"], PHP_LOCATION),
            EditableDirective::FastcgiReadTimeout,
            None,
            "120s",
        ),
    )
    .unwrap();
    let (removed, added) = changed_lines(&result);
    assert!(removed.is_empty(), "{}", result.diff);
    assert_eq!(added, ["        fastcgi_read_timeout 120s;"]);
    // Everything else is as it was: removing the one new line gives the old text back.
    assert_eq!(
        result
            .new_text
            .replace("        fastcgi_read_timeout 120s;\n", ""),
        site
    );
    assert!(
        result.new_text.contains(
            "        fastcgi_pass unix:/run/php/php8.2-fpm.sock;\n        fastcgi_read_timeout 120s;\n    }\n"
        ),
        "{}",
        result.new_text
    );
    assert_eq!(result.lines, [16]);

    let after = nginx::parse(&dump_with(&dump, SITE, &result.new_text));
    let [timeout] = after.timeouts.as_slice() else {
        panic!("{:#?}", after.timeouts)
    };
    assert_eq!(timeout.name, "fastcgi_read_timeout");
    assert_eq!(timeout.args, ["120s"]);
    assert_eq!(timeout.block_path, path(&["http"], PHP_LOCATION));
}

#[test]
fn a_second_edit_of_the_same_value_is_stale() {
    let (_, site) = site_on_php74();
    let fix = edit(
        SITE,
        path(&["http"], PHP_LOCATION),
        EditableDirective::FastcgiPass,
        Some("unix:/run/php/php7.4-fpm.sock"),
        "unix:/run/php/php8.2-fpm.sock",
    );
    let once = apply_edit(&site, &fix).unwrap();
    // Someone changed it meanwhile (here: the same edit already applied).
    let error = apply_edit(&once.new_text, &fix).unwrap_err();
    assert_eq!(
        error,
        EditError::Stale {
            file: PathBuf::from(SITE),
            line: 15,
            what: "fastcgi_pass".into(),
            expected: "unix:/run/php/php7.4-fpm.sock".into(),
            found: "unix:/run/php/php8.2-fpm.sock".into(),
        }
    );
    assert!(error.to_string().contains("stale"), "{error}");
    // Old and new the same: nothing to do, said so.
    let same = edit(
        SITE,
        path(&["http"], PHP_LOCATION),
        EditableDirective::FastcgiPass,
        Some("unix:/run/php/php8.2-fpm.sock"),
        "unix:/run/php/php8.2-fpm.sock",
    );
    assert!(matches!(
        apply_edit(&once.new_text, &same),
        Err(EditError::NoChange { line: 15, .. })
    ));
}

#[test]
fn hostile_values_never_reach_the_text() {
    let (_, site) = site_on_php74();
    for hostile in [
        "unix:/run/php/php8.2-fpm.sock; include /etc/shadow",
        "unix:/run/php/php8.2-fpm.sock;\n}\nserver { listen 81; }\n#",
        "unix:/run/php/x.sock # }",
        "\"unix:/run/php/php8.2-fpm.sock\"",
        "'unix:/x'",
        "unix:/run/php/$x.sock",
        "unix:/run/../../etc/passwd",
        "unix:/run/php/php8.2-fpm.sock\\;",
        "127.0.0.1:9000 backup",
        "",
        " ",
    ] {
        let error = apply_edit(
            &site,
            &edit(
                SITE,
                path(&["http"], PHP_LOCATION),
                EditableDirective::FastcgiPass,
                Some("unix:/run/php/php7.4-fpm.sock"),
                hostile,
            ),
        )
        .unwrap_err();
        assert!(
            matches!(error, EditError::Value { .. }),
            "{hostile:?}: {error}"
        );
    }
    for (directive, hostile) in [
        (EditableDirective::FastcgiReadTimeout, "60s; return 200"),
        (EditableDirective::FastcgiReadTimeout, "0"),
        (EditableDirective::FastcgiReadTimeout, "$timeout"),
        (EditableDirective::FastcgiBufferSize, "16k 1"),
        (EditableDirective::FastcgiBuffers, "16k"),
        (EditableDirective::Resolver, "127.0.0.1 }"),
    ] {
        let error = apply_edit(
            &site,
            &edit(
                SITE,
                path(&["http"], PHP_LOCATION),
                directive,
                None,
                hostile,
            ),
        )
        .unwrap_err();
        assert!(
            matches!(error, EditError::Value { .. }),
            "{directive} {hostile:?}: {error}"
        );
    }
}

#[test]
fn the_block_path_must_name_exactly_one_block_and_directive() {
    let (_, site) = site_on_php74();
    let php = |inner: &[&str], directive, old: Option<&str>| {
        apply_edit(
            &site,
            &edit(
                SITE,
                path(&["http"], inner),
                directive,
                old,
                "unix:/run/php/php8.2-fpm.sock",
            ),
        )
    };
    // A location that is not there.
    assert_eq!(
        php(
            &["server[_]", "location[/php]"],
            EditableDirective::FastcgiPass,
            Some("unix:/run/php/php7.4-fpm.sock")
        )
        .unwrap_err(),
        EditError::BlockNotFound {
            file: PathBuf::from(SITE),
            path: "http > server[_] > location[/php]".into(),
            step: "location[/php]".into(),
        }
    );
    // A server known by another name.
    assert!(matches!(
        php(
            &["server[example.com]", r"location[~ \.php$]"],
            EditableDirective::FastcgiPass,
            Some("unix:/run/php/php7.4-fpm.sock")
        ),
        Err(EditError::BlockNotFound { .. })
    ));
    // The directive is not in the location `/`.
    assert!(matches!(
        php(
            &["server[_]", "location[/]"],
            EditableDirective::FastcgiPass,
            Some("unix:/run/php/php7.4-fpm.sock")
        ),
        Err(EditError::NotFound { .. })
    ));
    // Adding a directive that is there already.
    assert!(matches!(
        php(PHP_LOCATION, EditableDirective::FastcgiPass, None),
        Err(EditError::AlreadySet { line: 15, .. })
    ));

    // Two servers answering to `_`, and a directive written twice in one block.
    let twice = format!("{site}\nserver {{\n    server_name _;\n    listen 8080;\n}}\n");
    let error = apply_edit(
        &twice,
        &edit(
            SITE,
            path(&["http"], &["server[_]"]),
            EditableDirective::ProxyReadTimeout,
            None,
            "60s",
        ),
    )
    .unwrap_err();
    assert_eq!(
        error,
        EditError::AmbiguousBlock {
            file: PathBuf::from(SITE),
            path: "http > server[_]".into(),
            step: "server[_]".into(),
            lines: vec![2, 19],
        }
    );
    let doubled = site.replace(
        "        fastcgi_pass unix:/run/php/php7.4-fpm.sock;\n",
        "        fastcgi_pass unix:/run/php/php7.4-fpm.sock;\n        fastcgi_pass unix:/run/php/php7.4-fpm.sock;\n",
    );
    assert!(matches!(
        apply_edit(
            &doubled,
            &edit(
                SITE,
                path(&["http"], PHP_LOCATION),
                EditableDirective::FastcgiPass,
                Some("unix:/run/php/php7.4-fpm.sock"),
                "unix:/run/php/php8.2-fpm.sock"
            )
        ),
        Err(EditError::Duplicate { ref lines, .. }) if *lines == [15, 16]
    ));
}

#[test]
fn a_directive_is_edited_only_where_nginx_allows_it() {
    let (_, site) = site_on_php74();
    for (directive, outer, inner) in [
        (
            EditableDirective::FastcgiPass,
            &["http"][..],
            &["server[_]"][..],
        ),
        (
            EditableDirective::WorkerConnections,
            &["http"],
            &["server[_]"],
        ),
        (EditableDirective::WorkerRlimitNofile, &["http"], &[]),
        (EditableDirective::ProxyReadTimeout, &[], &["server[_]"]),
        (
            EditableDirective::ProxyReadTimeout,
            &["stream"],
            &["server[_]"],
        ),
    ] {
        let error =
            apply_edit(&site, &edit(SITE, path(outer, inner), directive, None, "1")).unwrap_err();
        assert!(
            matches!(error, EditError::Context { .. }),
            "{directive} in {outer:?} {inner:?}: {error}"
        );
    }
}

const UPSTREAMS: &str = "/etc/nginx/conf.d/upstreams.conf";

#[test]
fn a_proxied_locations_timeout_and_only_that_one() {
    let dump = fixture_dump("upstreams.txt");
    let conf = file_in_dump(&dump, UPSTREAMS);
    let config = nginx::parse(&dump);
    let slow = config
        .timeouts
        .iter()
        .find(|d| d.name == "proxy_read_timeout")
        .unwrap();
    let result = apply_edit(
        &conf,
        &edit(
            UPSTREAMS,
            slow.block_path.clone(),
            EditableDirective::ProxyReadTimeout,
            Some(&slow.args.join(" ")),
            "90s",
        ),
    )
    .unwrap();
    assert_eq!(
        differing_lines(&conf, &result.new_text),
        [(
            slow.line as usize,
            "        proxy_read_timeout 30s;",
            "        proxy_read_timeout 90s;"
        )]
    );
    let after = nginx::parse(&dump_with(&dump, UPSTREAMS, &result.new_text));
    let timeouts = |c: &NginxConfig| {
        c.timeouts
            .iter()
            .map(|d| (d.name.clone(), d.args.join(" "), d.block_path.to_string()))
            .collect::<Vec<_>>()
    };
    let mut expected = timeouts(&config);
    for t in &mut expected {
        if t.0 == "proxy_read_timeout" {
            t.1 = "90s".into();
        }
    }
    assert_eq!(
        timeouts(&after),
        expected,
        "the other timeouts are untouched"
    );
}

#[test]
fn a_block_on_one_line_gets_the_directive_before_its_brace() {
    let dump = fixture_dump("upstreams.txt");
    let conf = file_in_dump(&dump, UPSTREAMS);
    let api = path(
        &["http"],
        &["server[app.test www.app.test]", "location[/api/]"],
    );
    let result = apply_edit(
        &conf,
        &edit(
            UPSTREAMS,
            api.clone(),
            EditableDirective::ProxyReadTimeout,
            None,
            "2m",
        ),
    )
    .unwrap();
    assert_eq!(
        differing_lines(&conf, &result.new_text),
        [(
            36,
            "    location /api/ { proxy_pass http://127.0.0.1:3000/v1/; }",
            "    location /api/ { proxy_pass http://127.0.0.1:3000/v1/; proxy_read_timeout 2m; }"
        )]
    );
    let after = nginx::parse(&dump_with(&dump, UPSTREAMS, &result.new_text));
    let added = after
        .timeouts
        .iter()
        .find(|d| d.name == "proxy_read_timeout" && d.block_path == api)
        .unwrap();
    assert_eq!(added.args, ["2m"]);

    // And a pass to an upstream block is re-pointed the same way.
    let result = apply_edit(
        &conf,
        &edit(
            UPSTREAMS,
            path(
                &["http"],
                &["server[app.test www.app.test]", "location[/php]"],
            ),
            EditableDirective::FastcgiPass,
            Some("php_pool"),
            "unix:/run/php/php8.2-fpm.sock",
        ),
    )
    .unwrap();
    assert_eq!(
        differing_lines(&conf, &result.new_text),
        [(
            42,
            "    location /php { include fastcgi_params; fastcgi_pass php_pool; }",
            "    location /php { include fastcgi_params; fastcgi_pass unix:/run/php/php8.2-fpm.sock; }"
        )]
    );
}

#[test]
fn nothing_is_edited_inside_an_upstream_block() {
    let dump = fixture_dump("upstreams.txt");
    let conf = file_in_dump(&dump, UPSTREAMS);
    let error = apply_edit(
        &conf,
        &edit(
            UPSTREAMS,
            path(&["http"], &["upstream[app]"]),
            EditableDirective::ProxyConnectTimeout,
            None,
            "5s",
        ),
    )
    .unwrap_err();
    assert!(matches!(error, EditError::Context { .. }), "{error}");
}

#[test]
fn the_resolver_and_its_variable_pass() {
    let dump = fixture_dump("upstreams.txt");
    let conf = file_in_dump(&dump, UPSTREAMS);
    // The resolver is in the file's own top level, which is inside `http`.
    let result = apply_edits(
        &conf,
        &[
            edit(
                UPSTREAMS,
                path(&["http"], &[]),
                EditableDirective::Resolver,
                Some("127.0.0.53 [::1]:5353 valid=30s ipv6=off"),
                "127.0.0.53 valid=10s",
            ),
            edit(
                UPSTREAMS,
                path(&["http"], &["server", "location[/mixed]"]),
                EditableDirective::ProxyPass,
                Some("http://app.internal:3002"),
                "http://app.internal:3002$request_uri",
            ),
        ],
    )
    .unwrap();
    let changed = differing_lines(&conf, &result.new_text);
    assert_eq!(
        changed,
        [
            (
                7,
                "resolver 127.0.0.53 [::1]:5353 valid=30s ipv6=off;",
                "resolver 127.0.0.53 valid=10s;"
            ),
            (
                54,
                "        proxy_pass http://app.internal:3002;",
                "        proxy_pass http://app.internal:3002$request_uri;"
            ),
        ]
    );
    assert_eq!(result.lines, [7, 54]);
    let after = nginx::parse(&dump_with(&dump, UPSTREAMS, &result.new_text));
    assert_eq!(after.resolvers, ["127.0.0.53"]);
}

const MAIN: &str = "/etc/nginx/nginx.conf";

#[test]
fn worker_connections_with_the_descriptor_limit_in_the_main_file() {
    let dump = fixture_dump("debian_default.txt");
    let conf = file_in_dump(&dump, MAIN);
    let result = apply_edits(
        &conf,
        &[
            edit(
                MAIN,
                path(&[], &["events"]),
                EditableDirective::WorkerConnections,
                Some("768"),
                "4096",
            ),
            edit(
                MAIN,
                path(&[], &[]),
                EditableDirective::WorkerRlimitNofile,
                None,
                "8192",
            ),
        ],
    )
    .unwrap();
    let (removed, added) = changed_lines(&result);
    assert_eq!(removed, ["\tworker_connections 768;"]);
    assert_eq!(
        added,
        ["worker_rlimit_nofile 8192;", "\tworker_connections 4096;"]
    );
    // The limit goes with the other main-level directives, before `events`.
    assert!(result.new_text.starts_with(
        "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\nerror_log /var/log/nginx/error.log;\n\
         include /etc/nginx/modules-enabled/*.conf;\nworker_rlimit_nofile 8192;\n\nevents {\n\tworker_connections 4096;\n\t# multi_accept on;\n}\n"
    ), "{}", result.new_text);
    assert_eq!(result.lines, [9, 6]);
    let after = nginx::parse(&dump_with(&dump, MAIN, &result.new_text));
    assert_eq!(after.worker_connections, Some(4096));
    // Comments and the commented-out mail block are kept byte for byte.
    assert_eq!(
        result
            .new_text
            .replace("worker_rlimit_nofile 8192;\n", "")
            .replace("4096", "768"),
        conf
    );
}

#[test]
fn a_resolver_is_added_to_http_with_the_files_tabs() {
    let dump = fixture_dump("debian_default.txt");
    let conf = file_in_dump(&dump, MAIN);
    let result = apply_edit(
        &conf,
        &edit(
            MAIN,
            path(&[], &["http"]),
            EditableDirective::Resolver,
            None,
            "127.0.0.53 valid=30s",
        ),
    )
    .unwrap();
    let (removed, added) = changed_lines(&result);
    assert!(removed.is_empty());
    assert_eq!(added, ["\tresolver 127.0.0.53 valid=30s;"]);
    assert!(
        result.new_text.contains(
            "\tinclude /etc/nginx/sites-enabled/*;\n\tresolver 127.0.0.53 valid=30s;\n}\n"
        )
    );
    let after = nginx::parse(&dump_with(&dump, MAIN, &result.new_text));
    assert_eq!(after.resolvers, ["127.0.0.53"]);
}

const SNIPPET: &str = "/etc/nginx/snippets/fastcgi-php.conf";

#[test]
fn an_included_snippet_is_edited_at_its_own_top_level() {
    let dump = fixture_dump("debian_default.txt");
    let snippet = format!(
        "{}fastcgi_buffers 8 4k; # Debian's size\nfastcgi_buffer_size 4k;\n",
        file_in_dump(&dump, SNIPPET)
    );
    let dump = dump_with(&dump, SNIPPET, &snippet);
    let config = nginx::parse(&dump);
    // Included in the php location: its directives are there, as nginx reads them.
    let here = path(&["http", "server[_]", r"location[~ \.php$]"], &[]);
    let result = apply_edits(
        &snippet,
        &[
            edit(
                SNIPPET,
                here.clone(),
                EditableDirective::FastcgiBuffers,
                Some("8 4k"),
                "16 16k",
            ),
            edit(
                SNIPPET,
                here.clone(),
                EditableDirective::FastcgiBufferSize,
                Some("4k"),
                "32k",
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        differing_lines(&snippet, &result.new_text),
        [
            (
                14,
                "fastcgi_buffers 8 4k; # Debian's size",
                "fastcgi_buffers 16 16k; # Debian's size"
            ),
            (15, "fastcgi_buffer_size 4k;", "fastcgi_buffer_size 32k;"),
        ]
    );
    assert_eq!(config.passes.len(), 1);

    // A comment between the values: the editor will not guess.
    let odd = snippet.replace("fastcgi_buffers 8 4k;", "fastcgi_buffers 8 # eight\n 4k;");
    assert!(matches!(
        apply_edit(
            &odd,
            &edit(
                SNIPPET,
                here,
                EditableDirective::FastcgiBuffers,
                Some("8 4k"),
                "16 16k"
            )
        ),
        Err(EditError::Unsupported { .. })
    ));
}

#[test]
fn quoted_values_and_odd_spacing_are_replaced_whole() {
    let text = "http {\n  server {\n    server_name \"a.test\";\n    location / {\n      proxy_pass   \"http://127.0.0.1:3000\"  ;  # the app\n    }\n  }\n}\n";
    let result = apply_edit(
        text,
        &edit(
            MAIN,
            path(&[], &["http", "server[a.test]", "location[/]"]),
            EditableDirective::ProxyPass,
            Some("http://127.0.0.1:3000"),
            "http://127.0.0.1:3001",
        ),
    )
    .unwrap();
    assert_eq!(
        differing_lines(text, &result.new_text),
        [(
            5,
            "      proxy_pass   \"http://127.0.0.1:3000\"  ;  # the app",
            "      proxy_pass   http://127.0.0.1:3001  ;  # the app"
        )]
    );
}

#[test]
fn a_file_without_a_final_newline_and_an_empty_block() {
    let text = "http {\n\tserver {\n\t\tserver_name x;\n\t\tlocation / {\n\t\t}\n\t}\n}";
    let result = apply_edit(
        text,
        &edit(
            MAIN,
            path(&[], &["http", "server[x]", "location[/]"]),
            EditableDirective::ProxyPass,
            None,
            "http://127.0.0.1:8080",
        ),
    )
    .unwrap();
    assert_eq!(
        result.new_text,
        "http {\n\tserver {\n\t\tserver_name x;\n\t\tlocation / {\n\t\t\tproxy_pass http://127.0.0.1:8080;\n\t\t}\n\t}\n}"
    );
    assert!(
        result
            .diff
            .ends_with("\n }\n\\ No newline at end of file\n"),
        "{}",
        result.diff
    );

    let crlf = "http {\r\n    server {\r\n        server_name x;\r\n    }\r\n}\r\n";
    let result = apply_edit(
        crlf,
        &edit(
            MAIN,
            path(&[], &["http", "server[x]"]),
            EditableDirective::ProxyReadTimeout,
            None,
            "60s",
        ),
    )
    .unwrap();
    assert_eq!(
        result.new_text,
        "http {\r\n    server {\r\n        server_name x;\r\n        proxy_read_timeout 60s;\r\n    }\r\n}\r\n"
    );

    let unclosed = "http {\n    server {\n        server_name x;\n";
    assert!(matches!(
        apply_edit(
            unclosed,
            &edit(
                MAIN,
                path(&[], &["http", "server[x]"]),
                EditableDirective::ProxyReadTimeout,
                None,
                "60s"
            )
        ),
        Err(EditError::Unsupported { .. })
    ));
}

#[test]
fn edits_of_two_files_at_once_are_refused() {
    let (_, site) = site_on_php74();
    let mut other = edit(
        SITE,
        path(&["http"], PHP_LOCATION),
        EditableDirective::FastcgiReadTimeout,
        None,
        "60s",
    );
    other.file = PathBuf::from(SNIPPET);
    let first = edit(
        SITE,
        path(&["http"], PHP_LOCATION),
        EditableDirective::FastcgiSendTimeout,
        None,
        "60s",
    );
    assert!(matches!(
        apply_edits(&site, &[first, other]),
        Err(EditError::MixedFiles { .. })
    ));
    assert_eq!(apply_edits(&site, &[]), Err(EditError::NoEdits));
}

#[test]
fn an_edit_reads_back_from_json() {
    let json = r#"{"file":"/etc/nginx/sites-enabled/default",
        "block_path":{"outer":["http"],"inner":["server[_]","location[~ \\.php$]"]},
        "directive":"fastcgi_pass","old":"unix:/run/php/php7.4-fpm.sock",
        "new":"unix:/run/php/php8.2-fpm.sock"}"#;
    let parsed: NginxEdit = serde_json::from_str(json).unwrap();
    assert_eq!(parsed.block_path, path(&["http"], PHP_LOCATION));
    assert_eq!(parsed.directive, EditableDirective::FastcgiPass);
    assert_eq!(
        serde_json::from_str::<NginxEdit>(&serde_json::to_string(&parsed).unwrap()).unwrap(),
        parsed
    );
    // A directive outside the closed set does not even parse.
    let arbitrary = json.replace("fastcgi_pass", "root");
    assert!(serde_json::from_str::<NginxEdit>(&arbitrary).is_err());
    let extra = json.replace("\"new\"", "\"text\":\"x\",\"new\"");
    assert!(serde_json::from_str::<NginxEdit>(&extra).is_err());
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Any text and any edit: no panic, and every success is a text whose only change is the
/// edit (checked by the editor itself) with a diff that names exactly the changed lines.
#[test]
fn any_text_and_any_edit_never_panic() {
    let dump = fixture_dump("upstreams.txt");
    let base: Vec<String> = [SITE, UPSTREAMS, MAIN, SNIPPET]
        .iter()
        .map(|f| file_in_dump(&dump, f))
        .collect();
    let paths = [
        path(&[], &[]),
        path(&[], &["events"]),
        path(&[], &["http"]),
        path(&["http"], &[]),
        path(&["http"], PHP_LOCATION),
        path(&["http"], &["server[_]"]),
        path(&["http"], &["server", "location[/mixed]"]),
        path(
            &["http"],
            &["server[app.test www.app.test]", "location[/api/]"],
        ),
    ];
    let values = [
        "60s",
        "8 16k",
        "16k",
        "4096",
        "unix:/run/php/php8.2-fpm.sock",
        "http://127.0.0.1:3001",
        "127.0.0.53 valid=10s",
        "x; y",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut successes = 0;
    for _ in 0..3_000 {
        let mut text = base[rng.below(base.len())].clone().into_bytes();
        // Mutate: cut, flip, or insert nginx syntax.
        for _ in 0..rng.below(4) {
            if text.is_empty() {
                break;
            }
            let at = rng.below(text.len());
            match rng.below(3) {
                0 => text.truncate(at),
                1 => text[at] = b"{};#\"'\\\n x$"[rng.below(11)],
                _ => text.insert(at, b"{};#\"\n"[rng.below(6)]),
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let directive = EditableDirective::ALL[rng.below(EditableDirective::ALL.len())];
        let old = match rng.below(3) {
            0 => None,
            _ => Some(values[rng.below(values.len())].to_owned()),
        };
        let the_edit = NginxEdit {
            file: PathBuf::from("/etc/nginx/x.conf"),
            block_path: paths[rng.below(paths.len())].clone(),
            directive,
            old,
            new: values[rng.below(values.len())].to_owned(),
        };
        if let Ok(result) = apply_edit(&text, &the_edit) {
            successes += 1;
            assert_eq!(result.sha256_before, sha256_hex(&text));
            assert!(!result.diff.is_empty());
            assert!(!result.new_text.contains("x; y"));
        }
    }
    // The run reaches real edits, not only refusals.
    assert!(successes > 0);
}

/// The controller's policies name edits by the list in `gatemend_proto`; the agent's closed
/// sets must be that list, no more and no less.
#[test]
fn the_closed_sets_are_the_protocols() {
    let mut ours: Vec<&str> = EditableDirective::ALL.iter().map(|d| d.name()).collect();
    ours.extend(gatemend_agent::edit::PoolKey::ALL.iter().map(|k| k.name()));
    ours.sort_unstable();
    let mut shared = gatemend_proto::EDITABLE_DIRECTIVES.to_vec();
    shared.sort_unstable();
    assert_eq!(ours, shared);
    for directive in EditableDirective::ALL {
        assert_eq!(
            EditableDirective::from_name(directive.name()),
            Some(directive)
        );
        let json = serde_json::to_string(&directive).unwrap();
        assert_eq!(json, format!("\"{}\"", directive.name()));
    }
}
