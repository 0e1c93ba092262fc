//! The closed set of what may be edited: nginx directives and php-fpm pool keys, each with the
//! kind of value it takes and the blocks it may sit in. Adding one is adding a variant here;
//! there is no way to edit a directive by its name as text.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::value::ValueKind;
use crate::probe::nginx::BlockStep;

/// An nginx directive the agent may edit. The serialized names are nginx's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditableDirective {
    /// Where PHP requests go, after an upgrade moved the socket.
    FastcgiPass,
    /// Where proxied requests go (a port typo, the variable form for run-time resolution).
    ProxyPass,
    ProxyReadTimeout,
    ProxyConnectTimeout,
    ProxySendTimeout,
    FastcgiReadTimeout,
    FastcgiConnectTimeout,
    FastcgiSendTimeout,
    /// The buffer for the upstream's response header: `upstream sent too big header`.
    FastcgiBufferSize,
    FastcgiBuffers,
    ProxyBufferSize,
    ProxyBuffers,
    /// Name servers for names resolved per request.
    Resolver,
    /// `events { worker_connections N; }`.
    WorkerConnections,
    /// Raised with `worker_connections`: each connection is a descriptor, two when proxied.
    WorkerRlimitNofile,
}

/// Which blocks a directive may sit in, by the innermost one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contexts {
    /// `location`, or `if` inside a `location`; under `http`.
    Location,
    /// As [`Contexts::Location`], or `limit_except`.
    LocationOrLimitExcept,
    /// `http`, `server` or `location`; under `http`.
    Http,
    /// `events` at the main level.
    Events,
    /// The main level, outside every block.
    Main,
}

impl EditableDirective {
    /// Every editable directive.
    pub const ALL: [EditableDirective; 15] = [
        EditableDirective::FastcgiPass,
        EditableDirective::ProxyPass,
        EditableDirective::ProxyReadTimeout,
        EditableDirective::ProxyConnectTimeout,
        EditableDirective::ProxySendTimeout,
        EditableDirective::FastcgiReadTimeout,
        EditableDirective::FastcgiConnectTimeout,
        EditableDirective::FastcgiSendTimeout,
        EditableDirective::FastcgiBufferSize,
        EditableDirective::FastcgiBuffers,
        EditableDirective::ProxyBufferSize,
        EditableDirective::ProxyBuffers,
        EditableDirective::Resolver,
        EditableDirective::WorkerConnections,
        EditableDirective::WorkerRlimitNofile,
    ];

    /// The directive's name in nginx's configuration.
    pub fn name(self) -> &'static str {
        match self {
            EditableDirective::FastcgiPass => "fastcgi_pass",
            EditableDirective::ProxyPass => "proxy_pass",
            EditableDirective::ProxyReadTimeout => "proxy_read_timeout",
            EditableDirective::ProxyConnectTimeout => "proxy_connect_timeout",
            EditableDirective::ProxySendTimeout => "proxy_send_timeout",
            EditableDirective::FastcgiReadTimeout => "fastcgi_read_timeout",
            EditableDirective::FastcgiConnectTimeout => "fastcgi_connect_timeout",
            EditableDirective::FastcgiSendTimeout => "fastcgi_send_timeout",
            EditableDirective::FastcgiBufferSize => "fastcgi_buffer_size",
            EditableDirective::FastcgiBuffers => "fastcgi_buffers",
            EditableDirective::ProxyBufferSize => "proxy_buffer_size",
            EditableDirective::ProxyBuffers => "proxy_buffers",
            EditableDirective::Resolver => "resolver",
            EditableDirective::WorkerConnections => "worker_connections",
            EditableDirective::WorkerRlimitNofile => "worker_rlimit_nofile",
        }
    }

    /// The directive of this nginx name, if it is editable.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The kind of value it takes.
    pub fn value_kind(self) -> ValueKind {
        use EditableDirective as D;
        match self {
            D::FastcgiPass => ValueKind::FastcgiTarget,
            D::ProxyPass => ValueKind::ProxyTarget,
            D::ProxyReadTimeout
            | D::ProxyConnectTimeout
            | D::ProxySendTimeout
            | D::FastcgiReadTimeout
            | D::FastcgiConnectTimeout
            | D::FastcgiSendTimeout => ValueKind::Time,
            D::FastcgiBufferSize | D::ProxyBufferSize => ValueKind::Size,
            D::FastcgiBuffers | D::ProxyBuffers => ValueKind::Buffers,
            D::Resolver => ValueKind::Resolver,
            D::WorkerConnections | D::WorkerRlimitNofile => ValueKind::Count,
        }
    }

    fn contexts(self) -> Contexts {
        use EditableDirective as D;
        match self {
            D::FastcgiPass => Contexts::Location,
            D::ProxyPass => Contexts::LocationOrLimitExcept,
            D::WorkerConnections => Contexts::Events,
            D::WorkerRlimitNofile => Contexts::Main,
            _ => Contexts::Http,
        }
    }

    /// Whether the directive may sit in the block at the end of `path` (every step, outermost
    /// first), as nginx's documentation lists its contexts; `Err` says where it may. Only the
    /// http module's contexts are offered: `stream {}` is outside what a 502 is about.
    pub fn allowed_in(self, path: &[BlockStep]) -> Result<(), String> {
        let names: Vec<&str> = path.iter().map(|s| s.directive.as_str()).collect();
        let under_http = names.first() == Some(&"http");
        let location = |names: &[&str]| matches!(names, [.., "location"] | [.., "location", "if"]);
        let (ok, wanted) = match self.contexts() {
            Contexts::Location => (
                under_http && location(&names),
                "a location (or an if in a location) under http",
            ),
            Contexts::LocationOrLimitExcept => (
                under_http && (location(&names) || names.last() == Some(&"limit_except")),
                "a location, an if in a location, or a limit_except, under http",
            ),
            Contexts::Http => (
                under_http && matches!(names.last(), Some(&("http" | "server" | "location"))),
                "http, a server or a location, under http",
            ),
            Contexts::Events => (names == ["events"], "the events block"),
            Contexts::Main => (names.is_empty(), "the main level, outside every block"),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{} belongs in {wanted}", self.name()))
        }
    }
}

impl fmt::Display for EditableDirective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A php-fpm pool key the agent may edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PoolKey {
    /// `pm.max_children`: the pool's children, raised when they all are busy and memory
    /// allows it.
    #[serde(rename = "pm.max_children")]
    MaxChildren,
}

impl PoolKey {
    /// Every editable pool key.
    pub const ALL: [PoolKey; 1] = [PoolKey::MaxChildren];

    /// The key as the pool file writes it.
    pub fn name(self) -> &'static str {
        match self {
            PoolKey::MaxChildren => "pm.max_children",
        }
    }

    /// The kind of value it takes.
    pub fn value_kind(self) -> ValueKind {
        match self {
            PoolKey::MaxChildren => ValueKind::Count,
        }
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
