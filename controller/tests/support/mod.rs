//! What the controller's process tests share: the real controller binary with --http-listen,
//! --tokens (made by the real `gatemend tokens new`), --db on SQLite and an approve-mode policy
//! (the review UI's tests) or on a database and policy of the test's choice ([`Launch`]); a raw
//! gRPC stream posing as an agent; an HTTP client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatemend_proto::v1::link_client::LinkClient;
use gatemend_proto::v1::{
    ActionRequest, ActionResult, AgentMessage, ConfigEdit, ControllerMessage, Finding, Hello,
    agent_message, controller_message,
};
use gatemend_proto::{ActionKind, ActionStatus, Cause, ConfigKind, RootCause};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Restarting php-fpm when it is down, after an operator approves.
pub const APPROVE_RESTART: &str = "policies:
  - name: restart-approved
    match: { cause: [upstream_socket_missing], root_cause: [service_down], unit: ['php*-fpm.service'] }
    mode: approve
    actions: [restart_unit]
    verify: { timeout: 5s }
    guards: { fleet: { max_concurrent: 5, max_percent: 100 } }
";

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// An operator's token as `gatemend tokens new` prints it, and its tokens-file line.
pub struct Made {
    pub token: String,
    pub line: String,
}

/// Runs the real `gatemend tokens new`.
pub fn token_new(name: &str, role: &str) -> Made {
    let out = Command::new(env!("CARGO_BIN_EXE_gatemend"))
        .args(["tokens", "new", "--name", name, "--role", role])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().unwrap().to_owned();
    let line = lines.next().unwrap().to_owned();
    Made { token, line }
}

/// The controller under test, with its operators.
pub struct Controller {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub db: String,
    /// approver
    pub alice: String,
    /// viewer
    pub vera: String,
    /// admin
    pub root: String,
}

/// How a controller under test is started.
pub struct Launch<'a> {
    /// The database URL; `None`: SQLite in the controller's own directory.
    pub db: Option<&'a str>,
    /// The text of its one policy file.
    pub policy: &'a str,
    /// Further arguments (`--controller-id ...`, rate limits).
    pub args: &'a [&'a str],
    /// Its log level (`RUST_LOG`).
    pub log_level: &'a str,
    /// The PKI directory (`gatemend pki init`) for mutual TLS with the agents; `None`:
    /// `--insecure`.
    pub tls_dir: Option<&'a Path>,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            db: None,
            policy: APPROVE_RESTART,
            args: &[],
            log_level: "info",
            tls_dir: None,
        }
    }
}

impl Controller {
    /// On its own SQLite database, with the approve-mode restart policy.
    pub fn start() -> Controller {
        Controller::launch(&Launch::default())
    }

    pub fn launch(launch: &Launch<'_>) -> Controller {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("policy.yaml"), launch.policy).unwrap();
        let alice = token_new("alice", "approver");
        let vera = token_new("vera", "viewer");
        let root = token_new("root", "admin");
        let tokens = dir.path().join("tokens.yaml");
        std::fs::write(
            &tokens,
            format!("tokens:\n{}\n{}\n{}\n", alice.line, vera.line, root.line),
        )
        .unwrap();
        let db = launch.db.map_or_else(
            || format!("sqlite://{}", dir.path().join("audit.db").display()),
            str::to_owned,
        );
        let log = dir.path().join("controller.log");
        let grpc = free_addr();
        let http = free_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_gatemend-controller"))
            .args(["--listen", &grpc.to_string()])
            .args(match launch.tls_dir {
                Some(dir) => vec!["--tls-dir".into(), dir.as_os_str().to_owned()],
                None => vec!["--insecure".into()],
            })
            .arg("--policies")
            .arg(&policies)
            .args(["--db", &db, "--http-listen", &http.to_string(), "--tokens"])
            .arg(&tokens)
            .args(launch.args)
            .env("RUST_LOG", launch.log_level)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(http).is_err()
            || std::net::TcpStream::connect(grpc).is_err()
        {
            let exited = proc.0.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the controller did not listen ({exited:?}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Controller {
            proc,
            grpc,
            http,
            dir,
            log,
            db,
            alice: alice.token,
            vera: vera.token,
            root: root.token,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// `GET /healthz`, unauthenticated: the status and the JSON body.
    pub async fn healthz(&self) -> (u16, serde_json::Value) {
        let response = client().get(self.url("/healthz")).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// `/metrics` read as a viewer: every sample by its series (`name{labels}`).
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let response = client()
            .get(self.url("/metrics"))
            .bearer_auth(&self.vera)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        parse_metrics(&response.text().await.unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an API path as the holder of `token`; the status and the JSON body.
    pub async fn get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let response = client()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// POST JSON to an API path as the holder of `token`.
    pub async fn post(
        &self,
        token: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = client()
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Waits until a pending approval exists; returns the first.
    pub async fn pending_approval(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, list) = self.get(&self.vera, "/api/v1/approvals").await;
            assert_eq!(status, 200, "{list}");
            if let Some(first) = list.as_array().and_then(|l| l.first()) {
                return first.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no pending approval appeared; the controller's log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the incident's timeline holds a record of `kind`; returns the records.
    pub async fn wait_timeline(&self, incident: &str, kind: &str) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, t) = self
                .get(
                    &self.vera,
                    &format!("/api/v1/incidents/{}", encode(incident)),
                )
                .await;
            if status == 200 {
                let records = t["records"].as_array().cloned().unwrap_or_default();
                if records.iter().any(|r| r["kind"] == kind) {
                    return records;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the timeline of {incident} never got a {kind} record; the controller's log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `text` as one URL path segment: every byte but letters, digits, `-`, `.` and `_`
/// percent-encoded (incident ids hold `/` and `:`).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus text as samples by series (`name{labels}`); comments skipped.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {l:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// A client that does not follow redirects (the tests look at them).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A raw gRPC stream posing as an agent.
pub struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<ControllerMessage>,
}

impl Agent {
    pub async fn connect(addr: SocketAddr, host: &str) -> Agent {
        let client = LinkClient::connect(format!("http://{addr}")).await.unwrap();
        Agent::hello(client, host).await
    }

    /// Over mutual TLS, with the certificate `gatemend pki issue --host cert_host` made in
    /// `pki`, saying Hello as `host`.
    pub async fn connect_tls(addr: SocketAddr, pki: &Path, cert_host: &str, host: &str) -> Agent {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let read = |path: PathBuf| std::fs::read(path).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(pki.join("ca.pem"))))
            .identity(Identity::from_pem(
                read(pki.join(format!("hosts/{cert_host}.pem"))),
                read(pki.join(format!("hosts/{cert_host}.key"))),
            ))
            .domain_name("gatemend-controller");
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        Agent::hello(LinkClient::new(channel), host).await
    }

    async fn hello(mut client: LinkClient<tonic::transport::Channel>, host: &str) -> Agent {
        let (tx, rx) = mpsc::channel(100);
        tx.send(AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                host: host.into(),
                allowed_actions: vec![
                    ActionKind::RestartUnit as i32,
                    ActionKind::FixSocketOwnership as i32,
                    ActionKind::EditConfig as i32,
                ],
                labels: [("role".to_owned(), "web".to_owned())].into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let inbound = client
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Agent { tx, inbound }
    }

    /// Another handle on the stream's outgoing side, to send from a task of its own.
    pub fn sender(&self) -> mpsc::Sender<AgentMessage> {
        self.tx.clone()
    }

    pub async fn send(&self, body: agent_message::Body) {
        self.tx
            .send(AgentMessage { body: Some(body) })
            .await
            .unwrap();
    }

    /// Reports php-fpm down on `host` (finding `id`), which the approve-mode policy matches.
    pub async fn report_fpm_down(&self, host: &str, id: &str) {
        self.send(fpm_down(host, id, 1)).await;
    }

    /// The next action request, skipping acks; None when nothing comes within `wait`.
    pub async fn next_request(&mut self, wait: Duration) -> Option<ActionRequest> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .ok()?
                .unwrap()
                .unwrap();
            match message.body {
                Some(controller_message::Body::ActionRequest(r)) => return Some(r),
                Some(controller_message::Body::Ack(ack)) => {
                    assert!(ack.refused.is_empty(), "refused: {}", ack.refused);
                }
                None => panic!("an empty controller message"),
            }
        }
    }

    /// The next ack (refused or not), skipping action requests; None when nothing comes
    /// within `wait`.
    pub async fn next_ack(&mut self, wait: Duration) -> Option<gatemend_proto::v1::Ack> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .ok()?
                .unwrap()
                .unwrap();
            if let Some(controller_message::Body::Ack(ack)) = message.body {
                return Some(ack);
            }
        }
    }

    /// Answers an action request with a Succeeded result carrying a step's output.
    pub async fn succeed(&self, host: &str, request: &ActionRequest, output: &str) {
        self.send(agent_message::Body::ActionResult(ActionResult {
            action_id: request.action_id.clone(),
            host: host.into(),
            status: ActionStatus::Succeeded as i32,
            message: "restarted and verified".into(),
            steps: vec![gatemend_proto::v1::ActionStep {
                name: "do".into(),
                ok: true,
                duration_ms: 42,
                output: output.into(),
            }],
            ..Default::default()
        }))
        .await;
    }
}

/// php-fpm down on `host`: revision `revision` of finding `id`, which the restart policies
/// match.
pub fn fpm_down(host: &str, id: &str, revision: u64) -> agent_message::Body {
    agent_message::Body::Finding(Finding {
        id: id.into(),
        revision,
        host: host.into(),
        cause: Cause::UpstreamSocketMissing as i32,
        root_cause: RootCause::ServiceDown as i32,
        root_cause_detail: "php8.2-fpm.service is inactive (dead)".into(),
        upstream: "unix:/run/php/php8.2-fpm.sock".into(),
        unit: "php8.2-fpm.service".into(),
        count: revision,
        first_seen_unix_ms: 1,
        last_seen_unix_ms: 2,
        ..Default::default()
    })
}

/// The unified diff of the demo's fix: fastcgi_pass back on the php8.2 socket.
pub const EDIT_DIFF: &str = "--- a/etc/nginx/sites-enabled/default\n+++ b/etc/nginx/sites-enabled/default\n@@ -55,3 +55,3 @@\n \tlocation ~ \\.php$ {\n \t\tinclude snippets/fastcgi-php.conf;\n-\t\tfastcgi_pass unix:/run/php/php7.4-fpm.sock;\n+\t\tfastcgi_pass unix:/run/php/php8.2-fpm.sock;\n";

/// nginx pointed at the old php7.4 socket on web1 (finding `id`), with the edit diagnosis
/// proposes.
pub fn wrong_socket(id: &str) -> agent_message::Body {
    agent_message::Body::Finding(Finding {
        id: id.into(),
        revision: 1,
        host: "web1".into(),
        cause: Cause::UpstreamSocketMissing as i32,
        root_cause: RootCause::WrongTarget as i32,
        root_cause_detail: "nginx points at /run/php/php7.4-fpm.sock, but php-fpm listens at /run/php/php8.2-fpm.sock".into(),
        upstream: "unix:/run/php/php7.4-fpm.sock".into(),
        unit: "php8.2-fpm.service".into(),
        count: 3,
        first_seen_unix_ms: 1,
        last_seen_unix_ms: 2,
        proposed_edit: Some(ConfigEdit {
            kind: ConfigKind::Nginx as i32,
            file: "/etc/nginx/sites-enabled/default".into(),
            block: vec!["http".into(), "server[_]".into(), "location[~ \\.php$]".into()],
            block_outer: vec![],
            directive: "fastcgi_pass".into(),
            old_value: "unix:/run/php/php7.4-fpm.sock".into(),
            new_value: "unix:/run/php/php8.2-fpm.sock".into(),
            file_sha256: "ab".repeat(32),
            diff: EDIT_DIFF.into(),
            why: "php8.2-fpm.service listens on /run/php/php8.2-fpm.sock (pool www)".into(),
        }),
        ..Default::default()
    })
}
