//! The nginx config parser on `nginx -T` output recorded on testbed hosts
//! (`fixtures/nginx/`, see the README there), on the grammar's corners, and on garbage.

// Test helpers panic on what a test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use gatemend_agent::probe::nginx::{
    self, BlockPath, BlockStep, LogDestination, NginxConfig, Pass, PassKind, Target, UpstreamBlock,
};

fn fixture(name: &str) -> NginxConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    nginx::parse(&String::from_utf8_lossy(&bytes))
}

fn tcp(host: &str, port: u16) -> Target {
    Target::Tcp {
        host: host.to_owned(),
        port,
    }
}

fn unix(path: &str) -> Target {
    Target::Unix(PathBuf::from(path))
}

#[track_caller]
fn pass_at<'a>(config: &'a NginxConfig, location: &str) -> &'a Pass {
    let found: Vec<&Pass> = config
        .passes
        .iter()
        .filter(|p| p.location.as_deref() == Some(location))
        .collect();
    match found.as_slice() {
        [one] => one,
        other => panic!("{} passes in location {location}: {other:#?}", other.len()),
    }
}

#[track_caller]
fn upstream<'a>(config: &'a NginxConfig, name: &str) -> &'a UpstreamBlock {
    config
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("no upstream {name}: {:#?}", config.upstreams))
}

#[test]
fn debian_default_host_config() {
    let config = fixture("debian_default.txt");
    assert_eq!(config.user.as_deref(), Some("www-data"));
    assert_eq!(config.user_group, None);
    assert_eq!(config.worker_processes.as_deref(), Some("auto"));
    assert_eq!(config.worker_connections, Some(768));
    assert_eq!(
        config.files,
        [
            "/etc/nginx/nginx.conf",
            "/etc/nginx/modules-enabled/50-mod-http-echo.conf",
            "/etc/nginx/mime.types",
            "/etc/nginx/sites-enabled/default",
            "/etc/nginx/snippets/fastcgi-php.conf",
            "/etc/nginx/fastcgi.conf",
        ]
        .map(PathBuf::from)
    );

    let [error_log] = config.error_logs.as_slice() else {
        panic!("{:#?}", config.error_logs)
    };
    assert_eq!(error_log.path, "/var/log/nginx/error.log");
    assert_eq!(error_log.destination, LogDestination::File);
    assert_eq!(error_log.level, None);
    assert_eq!(error_log.file, Path::new("/etc/nginx/nginx.conf"));
    // The line in nginx.conf itself, not in the dump.
    let nginx_conf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nginx/debian_default.txt"),
    )
    .unwrap();
    let dump_line = nginx_conf
        .lines()
        .position(|l| l == "error_log /var/log/nginx/error.log;")
        .unwrap();
    assert_eq!(error_log.line as usize, dump_line); // the dump's line 1 is the marker

    let [access_log] = config.access_logs.as_slice() else {
        panic!("{:#?}", config.access_logs)
    };
    assert_eq!(access_log.path, "/var/log/nginx/access.log");
    assert_eq!(access_log.format, "combined");

    let [php] = config.passes.as_slice() else {
        panic!("{:#?}", config.passes)
    };
    assert_eq!(php.kind, PassKind::Fastcgi);
    assert_eq!(php.raw, "unix:/run/php/php8.2-fpm.sock");
    assert_eq!(php.target, unix("/run/php/php8.2-fpm.sock"));
    assert_eq!(php.server_names, ["_"]);
    assert_eq!(php.location.as_deref(), Some(r"~ \.php$"));
    assert_eq!(php.file, Path::new("/etc/nginx/sites-enabled/default"));
    assert_eq!(
        nginx_file_line(&nginx_conf, "/etc/nginx/sites-enabled/default", php.line).trim(),
        "fastcgi_pass unix:/run/php/php8.2-fpm.sock;"
    );

    assert!(config.upstreams.is_empty());
    assert!(config.resolvers.is_empty());
    assert!(config.timeouts.is_empty(), "{:#?}", config.timeouts);
    assert_eq!(config.targets(), [unix("/run/php/php8.2-fpm.sock")]);
    assert_eq!(
        config.passes_to("unix:/run/php/php8.2-fpm.sock"),
        [php],
        "the classifier's form"
    );
    assert!(config.passes_to("unix:/run/php/php7.4-fpm.sock").is_empty());
}

/// Line `line` of `file` as the dump holds it.
fn nginx_file_line(dump: &str, file: &str, line: u32) -> String {
    let marker = format!("# configuration file {file}:");
    let start = dump.lines().position(|l| l == marker).unwrap();
    dump.lines().nth(start + line as usize).unwrap().to_owned()
}

#[test]
fn upstream_blocks_and_their_servers() {
    let config = fixture("upstreams.txt");
    let app = upstream(&config, "app");
    assert_eq!(app.file, Path::new("/etc/nginx/conf.d/upstreams.conf"));
    assert_eq!(app.line, 10);
    let servers: Vec<_> = app
        .servers
        .iter()
        .map(|s| {
            (
                s.address.as_str(),
                s.target.clone(),
                s.max_fails,
                s.fail_timeout.as_deref(),
                s.weight,
                s.backup,
                s.down,
                s.line,
            )
        })
        .collect();
    assert_eq!(
        servers,
        [
            (
                "127.0.0.1:3000",
                tcp("127.0.0.1", 3000),
                Some(3),
                Some("15s"),
                Some(5),
                false,
                false,
                12
            ),
            (
                "[::1]:3001",
                tcp("::1", 3001),
                None,
                None,
                None,
                true,
                false,
                13
            ),
            (
                "unix:/run/app/app.sock",
                unix("/run/app/app.sock"),
                None,
                None,
                None,
                false,
                true,
                14
            ),
            (
                "app.internal:3002",
                tcp("app.internal", 3002),
                None,
                None,
                None,
                false,
                false,
                15
            ),
        ]
    );
    assert_eq!(
        upstream(&config, "php_pool").servers[0].target,
        unix("/run/php/php8.2-fpm.sock")
    );
    assert_eq!(
        upstream(&config, "grpc_backend").servers[0].target,
        tcp("127.0.0.1", 50051)
    );
    // `keepalive` and `zone` are not servers.
    assert_eq!(config.upstreams.len(), 3);
}

#[test]
fn every_pass_form_is_decoded() {
    let config = fixture("upstreams.txt");
    let expect = [
        ("/", PassKind::Proxy, Target::Upstream("app".into())),
        ("/api/", PassKind::Proxy, tcp("127.0.0.1", 3000)),
        ("/sock", PassKind::Proxy, unix("/run/app/app.sock")),
        ("/https", PassKind::Proxy, tcp("backend.example", 443)),
        ("= /v6", PassKind::Proxy, tcp("::1", 80)),
        (
            "/var",
            PassKind::Proxy,
            Target::Variable("http://$up".into()),
        ),
        (
            r"~ ^/quoted/(\d+);x$",
            PassKind::Proxy,
            tcp("127.0.0.1", 3006),
        ),
        (
            "/php",
            PassKind::Fastcgi,
            Target::Upstream("php_pool".into()),
        ),
        ("/fcgi_tcp", PassKind::Fastcgi, tcp("127.0.0.1", 9000)),
        ("/uwsgi", PassKind::Uwsgi, tcp("127.0.0.1", 3031)),
        ("/scgi", PassKind::Scgi, unix("/run/scgi.sock")),
        (
            "/grpc",
            PassKind::Grpc,
            Target::Upstream("grpc_backend".into()),
        ),
        ("/grpcs", PassKind::Grpc, tcp("127.0.0.1", 50052)),
        ("/mixed", PassKind::Proxy, tcp("app.internal", 3002)),
    ];
    for (location, kind, target) in expect {
        let pass = pass_at(&config, location);
        assert_eq!((pass.kind, &pass.target), (kind, &target), "{location}");
    }
    let quoted = pass_at(&config, r"~ ^/quoted/(\d+);x$");
    assert_eq!(quoted.raw, "http://127.0.0.1:3006", "quotes are removed");
    let api = pass_at(&config, "/api/");
    assert_eq!(api.server_names, ["app.test", "www.app.test"]);
    assert_eq!(api.file, Path::new("/etc/nginx/conf.d/upstreams.conf"));
    assert_eq!(api.line, 36);
    // A server block without server_name.
    assert!(pass_at(&config, "/mixed").server_names.is_empty());
    // The Debian default site is still there, in its own server.
    assert_eq!(pass_at(&config, r"~ \.php$").server_names, ["_"]);
    // `location /off { access_log off; }` passes nowhere and logs nowhere.
    assert!(
        config
            .passes
            .iter()
            .all(|p| p.location.as_deref() != Some("/off")),
        "{:#?}",
        config.passes
    );
}

#[test]
fn logs_formats_resolvers_and_timeouts() {
    let config = fixture("upstreams.txt");
    let errors: Vec<_> = config
        .error_logs
        .iter()
        .map(|l| (l.path.as_str(), l.destination.clone(), l.level.as_deref()))
        .collect();
    assert_eq!(
        errors,
        [
            ("/var/log/nginx/error.log", LogDestination::File, None),
            (
                "/var/log/nginx/app.error.log",
                LogDestination::File,
                Some("warn")
            ),
            ("stderr", LogDestination::Stderr, None),
        ]
    );
    let access: Vec<_> = config
        .access_logs
        .iter()
        .map(|l| (l.path.as_str(), l.destination.clone(), l.format.as_str()))
        .collect();
    assert_eq!(
        access,
        [
            (
                "/var/log/nginx/access.log",
                LogDestination::File,
                "combined"
            ),
            (
                "/var/log/nginx/app.access.log",
                LogDestination::File,
                "timed"
            ),
            (
                "syslog:server=unix:/dev/log,tag=app",
                LogDestination::Syslog,
                "combined"
            ),
        ]
    );
    assert_eq!(
        config.log_formats.get("timed").map(String::as_str),
        Some(
            "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \
             \"$http_referer\" rt=$request_time uct=\"$upstream_connect_time\""
        )
    );
    assert_eq!(
        config.log_formats.get("plain").map(String::as_str),
        Some("$remote_addr")
    );
    assert_eq!(config.resolvers, ["127.0.0.53", "[::1]:5353"]);
    let timeouts: Vec<_> = config
        .timeouts
        .iter()
        .map(|d| (d.name.as_str(), d.args.join(" "), d.line))
        .collect();
    assert_eq!(
        timeouts,
        [
            ("resolver_timeout", "5s".to_owned(), 8),
            ("proxy_connect_timeout", "2s".to_owned(), 34),
            ("proxy_read_timeout", "30s".to_owned(), 55),
        ]
    );
}

#[test]
fn passes_to_finds_passes_by_the_upstream_the_log_names() {
    let config = fixture("upstreams.txt");
    let locations = |upstream: &str| -> Vec<String> {
        config
            .passes_to(upstream)
            .iter()
            .map(|p| p.location.clone().unwrap_or_default())
            .collect()
    };
    // Direct, and through upstream `app` whose first server it is.
    assert_eq!(locations("127.0.0.1:3000"), ["/", "/api/"]);
    assert_eq!(locations("[::1]:3001"), ["/"]);
    assert_eq!(locations("[::1]:80"), ["= /v6"]);
    assert_eq!(
        locations("unix:/run/app/app.sock"),
        ["/", "/sock"],
        "an upstream server and a proxy_pass to a socket with a URI"
    );
    assert_eq!(
        locations("unix:/run/php/php8.2-fpm.sock"),
        ["/php", r"~ \.php$"]
    );
    assert_eq!(
        locations("fastcgi://unix:/run/php/php8.2-fpm.sock:"),
        ["/php", r"~ \.php$"]
    );
    assert_eq!(
        locations("http://127.0.0.1:3006/quoted/1;x"),
        [r"~ ^/quoted/(\d+);x$"]
    );
    // `no live upstreams` lines name the block.
    assert_eq!(locations("app"), ["/"]);
    assert_eq!(locations("grpc_backend"), ["/grpc"]);
    assert_eq!(locations("127.0.0.1:50051"), ["/grpc"]);
    assert!(locations("127.0.0.1:3999").is_empty());
    assert!(locations("").is_empty());
    assert!(locations("unix:").is_empty());
}

#[test]
fn localhost_matches_the_loopback_addresses_nginx_logs() {
    let config = nginx::parse(
        "# configuration file /etc/nginx/nginx.conf:\n\
         http { server { location / { proxy_pass http://localhost:3000; } } }\n",
    );
    assert_eq!(config.passes_to("127.0.0.1:3000").len(), 1);
    assert_eq!(config.passes_to("[::1]:3000").len(), 1);
    assert!(config.passes_to("10.0.0.1:3000").is_empty());
}

#[test]
fn targets_are_every_concrete_address_once() {
    let config = fixture("upstreams.txt");
    assert_eq!(
        config.targets(),
        [
            tcp("127.0.0.1", 3000),
            unix("/run/app/app.sock"),
            tcp("backend.example", 443),
            tcp("::1", 80),
            tcp("127.0.0.1", 3006),
            tcp("127.0.0.1", 9000),
            tcp("127.0.0.1", 3031),
            unix("/run/scgi.sock"),
            tcp("127.0.0.1", 50052),
            tcp("app.internal", 3002),
            unix("/run/php/php8.2-fpm.sock"),
            tcp("::1", 3001),
            tcp("127.0.0.1", 50051),
        ]
    );
}

#[test]
fn targets_from_what_the_log_names() {
    let cases = [
        (
            "unix:/run/php/php8.2-fpm.sock",
            Some(unix("/run/php/php8.2-fpm.sock")),
        ),
        (
            "fastcgi://unix:/run/php/php8.2-fpm.sock:",
            Some(unix("/run/php/php8.2-fpm.sock")),
        ),
        (
            "http://unix:/run/app.sock:/api",
            Some(unix("/run/app.sock")),
        ),
        ("127.0.0.1:3000", Some(tcp("127.0.0.1", 3000))),
        ("http://127.0.0.1:3000/x?y", Some(tcp("127.0.0.1", 3000))),
        ("[::1]:3000", Some(tcp("::1", 3000))),
        ("\"https://10.0.0.9:443/\"", Some(tcp("10.0.0.9", 443))),
        ("flaky", Some(Target::Upstream("flaky".into()))),
        ("", None),
        ("unix:", None),
        ("127.0.0.1:99999", None),
        ("[::1", None),
    ];
    for (text, expected) in cases {
        assert_eq!(Target::from_log(text), expected, "{text:?}");
    }
    for target in [unix("/run/a.sock"), tcp("127.0.0.1", 80), tcp("::1", 3000)] {
        assert_eq!(
            Target::from_log(&target.to_string()),
            Some(target.clone()),
            "round trip"
        );
    }
}

#[test]
fn upstream_blocks_by_name_ignore_case() {
    let config = fixture("upstreams.txt");
    assert_eq!(config.upstream("APP").map(|u| u.servers.len()), Some(4));
    assert!(config.upstream("nope").is_none());
}

#[test]
fn target_display_is_the_logs_form() {
    assert_eq!(
        unix("/run/php/php8.2-fpm.sock").to_string(),
        "unix:/run/php/php8.2-fpm.sock"
    );
    assert_eq!(tcp("127.0.0.1", 3000).to_string(), "127.0.0.1:3000");
    assert_eq!(tcp("::1", 3000).to_string(), "[::1]:3000");
}

/// A dump in one string: `(path, body)` pairs as `nginx -T` prints them.
fn dump(files: &[(&str, &str)]) -> String {
    files
        .iter()
        .map(|(path, body)| format!("# configuration file {path}:\n{body}\n"))
        .collect()
}

#[test]
fn included_files_take_the_context_of_their_include() {
    let text = dump(&[
        (
            "/etc/nginx/nginx.conf",
            "user nginx web;\nhttp {\n    include sites/*.conf;\n}\n",
        ),
        (
            "/etc/nginx/sites/a.conf",
            "server {\n  server_name a.test;\n  location /x {\n    include snippets/pass.conf;\n  }\n}\n",
        ),
        (
            "/etc/nginx/snippets/pass.conf",
            "proxy_pass http://127.0.0.1:4000;\n",
        ),
        (
            "/etc/nginx/sites/b.conf",
            "server { server_name b.test; location /y { include /etc/nginx/snippets/pass.conf; } }",
        ),
    ]);
    let config = nginx::parse(&text);
    assert_eq!(config.user.as_deref(), Some("nginx"));
    assert_eq!(config.user_group.as_deref(), Some("web"));
    let seen: Vec<_> = config
        .passes
        .iter()
        .map(|p| {
            (
                p.server_names.join(","),
                p.location.clone().unwrap_or_default(),
                p.file.display().to_string(),
                p.line,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "a.test".into(),
                "/x".into(),
                "/etc/nginx/snippets/pass.conf".into(),
                1
            ),
            (
                "b.test".into(),
                "/y".into(),
                "/etc/nginx/snippets/pass.conf".into(),
                1
            ),
        ]
    );
}

#[test]
fn include_cycles_end() {
    let text = dump(&[
        (
            "/etc/nginx/nginx.conf",
            "include /etc/nginx/nginx.conf; include a.conf;",
        ),
        (
            "/etc/nginx/a.conf",
            "include nginx.conf; worker_connections 9;",
        ),
    ]);
    assert_eq!(nginx::parse(&text).worker_connections, Some(9));
}

#[test]
fn grammar_corners() {
    let text = dump(&[(
        "/etc/nginx/nginx.conf",
        concat!(
            "# a comment; { not a block\n",
            "error_log\n  /var/log/a#b.log   # the # inside a word is not a comment\n  info;\n",
            "log_format j escape=json '{\"a\":\"$a\"}' \"\\\"q\\\" \\\\ \\t\";\n",
            "http { server { location ~ \"^/(?<x>[a-z]{2})$\" { proxy_pass http://${x}.example; } ",
            "location /q { fastcgi_pass \"unix:/run/a b.sock\"; } } }\n",
            "events { worker_connections 'x'; }\n",
            "user \"www data\"",
        ),
    )]);
    let config = nginx::parse(&text);
    let [log] = config.error_logs.as_slice() else {
        panic!("{:#?}", config.error_logs)
    };
    assert_eq!(
        (log.path.as_str(), log.level.as_deref(), log.line),
        ("/var/log/a#b.log", Some("info"), 2)
    );
    assert_eq!(
        config.log_formats.get("j").map(String::as_str),
        Some("{\"a\":\"$a\"}\"q\" \\ \t")
    );
    let regex = &config.passes[0];
    // A quoted regex keeps its `{2}`; `${x}` is a variable, not a block.
    assert_eq!(regex.location.as_deref(), Some("~ ^/(?<x>[a-z]{2})$"));
    assert_eq!(regex.target, Target::Variable("http://${x}.example".into()));
    assert_eq!(config.passes[1].target, unix("/run/a b.sock"));
    assert_eq!(config.worker_connections, None, "not a number");
    assert_eq!(
        config.user.as_deref(),
        Some("www data"),
        "a directive cut off at the end"
    );
}

#[test]
fn text_without_markers_is_read_as_one_unnamed_file() {
    let config = nginx::parse("worker_processes 4;\nerror_log stderr;\n");
    assert_eq!(config.worker_processes.as_deref(), Some("4"));
    assert_eq!(config.error_logs[0].destination, LogDestination::Stderr);
    assert_eq!(config.error_logs[0].file, PathBuf::new());
    assert!(config.files.is_empty());
}

#[test]
fn unbalanced_and_hostile_input_gives_a_partial_config() {
    for text in [
        "",
        "}}}}",
        "{{{{",
        "http { server { proxy_pass",
        "\"unterminated",
        "'",
        "\\",
        ";;;{;};",
        "# configuration file :\n",
        "# configuration file /x:\ninclude /x; include *; include [;",
        "upstream { server; server :; server [::1; server [::1]x; server a:99999; }",
        "proxy_pass ; fastcgi_pass unix:; proxy_pass http://; proxy_pass http://[; grpc_pass :80;",
    ] {
        let config = nginx::parse(text);
        let _ = (config.targets(), config.passes_to(text));
    }
    let deep = "http {".repeat(100_000) + "user deep;" + &"}".repeat(100_000);
    assert_eq!(
        nginx::parse(&deep).user,
        None,
        "cut off below the nesting limit"
    );
    let shallow = "http {".repeat(10) + "user shallow;" + &"}".repeat(10);
    assert_eq!(nginx::parse(&shallow).user.as_deref(), Some("shallow"));
}

#[test]
fn include_fan_out_is_bounded() {
    // Each file includes the next twice: 2^40 visits if nothing bounds them.
    let mut files = Vec::new();
    for i in 0..40 {
        files.push((
            format!("/etc/nginx/f{i}.conf"),
            format!(
                "include f{}.conf; include f{}.conf; keepalive_timeout 1s;",
                i + 1,
                i + 1
            ),
        ));
    }
    let text = dump(
        &files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_str()))
            .collect::<Vec<_>>(),
    );
    let config = nginx::parse(&text);
    assert!(!config.timeouts.is_empty());
    assert!(config.timeouts.len() <= 1_000_000);
}

/// Random bytes, and random mixes of the grammar's characters, never panic.
#[test]
fn random_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e67696e78);
    let alphabet: &[u8] =
        b"{};#'\"\\$ \n\tabcunix:/[]:80http://proxy_pass include server location upstream";
    for round in 0..2000 {
        let len = rng.random_range(0..400);
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..len).map(|_| rng.random()).collect()
        } else {
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        };
        let text = String::from_utf8_lossy(&bytes);
        let text = if round % 3 == 0 {
            format!("# configuration file /etc/nginx/nginx.conf:\n{text}")
        } else {
            text.into_owned()
        };
        let config = nginx::parse(&text);
        let _ = (config.targets(), config.passes_to(&text));
    }
}

fn steps(path: &[&str]) -> Vec<BlockStep> {
    path.iter()
        .map(|s| BlockStep::try_from((*s).to_owned()).unwrap())
        .collect()
}

#[test]
fn block_paths_run_from_the_main_file_through_includes() {
    let config = fixture("debian_default.txt");
    let [php] = config.passes.as_slice() else {
        panic!("{:#?}", config.passes)
    };
    // sites-enabled/default is included in `http`; the location is in its own text.
    assert_eq!(php.block_path.outer, steps(&["http"]));
    assert_eq!(
        php.block_path.inner,
        steps(&["server[_]", r"location[~ \.php$]"])
    );
    assert_eq!(
        php.block_path.to_string(),
        r"http > server[_] > location[~ \.php$]"
    );

    let config = fixture("upstreams.txt");
    let read = config
        .timeouts
        .iter()
        .find(|d| d.name == "proxy_read_timeout")
        .unwrap();
    assert_eq!(
        read.block_path.to_string(),
        "http > server > location[/mixed]",
        "a server without server_name has no key"
    );
    let keepalive = config
        .timeouts
        .iter()
        .find(|d| d.name == "resolver_timeout")
        .unwrap();
    assert_eq!(keepalive.block_path.outer, steps(&["http"]));
    assert!(keepalive.block_path.inner.is_empty());
    let quoted = config
        .passes
        .iter()
        .find(|p| p.raw == "http://127.0.0.1:3006")
        .unwrap();
    assert_eq!(
        quoted.block_path.inner,
        steps(&[
            "server[app.test www.app.test]",
            r"location[~ ^/quoted/(\d+);x$]"
        ]),
        "the key is the unquoted arguments"
    );
}

#[test]
fn a_snippet_included_twice_has_both_block_paths() {
    let text = dump(&[
        (
            "/etc/nginx/nginx.conf",
            "http {\n    include sites/*.conf;\n}\n",
        ),
        (
            "/etc/nginx/sites/a.conf",
            "server {\n  server_name a.test;\n  location /x {\n    include snippets/pass.conf;\n  }\n}\n",
        ),
        (
            "/etc/nginx/snippets/pass.conf",
            "proxy_pass http://127.0.0.1:4000;\n",
        ),
        (
            "/etc/nginx/sites/b.conf",
            "server { server_name b.test; location /y { include /etc/nginx/snippets/pass.conf; } }",
        ),
    ]);
    let config = nginx::parse(&text);
    let paths: Vec<String> = config
        .passes
        .iter()
        .map(|p| format!("{:?} | {:?}", p.block_path.outer, p.block_path.inner))
        .collect();
    assert_eq!(
        config
            .passes
            .iter()
            .map(|p| (p.block_path.outer.clone(), p.block_path.inner.clone()))
            .collect::<Vec<_>>(),
        [
            (steps(&["http", "server[a.test]", "location[/x]"]), vec![]),
            (steps(&["http", "server[b.test]", "location[/y]"]), vec![]),
        ],
        "{paths:#?}"
    );
}

#[test]
fn block_steps_read_back_what_they_print() {
    for text in [
        "http",
        "server[_]",
        "server[a.test www.a.test]",
        r"location[~ ^/[a-z]+\.php$]",
        "location[= /]",
        "if[($request_method = POST)]",
        "upstream[php_pool]",
    ] {
        let step = BlockStep::try_from(text.to_owned()).unwrap();
        assert_eq!(step.to_string(), text);
        let json = serde_json::to_string(&step).unwrap();
        let back: BlockStep = serde_json::from_str(&json).unwrap();
        assert_eq!(back, step);
    }
    let step = BlockStep::try_from(r"location[~ ^/[a-z]+$]".to_owned()).unwrap();
    assert_eq!(step.directive, "location");
    assert_eq!(step.key, r"~ ^/[a-z]+$", "the key runs to the last bracket");
    for bad in ["", "[x]", "location[open", "Server", "loc ation", "a;b"] {
        assert!(
            BlockStep::try_from(bad.to_owned()).is_err(),
            "{bad:?} was read as a step"
        );
    }
    let path = BlockPath::default();
    assert_eq!(path.to_string(), "main");
    assert_eq!(path.innermost(), None);
}
