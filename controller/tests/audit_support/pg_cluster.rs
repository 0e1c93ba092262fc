//! A throwaway PostgreSQL server for the audit tests and benchmark: `initdb` into a temporary
//! directory as the `postgres` user, `pg_ctl start` on a unix socket directory inside it and a
//! loopback port, stopped (and the directory removed) on drop. PostgreSQL itself is installed by
//! tests/setup-host.sh; when it is missing this fails loudly instead of skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A running PostgreSQL server with trust authentication on 127.0.0.1.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    sockets: PathBuf,
    port: u16,
    // Dropped last: removes the data directory after the server stopped.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Starts a server. `durable`: keep fsync on (the benchmark measures real commits); the
    /// tests turn it off since they throw the cluster away.
    pub fn start(durable: bool) -> Result<PgCluster> {
        let bin = pg_bindir().context(
            "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or PATH): \
             run tests/setup-host.sh, which installs the `postgresql` package",
        )?;
        let dir = tempfile::Builder::new().prefix("gatemend-pg-").tempdir()?;
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&sockets)?;
        // initdb refuses to run as root; the server runs as `postgres`, which must own the dir.
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path()))?;
        let port = free_port()?;
        let cluster = PgCluster {
            bin,
            data,
            sockets,
            port,
            dir,
        };
        cluster.as_postgres("initdb", |c| {
            c.arg("-D").arg(&cluster.data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
        })?;
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200",
            cluster.port,
            cluster.sockets.display()
        );
        if !durable {
            options.push_str(" -c fsync=off -c synchronous_commit=off");
        }
        cluster.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(&cluster.data)
                .arg("-l")
                .arg(cluster.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]);
        })?;
        Ok(cluster)
    }

    /// Creates a database and returns its URL.
    pub fn create_db(&self, name: &str) -> Result<String> {
        self.as_postgres("createdb", |c| {
            c.arg("-h").arg(&self.sockets).args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ]);
        })?;
        Ok(self.url(name))
    }

    /// The URL of database `name` over TCP on loopback.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `psql -c sql` on database `name` (raw SQL, bypassing the audit API).
    pub fn psql(&self, name: &str, sql: &str) -> Result<String> {
        self.as_postgres("psql", |c| {
            c.arg("-h").arg(&self.sockets).args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                name,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ]);
        })
    }

    fn as_postgres(&self, program: &str, args: impl FnOnce(&mut Command)) -> Result<String> {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
        // Run from a directory `postgres` can read, not the test's working directory.
        c.current_dir(self.dir.path());
        args(&mut c);
        run(&mut c)
    }

    /// Stops the server as an operator would for maintenance (`pg_ctl stop -m fast`: clients
    /// are disconnected, the data stays); [`PgCluster::start_again`] brings it back.
    // Only the tests that take the server away use these; the others include this file too.
    #[allow(dead_code)]
    pub fn stop(&self) -> Result<()> {
        self.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"]);
        })
        .map(drop)
    }

    /// Starts the stopped server again: same data directory, port, sockets and settings. The
    /// settings are those of its last start, which PostgreSQL keeps in `postmaster.opts`;
    /// `pg_ctl restart` reads them the same way (everything after the program's path).
    #[allow(dead_code)]
    pub fn start_again(&self) -> Result<()> {
        let opts = std::fs::read_to_string(self.data.join("postmaster.opts"))?;
        let options = opts
            .split_once(" \"")
            .map(|(_, rest)| format!("\"{}", rest.trim_end()))
            .context("postmaster.opts without options")?;
        self.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]);
        })
        .map(drop)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.as_postgres("pg_ctl", |c| {
            c.arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"]);
        });
    }
}

fn run(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("cannot run {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The newest /usr/lib/postgresql/N/bin (Debian's layout), else the directory of `initdb` on PATH.
fn pg_bindir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(Path::new)
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .map(Path::to_path_buf)
}

fn free_port() -> Result<u16> {
    // Bind port 0 and release it: the kernel picks a free port; the server takes it a moment
    // later (a race with another process is possible but harmless: start then fails loudly).
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
