//! The review UI in a real headless Chromium (Debian's chromium and chromium-driver, driven
//! over WebDriver): an approver logs in with her token, opens the pending approval, approves
//! it with a reason, and sees the dispatched action and its result in the incident's timeline;
//! a viewer's session cannot approve. The controller is the real binary; the approval comes
//! from a finding a raw gRPC stream (posing as the agent) sends, and that stream answers the
//! action request with a Succeeded result.

// Test helpers panic by design: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use support::{Agent, Controller, Proc, free_addr};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a loopback port, and a WebDriver session with headless Chromium.
async fn browser(profile: &Path) -> (Proc, Client) {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: this test needs Debian's {package} package (tests/setup-host.sh installs chromium and chromium-driver; CI runs it)"
        );
    }
    let port = free_addr().port();
    let driver = Proc(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            // As root in a container: no sandbox; /dev/shm may be small.
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1366,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // chromedriver listens on loopback: plain HTTP, no TLS stack in the test.
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with headless chromium");
    (driver, client)
}

/// With GATEMEND_SCREENSHOTS=DIR, saves what the browser shows as DIR/NAME.png (to look at
/// the pages as an operator would; the test does not depend on it).
async fn screenshot(b: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("GATEMEND_SCREENSHOTS") {
        let png = b.screenshot().await.unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

async fn log_in(b: &Client, ctl: &Controller, token: &str) {
    b.goto(&ctl.url("/approvals")).await.unwrap();
    // No session yet: the page sends us to the login form.
    assert_eq!(b.current_url().await.unwrap().path(), "/login");
    b.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Locator::Id("fleet")).await.unwrap();
}

/// The text of the element `at`, once it is there.
async fn text_of(b: &Client, at: Locator<'_>) -> String {
    b.wait()
        .for_element(at)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Opens the approval from the pending list, fills in a reason and presses Approve.
async fn approve_from_the_list(b: &Client, ctl: &Controller, id: &str, reason: &str) {
    b.goto(&ctl.url("/approvals")).await.unwrap();
    b.find(Locator::LinkText(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let state = b.wait().for_element(Locator::Id("state")).await.unwrap();
    assert_eq!(state.text().await.unwrap(), "pending");
    screenshot(b, "approval").await;
    b.find(Locator::Css("form.decide textarea[name=reason]"))
        .await
        .unwrap()
        .send_keys(reason)
        .await
        .unwrap();
    b.find(Locator::Css("form.decide button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_in_chromium_and_sees_the_action_and_its_result_a_viewer_cannot() {
    let ctl = Controller::start();
    let mut web1 = Agent::connect(ctl.grpc, "web1").await;
    web1.report_fpm_down("web1", "web1/f1").await;
    let id = ctl.pending_approval().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, b) = browser(profile.path()).await;

    log_in(&b, &ctl, &ctl.alice).await;
    let fleet = b
        .find(Locator::Id("fleet"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        fleet.contains("web1") && fleet.contains("online"),
        "{fleet}"
    );
    approve_from_the_list(&b, &ctl, &id, "php-fpm is down on web1; restart it").await;

    // The approval is dispatched once; the stand-in agent answers it.
    let request = web1
        .next_request(Duration::from_secs(30))
        .await
        .expect("the approved restart is dispatched");
    web1.succeed(
        "web1",
        &request,
        "systemctl restart php8.2-fpm.service: active (running)",
    )
    .await;

    // The browser landed on the incident's timeline; reload until the result is in it.
    assert_eq!(
        b.current_url().await.unwrap().path(),
        "/incidents/web1%2Ff1"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        if let Ok(li) = b.find(Locator::Css("li[data-kind=action_result]")).await {
            break li.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no action result in the timeline; page:\n{}",
            b.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.refresh().await.unwrap();
    };
    assert!(result.contains("succeeded"), "{result}");
    assert!(
        result.contains("active (running)"),
        "the step's output: {result}"
    );
    screenshot(&b, "timeline").await;
    let timeline = b
        .find(Locator::Id("timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for what in [
        "finding",
        "decision",
        "approval_requested",
        "approved",
        "by alice",
        "php-fpm is down on web1; restart it",
        "action_dispatched",
        "restart_unit",
        "restart-approved",
    ] {
        assert!(
            timeline.contains(what),
            "the timeline shows {what:?}:\n{timeline}"
        );
    }
    let kinds: Vec<String> = {
        let mut kinds = Vec::new();
        for li in b.find_all(Locator::Css("#timeline > li")).await.unwrap() {
            kinds.push(li.attr("data-kind").await.unwrap().unwrap_or_default());
        }
        kinds
    };
    let at = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(
        at("approved") < at("action_dispatched") && at("action_dispatched") < at("action_result"),
        "{kinds:?}"
    );

    // A viewer: a second pending approval, which her session cannot approve.
    let web2 = Agent::connect(ctl.grpc, "web2").await;
    web2.report_fpm_down("web2", "web2/g1").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let (_, list) = ctl.get(&ctl.vera, "/api/v1/approvals").await;
        if let Some(a) = list
            .as_array()
            .and_then(|l| l.iter().find(|a| a["incident"] == "web2/g1"))
        {
            break a["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no second approval");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    b.find(Locator::Css("header form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Locator::Id("token")).await.unwrap();
    log_in(&b, &ctl, &ctl.vera).await;
    approve_from_the_list(&b, &ctl, &second, "I would like to").await;
    let problem = text_of(&b, Locator::Id("problem")).await;
    assert_eq!(
        problem,
        "vera is a viewer; to approve needs the approver role"
    );
    let (_, still) = ctl
        .get(&ctl.vera, &format!("/api/v1/approvals/{second}"))
        .await;
    assert_eq!(still["state"], "pending");
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_approval_shows_its_diff_and_the_timeline_shows_the_edit_applied_or_rolled_back() {
    let policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/edit.yaml"
    ))
    .unwrap();
    let ctl = Controller::launch(&support::Launch {
        policy: &policy,
        ..support::Launch::default()
    });
    let mut web1 = Agent::connect(ctl.grpc, "web1").await;
    let incident = "web1/upstream_socket_missing/unix:/run/php/php7.4-fpm.sock#1";
    web1.send(support::wrong_socket(incident)).await;
    let id = ctl.pending_approval().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, b) = browser(profile.path()).await;
    log_in(&b, &ctl, &ctl.alice).await;

    b.goto(&ctl.url(&format!("/approvals/{id}"))).await.unwrap();
    let diff = text_of(&b, Locator::Id("edit-diff")).await;
    // (The browser renders the diff's tabs as spaces.)
    let line = |sign: char, socket: &str| {
        diff.lines().any(|l| {
            l.starts_with(sign) && l.contains(&format!("fastcgi_pass unix:/run/php/{socket};"))
        })
    };
    assert!(
        line('-', "php7.4-fpm.sock") && line('+', "php8.2-fpm.sock"),
        "{diff:?}"
    );
    let summary = b
        .find(Locator::Id("edit-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        summary.starts_with(
            "fastcgi_pass unix:/run/php/php7.4-fpm.sock -> unix:/run/php/php8.2-fpm.sock"
        ),
        "{summary}"
    );
    screenshot(&b, "edit-approval").await;
    approve_from_the_list(&b, &ctl, &id, "the 8.2 socket is where php-fpm listens").await;

    let request = web1
        .next_request(Duration::from_secs(30))
        .await
        .expect("the approved edit is dispatched");
    web1.send(gatemend_proto::v1::agent_message::Body::ActionResult(
        gatemend_proto::v1::ActionResult {
            action_id: request.action_id.clone(),
            host: "web1".into(),
            status: gatemend_proto::ActionStatus::RolledBack as i32,
            message:
                "verify: GET /index.php answered 502; the backup is restored and nginx reloaded"
                    .into(),
            ..Default::default()
        },
    ))
    .await;
    ctl.wait_timeline(incident, "action_result").await;
    b.goto(&ctl.url(&format!("/incidents/{}", support::encode(incident))))
        .await
        .unwrap();
    let timeline = text_of(&b, Locator::Css("li[data-kind=action_dispatched] pre.diff")).await;
    assert!(
        timeline.lines().any(
            |l| l.starts_with('+') && l.contains("fastcgi_pass unix:/run/php/php8.2-fpm.sock;")
        ),
        "{timeline:?}"
    );
    let result = b
        .find(Locator::Css("li[data-kind=action_result]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(result.contains("rolled_back"), "{result}");
    screenshot(&b, "edit-timeline").await;
}
