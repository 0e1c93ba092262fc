//! The hosts' root filesystem: Debian bookworm built once with debootstrap and cached outside
//! the work tree, keyed by a hash of its recipe (packages and the files written into it).
//!
//! A build goes into a temporary directory next to the cache and is renamed into place only
//! when complete, under a lock, so a half-built root filesystem is never used and two test
//! processes never build at once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::process::run;
use super::{TestbedError, lock};

/// The Debian release the hosts run.
pub const SUITE: &str = "bookworm";
/// Installed by debootstrap itself.
pub const BASE_PACKAGES: &[&str] = &["systemd", "dbus", "nginx-light", "iproute2", "procps"];
/// Installed with apt-get inside the new root (php-fpm's maintainer scripts need a full base).
pub const EXTRA_PACKAGES: &[&str] = &["php8.2-fpm", "python3-minimal"];

/// The default site every host serves: static files, and PHP through the php-fpm socket, as
/// a Debian LEMP host does. The faults in the tests are injected into this setup.
pub const NGINX_SITE: &str = r#"# Written by the gatemend testbed: a typical Debian nginx + php-fpm site.
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    root /var/www/html;
    index index.php index.html;
    server_name _;

    location / {
        try_files $uri $uri/ =404;
    }

    location ~ \.php$ {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/php8.2-fpm.sock;
    }
}
"#;

/// The PHP page every host serves at `/index.php`.
pub const INDEX_PHP: &str = "<?php echo 'php ok on ', gethostname(), \"\\n\";\n";

/// Files written into the root filesystem after the packages, as (path, contents).
const FILES: &[(&str, &str)] = &[
    ("etc/nginx/sites-available/default", NGINX_SITE),
    ("var/www/html/index.php", INDEX_PHP),
];

/// Files removed from the root filesystem: debootstrap copies the build machine's hostname,
/// and without the file each host's systemd keeps the name systemd-nspawn gives it.
const REMOVED: &[&str] = &["etc/hostname"];

/// Where the cache lives unless `GATEMEND_TESTBED_CACHE` says otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/gatemend-testbed";

/// The cache directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("GATEMEND_TESTBED_CACHE").map_or_else(|| DEFAULT_CACHE.into(), PathBuf::from)
}

/// The recipe's key: changes whenever anything that goes into the root filesystem changes.
pub fn recipe_key() -> String {
    let mut hash = Sha256::new();
    hash.update(format!("suite={SUITE}\nvariant=minbase\n"));
    for package in BASE_PACKAGES.iter().chain(EXTRA_PACKAGES) {
        hash.update(format!("package={package}\n"));
    }
    for (path, contents) in FILES {
        hash.update(format!("file={path}\n{contents}\n"));
    }
    for path in REMOVED {
        hash.update(format!("removed={path}\n"));
    }
    let digest = hash.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// How [`ensure`] got the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// It was already in the cache.
    Cached,
    /// It was built now.
    Built,
}

/// Returns the cached root filesystem, building it first when the cache does not have it.
pub fn ensure() -> Result<(PathBuf, Origin), TestbedError> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(|source| TestbedError::Io {
        what: "cannot create",
        path: cache.clone(),
        source,
    })?;
    let key = recipe_key();
    let ready = cache.join(format!("rootfs-{key}"));
    let _guard = lock::exclusive(&cache.join("build.lock"))?;
    if ready.join("etc/os-release").exists() {
        return Ok((ready, Origin::Cached));
    }
    remove_leftovers(&cache)?;
    let building = cache.join(format!("building-{key}-{}", std::process::id()));
    build(&building)?;
    fs::rename(&building, &ready).map_err(|source| TestbedError::Io {
        what: "cannot rename into",
        path: ready.clone(),
        source,
    })?;
    Ok((ready, Origin::Built))
}

/// Removes half-built directories that an interrupted build left, and root filesystems of
/// older recipes (about 470 MB each). We hold the lock, so no build is running.
fn remove_leftovers(cache: &Path) -> Result<(), TestbedError> {
    let entries = fs::read_dir(cache).map_err(|source| TestbedError::Io {
        what: "cannot read",
        path: cache.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("building-") || name.starts_with("rootfs-") {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(|source| TestbedError::Io {
                what: "cannot remove",
                path,
                source,
            })?;
        }
    }
    Ok(())
}

fn build(root: &Path) -> Result<(), TestbedError> {
    eprintln!(
        "testbed: building the {SUITE} root filesystem in {} (once; cached after)",
        root.display()
    );
    run(Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg(SUITE)
        .arg(root))?;
    run(Command::new("chroot")
        .arg(root)
        .args(["apt-get", "install", "-y", "--no-install-recommends"])
        .args(EXTRA_PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("chroot").arg(root).args(["apt-get", "clean"]))?;
    for (path, contents) in FILES {
        let target = root.join(path);
        fs::write(&target, contents).map_err(|source| TestbedError::Io {
            what: "cannot write",
            path: target,
            source,
        })?;
    }
    for path in REMOVED {
        let target = root.join(path);
        fs::remove_file(&target).map_err(|source| TestbedError::Io {
            what: "cannot remove",
            path: target,
            source,
        })?;
    }
    Ok(())
}
