//! Access-log lines against their `log_format`, and the 502/504 counts per upstream.
//!
//! The fixtures in `fixtures/access/` are what nginx 1.22 wrote on a testbed host (see the
//! README there): `combined.log` in the predefined format, `upstream.log` in the same requests
//! with `$upstream_addr $upstream_status` appended.

// A test reports a failure by panicking.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use gatemend_agent::detect::access::{
    AccessFields, AccessRates, COMBINED, Counts, Dropped, LogFormat, NO_UPSTREAM, OTHER_UPSTREAMS,
    Replay, Traffic, host_port, list_items, parse_time_local, request_path, valid_host,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const UPSTREAM_FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $upstream_addr $upstream_status"#;

fn fixture(name: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/access")
        .join(name);
    std::fs::read(path)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn counts(bad_gateway: u64, gateway_timeout: u64) -> Counts {
    Counts {
        bad_gateway,
        gateway_timeout,
    }
}

#[test]
fn every_combined_line_parses_with_its_status_and_time() {
    let format = LogFormat::compile("combined").unwrap();
    assert!(!format.has_upstream());
    let lines = fixture("combined.log");
    let mut statuses = Vec::new();
    for line in &lines {
        let fields = format
            .parse(line)
            .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(line)));
        assert_eq!(fields.upstream_addr, None);
        let time = fields.time_unix().unwrap();
        // The recording run: 2026-11-21 around 03:14 UTC.
        assert!((1_795_230_000..1_795_240_000).contains(&time), "{time}");
        statuses.push(fields.status.unwrap());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 502).count(), 7);
    assert_eq!(statuses.iter().filter(|&&s| s == 504).count(), 1);
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 4);
}

#[test]
fn combined_is_the_predefined_format_spelled_out() {
    let named = LogFormat::compile("combined").unwrap();
    let spelled = LogFormat::compile(COMBINED).unwrap();
    assert_eq!(named, spelled);
}

#[test]
fn combined_counts_every_502_and_504_under_no_upstream() {
    let format = LogFormat::compile("combined").unwrap();
    let mut rates = AccessRates::new(60);
    for line in fixture("combined.log") {
        let fields = format.parse(&line).unwrap();
        rates.record(&fields, fields.time_unix().unwrap() as u64);
    }
    let all = rates.rates(1_795_230_900);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].upstream, NO_UPSTREAM);
    assert_eq!(all[0].total, counts(7, 1));
}

#[test]
fn every_upstream_line_parses_with_its_upstream_fields() {
    let format = LogFormat::compile(UPSTREAM_FORMAT).unwrap();
    assert!(format.has_upstream());
    let lines = fixture("upstream.log");
    let combined = LogFormat::compile("combined").unwrap();
    let plain = fixture("combined.log");
    assert_eq!(lines.len(), plain.len());
    for (line, plain) in lines.iter().zip(&plain) {
        let fields = format
            .parse(line)
            .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(line)));
        // The same request in both logs: the same status and time.
        let base = combined.parse(plain).unwrap();
        assert_eq!(fields.status, base.status);
        assert_eq!(fields.time_local, base.time_local);
        assert!(fields.upstream_addr.is_some());
        assert!(fields.upstream_status.is_some());
    }
    let php_502 = lines
        .iter()
        .find(|l| l.ends_with(b"unix:/run/php/php8.2-fpm.sock 502"))
        .unwrap();
    let f = format.parse(php_502).unwrap();
    assert_eq!(f.status, Some(502));
    assert_eq!(f.upstream_addr, Some(&b"unix:/run/php/php8.2-fpm.sock"[..]));
    assert_eq!(f.upstream_status, Some(&b"502"[..]));
    let pair = lines
        .iter()
        .find(|l| l.starts_with(b"10.77.") && l.windows(5).any(|w| w == b"/pair"))
        .unwrap();
    let f = format.parse(pair).unwrap();
    assert_eq!(
        f.upstream_addr,
        Some(&b"127.0.0.1:3000, 127.0.0.1:3001"[..])
    );
    assert_eq!(f.upstream_status, Some(&b"502, 502"[..]));
    let hang = lines
        .iter()
        .find(|l| l.windows(5).any(|w| w == b"/hang"))
        .unwrap();
    let f = format.parse(hang).unwrap();
    assert_eq!(f.status, Some(504));
    assert_eq!(f.upstream_addr, Some(&b"127.0.0.1:3009"[..]));
    let nginx_itself = lines
        .iter()
        .find(|l| l.windows(8).any(|w| w == b"/missing"))
        .unwrap();
    let f = format.parse(nginx_itself).unwrap();
    assert_eq!(f.status, Some(404));
    assert_eq!(f.upstream_addr, Some(&b"-"[..]));
}

#[test]
fn upstream_format_counts_each_try_against_its_upstream() {
    let format = LogFormat::compile(UPSTREAM_FORMAT).unwrap();
    let mut rates = AccessRates::new(60);
    for line in fixture("upstream.log") {
        let fields = format.parse(&line).unwrap();
        rates.record(&fields, fields.time_unix().unwrap() as u64);
    }
    let now = 1_795_230_900;
    let total = |name: &str| rates.rate(name, now).unwrap().total;
    assert_eq!(total("unix:/run/php/php8.2-fpm.sock"), counts(3, 0));
    assert_eq!(total("127.0.0.1:3000"), counts(3, 0));
    assert_eq!(total("127.0.0.1:3001"), counts(2, 0));
    // Both peers marked down (max_fails=1): nginx names the group, "no live upstreams".
    assert_eq!(total("gm_pair"), counts(1, 0));
    assert_eq!(total("127.0.0.1:3002"), counts(1, 0));
    assert_eq!(total("127.0.0.1:3009"), counts(0, 1));
    // Requests nginx answered itself (404, `return 200`) and 200s count nowhere.
    assert_eq!(rates.rate(NO_UPSTREAM, now), None);
}

#[test]
fn an_internal_redirect_separates_groups_with_a_colon() {
    let format = LogFormat::compile(UPSTREAM_FORMAT).unwrap();
    let lines = fixture("upstream.log");
    let redirect = lines
        .iter()
        .find(|l| l.windows(9).any(|w| w == b"/redirect"))
        .unwrap();
    let f = format.parse(redirect).unwrap();
    assert_eq!(
        f.upstream_addr,
        Some(&b"127.0.0.1:3000 : 127.0.0.1:3002"[..])
    );
    assert_eq!(f.upstream_status, Some(&b"502 : 502"[..]));
    assert_eq!(
        f.attempts(),
        vec![
            (&b"127.0.0.1:3000"[..], Some(502)),
            (&b"127.0.0.1:3002"[..], Some(502))
        ]
    );
}

#[test]
fn a_user_agent_with_spaces_quotes_and_brackets_does_not_shift_the_fields() {
    let format = LogFormat::compile(UPSTREAM_FORMAT).unwrap();
    let lines = fixture("upstream.log");
    let odd = lines
        .iter()
        .find(|l| l.windows(7).any(|w| w == b"Mozilla"))
        .unwrap();
    let f = format.parse(odd).unwrap();
    assert_eq!(f.status, Some(502));
    assert_eq!(f.upstream_addr, Some(&b"gm_pair"[..]));
    assert_eq!(f.upstream_status, Some(&b"502"[..]));
}

#[test]
fn upstream_fields_may_come_first_and_in_any_order() {
    let format = LogFormat::compile(
        "$upstream_status|$upstream_addr [$time_local] ${status} rt=$request_time",
    )
    .unwrap();
    let f = format
        .parse(b"502, 504 : 502|10.0.0.1:80, 10.0.0.2:80 : unix:/run/a.sock [21/Nov/2026:03:14:33 +0000] 502 rt=1.001")
        .unwrap();
    assert_eq!(f.status, Some(502));
    assert_eq!(f.time_unix(), Some(1_795_230_873));
    assert_eq!(
        f.attempts(),
        vec![
            (&b"10.0.0.1:80"[..], Some(502)),
            (&b"10.0.0.2:80"[..], Some(504)),
            (&b"unix:/run/a.sock"[..], Some(502)),
        ]
    );
}

#[test]
fn without_upstream_status_the_client_status_counts_against_the_last_try() {
    let format = LogFormat::compile("$status $upstream_addr").unwrap();
    let f = format.parse(b"502 10.0.0.1:80, 10.0.0.2:80").unwrap();
    assert_eq!(
        f.attempts(),
        vec![
            (&b"10.0.0.1:80"[..], None),
            (&b"10.0.0.2:80"[..], Some(502))
        ]
    );
}

#[test]
fn a_line_that_does_not_fit_the_format_is_none() {
    let format = LogFormat::compile(UPSTREAM_FORMAT).unwrap();
    let combined = LogFormat::compile("combined").unwrap();
    assert_eq!(format.parse(b""), None);
    assert_eq!(
        combined.parse(b"2026/11/21 03:14:33 [error] 1#1: *1 connect() failed"),
        None
    );
    // A combined line lacks the upstream fields' leading space.
    let plain = &fixture("combined.log")[0];
    assert_eq!(format.parse(plain), None);
}

#[test]
fn formats_that_cannot_be_read_are_refused_with_the_reason() {
    for (format, reason) in [
        ("$remote_addr $", "invalid variable name"),
        ("$status ${upstream_addr", "unclosed"),
        (
            "$remote_addr $request",
            "neither $status nor $upstream_status",
        ),
        ("${} $status", "invalid variable name"),
    ] {
        let error = LogFormat::compile(format).unwrap_err().to_string();
        assert!(error.contains(reason), "{format}: {error}");
        assert!(error.contains(format), "{format}: {error}");
    }
}

#[test]
fn list_items_split_on_both_separators_and_keep_colons_of_addresses() {
    assert_eq!(
        list_items(b"127.0.0.1:3000, [::1]:80 : unix:/run/php/php8.2-fpm.sock"),
        vec![
            &b"127.0.0.1:3000"[..],
            &b"[::1]:80"[..],
            &b"unix:/run/php/php8.2-fpm.sock"[..]
        ]
    );
    assert_eq!(list_items(b"-"), vec![&b"-"[..]]);
    assert!(list_items(b"").is_empty());
}

#[test]
fn time_local_is_read_with_its_offset() {
    assert_eq!(
        parse_time_local(b"21/Nov/2026:03:14:33 +0000"),
        Some(1_795_230_873)
    );
    // 2024-02-29T23:59:59-01:30 is 2024-03-01T01:29:59Z.
    assert_eq!(
        parse_time_local(b"29/Feb/2024:23:59:59 -0130"),
        Some(1_709_256_599)
    );
    for bad in [
        &b""[..],
        b"21/Nov/2026:03:14:33",
        b"21/Xyz/2026:03:14:33 +0000",
        b"21/Nov/2026:25:14:33 +0000",
        b"21/Nov/2026:03:14:33 0000",
        b"21/Nov/2026:03:14:33 +00",
        b"\xff\xfe/Nov/2026:03:14:33 +0000",
    ] {
        assert_eq!(
            parse_time_local(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

fn bad_gateway(addr: &'static [u8]) -> AccessFields<'static> {
    AccessFields {
        status: Some(502),
        upstream_addr: Some(addr),
        upstream_status: Some(b"502"),
        ..AccessFields::default()
    }
}

#[test]
fn the_window_slides_and_the_totals_stay() {
    let mut rates = AccessRates::new(10);
    let a = bad_gateway(b"a:1");
    rates.record(&a, 100);
    rates.record(&a, 101);
    rates.record(&a, 101);
    let r = rates.rate("a:1", 101).unwrap();
    assert_eq!(r.this_second, counts(2, 0));
    assert_eq!(r.in_window, counts(3, 0));
    assert!((r.bad_gateway_per_second - 0.3).abs() < 1e-9);
    // At 110 the window is 101..=110: the second 100 has left it.
    let r = rates.rate("a:1", 110).unwrap();
    assert_eq!(r.this_second, counts(0, 0));
    assert_eq!(r.in_window, counts(2, 0));
    let r = rates.rate("a:1", 111).unwrap();
    assert_eq!(r.in_window, counts(0, 0));
    assert_eq!(r.total, counts(3, 0));
    // Recording later drops the buckets that left the window.
    rates.record(&a, 500);
    let r = rates.rate("a:1", 500).unwrap();
    assert_eq!(r.in_window, counts(1, 0));
    assert_eq!(r.total, counts(4, 0));
}

#[test]
fn a_clock_going_back_counts_in_the_newest_second() {
    let mut rates = AccessRates::new(10);
    let a = bad_gateway(b"a:1");
    rates.record(&a, 200);
    rates.record(&a, 150);
    let r = rates.rate("a:1", 200).unwrap();
    assert_eq!(r.this_second, counts(2, 0));
}

#[test]
fn other_statuses_are_answers_not_errors() {
    let mut rates = AccessRates::new(10);
    for status in [200u16, 404, 499, 500, 503] {
        rates.record(
            &AccessFields {
                status: Some(status),
                upstream_addr: Some(b"a:1"),
                ..AccessFields::default()
            },
            1,
        );
    }
    assert!(rates.rates(1).is_empty());
    // 499 (the client left first) and 503 (nginx's own limit) say nothing of the upstream.
    let t = rates.traffic("a:1").unwrap();
    assert_eq!((t.answers, t.answers_since_error), (3, 3));
    assert_eq!((t.last_status, t.last_error), (Some(500), None));
}

#[test]
fn upstreams_past_the_limit_count_together() {
    let mut rates = AccessRates::new(10);
    let names: Vec<String> = (0..AccessRates::MAX_UPSTREAMS + 5)
        .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256))
        .collect();
    for name in &names {
        rates.record(
            &AccessFields {
                status: Some(504),
                upstream_addr: Some(name.as_bytes()),
                upstream_status: Some(b"504"),
                ..AccessFields::default()
            },
            1,
        );
    }
    let all = rates.rates(1);
    assert_eq!(all.len(), AccessRates::MAX_UPSTREAMS + 1);
    assert_eq!(rates.rate(OTHER_UPSTREAMS, 1).unwrap().total, counts(0, 5));
    assert_eq!(
        rates.dropped(),
        Dropped {
            upstreams: 5,
            paths: 0
        }
    );
}

#[test]
fn any_bytes_are_total() {
    let formats = [
        LogFormat::compile("combined").unwrap(),
        LogFormat::compile(UPSTREAM_FORMAT).unwrap(),
        LogFormat::compile("$upstream_status$upstream_addr$status$time_local").unwrap(),
    ];
    let mut rates = AccessRates::new(5);
    let mut check = |line: &[u8], now: u64| {
        for format in &formats {
            if let Some(fields) = format.parse(line) {
                let _ = fields.time_unix();
                let _ = fields.attempts();
                rates.record(&fields, now);
            }
        }
    };
    let mut lines = fixture("combined.log");
    lines.extend(fixture("upstream.log"));
    for line in &lines {
        for cut in 0..=line.len() {
            check(&line[..cut], cut as u64);
            check(&line[cut..], cut as u64);
        }
    }
    let mut rng = StdRng::seed_from_u64(3);
    let alphabet = b" ,:-[]\"0123456789/+unix.abcNov$";
    for i in 0..20_000u64 {
        let len = rng.random_range(0..120);
        let line: Vec<u8> = if i % 2 == 0 {
            (0..len).map(|_| rng.random()).collect()
        } else {
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect()
        };
        check(&line, i);
    }
    let _ = rates.rates(20_000);
}

/// Each line of a fixture recorded one second after the one before, from `start`.
fn record_fixture(rates: &mut AccessRates, format: &LogFormat, name: &str, start: u64) -> u64 {
    let mut now = start;
    for line in fixture(name) {
        rates.record(&format.parse(&line).unwrap(), now);
        now += 1;
    }
    now - 1
}

#[test]
fn answers_after_the_last_error_are_counted_per_upstream_with_their_times() {
    let format = LogFormat::compile(UPSTREAM_FORMAT).unwrap();
    let mut rates = AccessRates::new(60);
    let last = record_fixture(&mut rates, &format, "upstream.log", 1_000);
    // php: 200 (line 1), 502 x3 (lines 4-6), then 200 (the last line), after php-fpm started.
    assert_eq!(
        rates.traffic("unix:/run/php/php8.2-fpm.sock"),
        Some(Traffic {
            answers: 2,
            answers_since_error: 1,
            first_answer_since_error: Some(last),
            last_answer: Some(last),
            last_status: Some(200),
            last_error: Some(1_005),
        })
    );
    // The pair's peers never answered.
    let pair = rates.traffic("127.0.0.1:3001").unwrap();
    assert_eq!((pair.answers, pair.last_error), (0, Some(1_007)));
    // The GET that went there, to send again (this format names no host).
    assert_eq!(
        rates.replay("unix:/run/php/php8.2-fpm.sock"),
        Some(&Replay {
            path: "/index.php".into(),
            host: None,
            port: None,
        })
    );
    // The query string is cut; nginx's `\x22` escapes never reach a replay.
    assert_eq!(rates.replay("gm_pair").unwrap().path, "/pair");
    // Requests nginx answered itself are no upstream's.
    assert_eq!(rates.replay(NO_UPSTREAM), None);
}

#[test]
fn a_new_error_resets_the_answers_since_the_last_one() {
    let mut rates = AccessRates::new(60);
    let line = |status: &'static [u8]| AccessFields {
        status: None,
        upstream_addr: Some(b"127.0.0.1:3000"),
        upstream_status: Some(status),
        ..AccessFields::default()
    };
    rates.record(&line(b"200"), 10);
    rates.record(&line(b"200"), 11);
    let t = rates.traffic("127.0.0.1:3000").unwrap();
    assert_eq!(
        (t.answers_since_error, t.first_answer_since_error),
        (2, Some(10))
    );
    rates.record(&line(b"504"), 12);
    let t = rates.traffic("127.0.0.1:3000").unwrap();
    assert_eq!(
        (t.answers, t.answers_since_error, t.first_answer_since_error),
        (2, 0, None)
    );
    assert_eq!((t.last_answer, t.last_error), (Some(11), Some(12)));
    rates.record(&line(b"404"), 13);
    let t = rates.traffic("127.0.0.1:3000").unwrap();
    assert_eq!(
        (
            t.answers_since_error,
            t.first_answer_since_error,
            t.last_status
        ),
        (1, Some(13), Some(404))
    );
}

#[test]
fn without_upstream_addr_the_watched_paths_tell_their_answers_apart() {
    let format = LogFormat::compile("combined").unwrap();
    let mut rates = AccessRates::new(60);
    // Before a path is watched, nothing is kept for it.
    record_fixture(&mut rates, &format, "combined.log", 1_000);
    assert_eq!(rates.path_traffic("/index.php"), None);

    let mut rates = AccessRates::new(60);
    rates.watch_paths(["/index.php", "/pair"]);
    let last = record_fixture(&mut rates, &format, "combined.log", 1_000);
    let php = rates.path_traffic("/index.php").unwrap();
    assert_eq!(
        (php.answers, php.answers_since_error, php.last_error),
        (2, 1, Some(1_005))
    );
    assert_eq!(php.first_answer_since_error, Some(last));
    // `/pair?q=...` is `/pair`: three 502s, no answer.
    let pair = rates.path_traffic("/pair").unwrap();
    assert_eq!((pair.answers, pair.last_error), (0, Some(1_011)));
    // The static page answered by nginx itself is not /index.php's.
    assert_eq!(rates.path_traffic("/index.nginx-debian.html"), None);

    // Watching another set keeps what the paths still watched had.
    rates.watch_paths(["/index.php"]);
    assert_eq!(rates.path_traffic("/index.php"), Some(php));
    assert_eq!(rates.path_traffic("/pair"), None);
}

#[test]
fn watched_paths_are_bounded_and_the_rest_counted() {
    let mut rates = AccessRates::new(60);
    let paths: Vec<String> = (0..AccessRates::MAX_WATCHED_PATHS + 3)
        .map(|i| format!("/p{i}"))
        .collect();
    rates.watch_paths(paths.iter().map(String::as_str));
    assert_eq!(rates.dropped().paths, 3);
    assert!(rates.path_traffic("/p0").is_some());
    assert!(
        rates
            .path_traffic(&format!("/p{}", AccessRates::MAX_WATCHED_PATHS))
            .is_none()
    );
}

#[test]
fn the_host_and_port_a_request_came_in_with_are_kept_for_its_replay() {
    let format = LogFormat::compile(
        r#"$http_host $server_port "$request" $status $upstream_addr $upstream_status"#,
    )
    .unwrap();
    let mut rates = AccessRates::new(60);
    for line in [
        &br#"10.77.1.2:8080 8080 "GET /app?token=x HTTP/1.1" 502 127.0.0.1:3000 502"#[..],
        br#"10.77.1.2:8080 8080 "POST /form HTTP/1.1" 200 127.0.0.1:3000 200"#,
    ] {
        rates.record(&format.parse(line).unwrap(), 1);
    }
    // Only a GET is replayed; the POST after it does not replace it.
    assert_eq!(
        rates.replay("127.0.0.1:3000"),
        Some(&Replay {
            path: "/app".into(),
            host: Some("10.77.1.2:8080".into()),
            port: Some(8080),
        })
    );
    // `$host` without `$server_port`: the port is the Host's, or unknown.
    let format = LogFormat::compile(r#"$host "$request" $status $upstream_addr"#).unwrap();
    let f = format
        .parse(br#"example.com "GET / HTTP/1.1" 200 127.0.0.1:3000"#)
        .unwrap();
    assert_eq!(f.host, Some(&b"example.com"[..]));
    assert_eq!(
        Replay::of_get(f.request.unwrap(), f.host, f.server_port),
        Some(Replay {
            path: "/".into(),
            host: Some("example.com".into()),
            port: None,
        })
    );
    // A server_name pattern is no Host to send.
    let format = LogFormat::compile(r#"$server_name "$request" $status"#).unwrap();
    let f = format.parse(br#"_ "GET / HTTP/1.1" 502"#).unwrap();
    assert_eq!(
        Replay::of_get(f.request.unwrap(), f.host, None)
            .unwrap()
            .host,
        None
    );
}

#[test]
fn request_lines_hosts_and_ports_are_read_strictly() {
    assert_eq!(
        request_path(b"GET /index.php?x=1 HTTP/1.1"),
        Some(("GET", "/index.php"))
    );
    assert_eq!(request_path(b"HEAD / HTTP/1.0"), Some(("HEAD", "/")));
    assert_eq!(request_path(b"GET /a#frag"), Some(("GET", "/a")));
    for bad in [
        &b""[..],
        b"-",
        b"GET",
        b"GET http://other/ HTTP/1.1",
        b"GET /\\x22 HTTP/1.1",
        b"get / HTTP/1.1",
        b"GET / HTTP/1.1 extra",
        b"\x16\x03\x01",
    ] {
        assert_eq!(request_path(bad), None, "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(host_port("10.77.1.2:8080"), Some(8080));
    assert_eq!(host_port("[::1]:8443"), Some(8443));
    assert_eq!(host_port("example.com"), None);
    assert_eq!(host_port("[::1]"), None);
    assert_eq!(host_port("::1"), None);
    assert!(valid_host("www.example.com") && valid_host("[::1]:80"));
    assert!(!valid_host("_") && !valid_host("*.example.com") && !valid_host("a b"));
}
