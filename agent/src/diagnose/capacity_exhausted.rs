//! capacity_exhausted: a limit was reached — nginx's `worker_connections`, php-fpm's
//! `pm.max_children`, the backlog of the upstream's socket (every worker busy), or the buffer
//! nginx reads the upstream's response header into. Restarting throws away the work in
//! progress and mends nothing; the limit or the load has to change. The runbooks raise the
//! limit, proposed here within the host's means: `pm.max_children` only as far as the
//! children's measured memory fits in what is available, the others doubled within a bound.

use gatemend_proto::{Cause, RootCause};

use super::propose::{self, Proposal, mib, size_text};
use super::{Diagnosis, Probes, unit_for};
use crate::detect::Classified;
use crate::edit::{EditableDirective, NginxEdit, PoolEdit, PoolKey, value};
use crate::probe::nginx::{BlockPath, BlockStep, NginxConfig, Pass, PassKind, Target};
use crate::probe::php_fpm::Pool;

/// nginx's `worker_connections` when none is set.
const NGINX_DEFAULT_WORKER_CONNECTIONS: u32 = 512;

/// nginx's `*_buffer_size` when none is set: one memory page (4k on x86-64 and arm64 Linux).
const NGINX_DEFAULT_BUFFER_SIZE: u64 = 4 * 1024;

/// nginx's `*_buffers` when none is set: 8 of one memory page.
const NGINX_DEFAULT_BUFFERS: (u32, u64) = (8, 4 * 1024);

/// The share of `MemAvailable` new php-fpm children may take: the rest stays for the page
/// cache, nginx and whatever else the host runs.
const MEMORY_SHARE_PERCENT: u64 = 80;

pub(super) fn check(line: &Classified<'_>, p: &Probes) -> Option<Diagnosis> {
    let upstream = line.upstream.as_deref().unwrap_or("");
    match line.cause {
        Cause::WorkerConnectionsExhausted => {
            let limit = line
                .limit
                .or_else(|| p.nginx.as_ref().and_then(|n| n.worker_connections));
            let processes = p
                .nginx
                .as_ref()
                .and_then(|n| n.worker_processes.clone())
                .unwrap_or_else(|| "?".into());
            let limit_text = limit.map_or_else(|| "?".to_owned(), |l| l.to_string());
            Some(
                Diagnosis::new(
                    RootCause::CapacityExhausted,
                    format!(
                        "nginx's worker_connections ({limit_text} per worker, worker_processes {processes}) are all in use"
                    ),
                )
                .unit(Some("nginx.service".into()))
                .probe("nginx.worker_connections", limit_text)
                .probe("nginx.worker_processes", processes),
            )
        }
        Cause::FpmMaxChildren => {
            let pool_name = line.pool.as_deref().unwrap_or("?");
            let pool = pool_named(p, pool_name);
            let limit = line
                .limit
                .or_else(|| pool.and_then(|pool| pool.max_children));
            let limit_text = limit.map_or_else(|| "?".to_owned(), |l| l.to_string());
            let file = pool
                .map(|pool| format!(" ({})", pool.file.display()))
                .unwrap_or_default();
            Some(
                Diagnosis::new(
                    RootCause::CapacityExhausted,
                    format!("php-fpm pool `{pool_name}` reached pm.max_children = {limit_text}{file}: requests queue"),
                )
                .unit(pool.and_then(|pool| pool.unit()))
                .probe("fpm.pool", pool_name)
                .probe("fpm.max_children", limit_text),
            )
        }
        Cause::UpstreamOverloaded => {
            let unit = unit_for(upstream, p).map(|(u, _)| u);
            let max = pool_of_socket(upstream, p)
                .and_then(|pool| pool.max_children)
                .map(|m| format!(" (pm.max_children = {m})"))
                .unwrap_or_default();
            Some(
                Diagnosis::new(
                    RootCause::CapacityExhausted,
                    format!("the listen backlog of {upstream} is full: every worker is busy{max}"),
                )
                .unit(unit),
            )
        }
        Cause::UpstreamHeaderTooBig => {
            let unit = unit_for(upstream, p).map(|(u, _)| u);
            let buffer = p
                .nginx
                .as_ref()
                .and_then(|n| propose::failing_pass(line, n).ok().map(|pass| (n, pass)))
                .and_then(|(n, pass)| buffer_size(n, pass).ok());
            let (detail, probe) = match &buffer {
                Some(b) => (
                    format!(
                        "the response header of {upstream} does not fit nginx's {} {} ({})",
                        b.directive,
                        size_text(b.current),
                        b.from
                    ),
                    format!("{} {}", b.directive, size_text(b.current)),
                ),
                None => (
                    format!(
                        "the response header of {upstream} does not fit nginx's buffer for it (proxy_buffer_size / fastcgi_buffer_size)"
                    ),
                    String::new(),
                ),
            };
            Some(
                Diagnosis::new(RootCause::CapacityExhausted, detail)
                    .unit(unit)
                    .probe("nginx.buffer_size", probe),
            )
        }
        _ => None,
    }
}

/// The raise of the limit that was reached, when the runbooks have one for it.
pub(super) fn propose(line: &Classified<'_>, p: &Probes) -> Option<Proposal> {
    match line.cause {
        Cause::WorkerConnectionsExhausted => Some(worker_connections(p)),
        Cause::FpmMaxChildren => {
            let name = line.pool.as_deref().unwrap_or("?");
            Some(
                pool_named(p, name)
                    .ok_or_else(|| format!("no pool file declares the pool `{name}`"))
                    .and_then(|pool| max_children(pool, line.limit, p)),
            )
        }
        // Only a php-fpm pool's backlog is raised through its children; another upstream's
        // capacity is the application's.
        Cause::UpstreamOverloaded => {
            pool_of_socket(line.upstream.as_deref()?, p).map(|pool| max_children(pool, None, p))
        }
        Cause::UpstreamHeaderTooBig => Some(header_buffer(line, p)),
        _ => None,
    }
}

/// The pool of this name; among pools of several PHP versions with the same name, the one
/// whose master runs.
fn pool_named<'p>(p: &'p Probes, name: &str) -> Option<&'p Pool> {
    let named: Vec<&Pool> = p.pools.iter().filter(|pool| pool.name == name).collect();
    let running = |pool: &&Pool| {
        pool.unit()
            .and_then(|unit| p.units.get(&unit))
            .is_some_and(|state| state.active_state == "active")
    };
    named
        .iter()
        .copied()
        .find(running)
        .or_else(|| named.first().copied())
}

/// The pool that listens on the unix socket `upstream` names.
fn pool_of_socket<'p>(upstream: &str, p: &'p Probes) -> Option<&'p Pool> {
    match Target::from_log(upstream) {
        Some(Target::Unix(path)) => super::target::pool_at(&p.pools, &path),
        _ => None,
    }
}

/// `pm.max_children` raised by as many children as 80% of `MemAvailable` holds at the
/// children's measured average size, never beyond the bound; no raise at all when not one
/// more child fits.
fn max_children(pool: &Pool, logged: Option<u32>, p: &Probes) -> Proposal {
    let name = &pool.name;
    let current = pool
        .max_children
        .or(logged)
        .ok_or_else(|| format!("the pool `{name}` sets no pm.max_children to raise"))?;
    let bound = p.edit_bounds.max_children;
    if current >= bound {
        return Err(format!(
            "pm.max_children is {current}, at or above the bound {bound}"
        ));
    }
    let unit = pool
        .unit()
        .ok_or_else(|| format!("the unit of the pool `{name}` is not known"))?;
    let measured = p
        .memory
        .pools
        .get(&(unit.clone(), name.clone()))
        .copied()
        .unwrap_or_default();
    let average = measured.average().filter(|a| *a > 0).ok_or_else(|| {
        format!("no child of {unit}'s pool `{name}` could be measured, so the memory a child takes is not known")
    })?;
    let available = p
        .memory
        .available
        .ok_or_else(|| "MemAvailable could not be read".to_owned())?;
    let spare = available / 100 * MEMORY_SHARE_PERCENT;
    let more = u32::try_from(spare / average).unwrap_or(u32::MAX);
    let measured_text = format!(
        "{} children of pool `{name}` use {} ({} each on average)",
        measured.children,
        mib(measured.rss),
        mib(average)
    );
    if more == 0 {
        return Err(format!(
            "no memory to spare: MemAvailable {} x 0.8 = {} holds no child of {} ({measured_text})",
            mib(available),
            mib(spare),
            mib(average)
        ));
    }
    let new = current.saturating_add(more).min(bound);
    let capped = if new == bound && current.saturating_add(more) > bound {
        format!(", capped at the bound {bound}")
    } else {
        format!(" (bound {bound})")
    };
    let edit = PoolEdit {
        file: pool.file.clone(),
        pool: name.clone(),
        key: PoolKey::MaxChildren,
        old: Some(current.to_string()),
        new: new.to_string(),
    };
    let why = format!(
        "{measured_text}; MemAvailable {}: 80% of it ({}) holds {more} more: {current} + {more} = {}{capped}",
        mib(available),
        mib(spare),
        current.saturating_add(more)
    );
    propose::pool(p, &edit, why)
}

/// nginx's `worker_connections` doubled, within the bound, in the `events` block.
fn worker_connections(p: &Probes) -> Proposal {
    let (file, text) = propose::top_block_file(p, "events")?;
    let events = BlockStep::new("events", &[], []);
    let tree = crate::probe::nginx::file_tree(text);
    let set = tree
        .iter()
        .filter(|node| node.name == "events")
        .filter_map(|node| node.block.as_deref())
        .flatten()
        .find(|node| node.name == "worker_connections")
        .map(|node| node.args.join(" "));
    let (current, from) = match &set {
        Some(text) => (
            value::count(text)
                .ok_or_else(|| format!("worker_connections `{text}` is not a number"))?,
            format!("set in {}", file.display()),
        ),
        None => (
            NGINX_DEFAULT_WORKER_CONNECTIONS,
            "nginx's default".to_owned(),
        ),
    };
    let bound = p.edit_bounds.max_worker_connections;
    let new = current.saturating_mul(2).min(bound);
    if new <= current {
        return Err(format!(
            "worker_connections is {current}, at or above the bound {bound}"
        ));
    }
    let edit = NginxEdit {
        file: file.to_owned(),
        block_path: BlockPath {
            outer: Vec::new(),
            inner: vec![events],
        },
        directive: EditableDirective::WorkerConnections,
        old: set,
        new: new.to_string(),
    };
    let capped = if current.saturating_mul(2) > bound {
        format!(", capped at the bound {bound}")
    } else {
        format!(" (bound {bound})")
    };
    let why = format!(
        "every one of the {current} worker_connections per worker ({from}) was in use: x2 = {new}{capped}; \
         each connection is a file descriptor, two when proxied, so the workers' open-files limit \
         (worker_rlimit_nofile, or the unit's LimitNOFILE) must allow {}",
        u64::from(new) * 2
    );
    propose::nginx(p, &edit, why)
}

/// The buffer the upstream's response header is read into, as in effect at a pass.
struct BufferSize {
    directive: EditableDirective,
    current: u64,
    /// Where `current` comes from: `set at FILE:LINE` or nginx's default.
    from: String,
}

fn buffer_size(n: &NginxConfig, pass: &Pass) -> Result<BufferSize, String> {
    let directive = match pass.kind {
        PassKind::Proxy => EditableDirective::ProxyBufferSize,
        PassKind::Fastcgi => EditableDirective::FastcgiBufferSize,
        kind => {
            return Err(format!(
                "the buffers of {kind:?} passes are not edited by the agent"
            ));
        }
    };
    let name = directive.name();
    let (current, from) = match propose::in_effect(&n.buffers, name, &pass.block_path) {
        Some(d) => {
            let text = d.args.join(" ");
            let size = value::size(&text).ok_or_else(|| {
                format!(
                    "{name} `{text}` at {}:{} is not a size",
                    d.file.display(),
                    d.line
                )
            })?;
            (size, format!("set at {}:{}", d.file.display(), d.line))
        }
        None => (
            NGINX_DEFAULT_BUFFER_SIZE,
            "nginx's default, one memory page".to_owned(),
        ),
    };
    Ok(BufferSize {
        directive,
        current,
        from,
    })
}

/// `*_buffer_size` raised to the next power of two, within the bound, on the location that
/// failed; refused (with the numbers) when nginx -t would reject it beside the `*_buffers` in
/// effect, which one edit cannot change too.
fn header_buffer(line: &Classified<'_>, p: &Probes) -> Proposal {
    let n = propose::config(p)?;
    let pass = propose::failing_pass(line, n)?;
    let b = buffer_size(n, pass)?;
    let name = b.directive.name();
    let bound = p.edit_bounds.max_buffer_size;
    let next = if b.current.is_power_of_two() {
        b.current.saturating_mul(2)
    } else {
        b.current.checked_next_power_of_two().unwrap_or(u64::MAX)
    };
    let new = next.min(bound);
    if new <= b.current {
        return Err(format!(
            "{name} is {} ({}), at or above the bound {}",
            size_text(b.current),
            b.from,
            size_text(bound)
        ));
    }
    let prefix = name.trim_end_matches("_buffer_size");
    let buffers_name = format!("{prefix}_buffers");
    let (count, each) = match propose::in_effect(&n.buffers, &buffers_name, &pass.block_path) {
        Some(d) => value::buffers(&d.args.join(" ")).ok_or_else(|| {
            format!(
                "{buffers_name} `{}` at {}:{} is not `N size`",
                d.args.join(" "),
                d.file.display(),
                d.line
            )
        })?,
        None => NGINX_DEFAULT_BUFFERS,
    };
    let busy_name = format!("{prefix}_busy_buffers_size");
    let busy = propose::in_effect(&n.buffers, &busy_name, &pass.block_path)
        .and_then(|d| value::size(&d.args.join(" ")));
    // nginx -t's rule: the busy buffers hold at least the larger of the header buffer and one
    // buffer, and less than all buffers but one. Unset, they are twice that larger one.
    let larger = new.max(each);
    let busy = busy.unwrap_or(larger.saturating_mul(2));
    let all_but_one = u64::from(count.saturating_sub(1)).saturating_mul(each);
    if busy < larger || busy > all_but_one {
        return Err(format!(
            "{name} {} would fail nginx -t beside {buffers_name} {count} {}: the busy buffers ({}) must hold {} and stay within {} x {} = {}; \
             {buffers_name} must be raised with it (e.g. `{count} {}`), which one edit does not change",
            size_text(new),
            size_text(each),
            size_text(busy),
            size_text(larger),
            count.saturating_sub(1),
            size_text(each),
            size_text(all_but_one),
            size_text(new)
        ));
    }
    let (file, location) = propose::location_of(pass)?;
    let edit = match propose::set_in(&n.buffers, name, &location)? {
        Some(d) => NginxEdit {
            file: d.file.clone(),
            block_path: d.block_path.clone(),
            directive: b.directive,
            old: Some(d.args.join(" ")),
            new: size_text(new),
        },
        None => NginxEdit {
            file,
            block_path: location,
            directive: b.directive,
            old: None,
            new: size_text(new),
        },
    };
    let capped = if new == bound && next > bound {
        format!(", capped at the bound {}", size_text(bound))
    } else {
        format!(" (bound {})", size_text(bound))
    };
    let why = format!(
        "the response header of {} did not fit {name} {} ({}): the next power of two is {}{capped}; \
         {buffers_name} {count} {} keep nginx -t's busy buffers ({}) within {}",
        line.upstream.as_deref().unwrap_or("the upstream"),
        size_text(b.current),
        b.from,
        size_text(new),
        size_text(each),
        size_text(busy),
        size_text(all_but_one)
    );
    propose::nginx(p, &edit, why)
}
