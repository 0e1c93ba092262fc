//! The public snake_case ids of the protocol's enums.
//!
//! `Cause::UpstreamRefused` is `upstream_refused` everywhere a human or a policy file sees
//! it. Each enum has exactly one table below; `Display`, `FromStr`, serde and `ALL` come from
//! it, so an id cannot be spelled two ways.

use std::fmt;
use std::str::FromStr;

use crate::v1::{ActionKind, ActionStatus, Cause, ConfigKind, RootCause};

/// The configuration directives (nginx) and pool keys (php-fpm) a `ConfigEdit` may change:
/// the closed set the agent's editor knows. Policies name them in `match.edit`.
pub const EDITABLE_DIRECTIVES: &[&str] = &[
    "fastcgi_pass",
    "proxy_pass",
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
    "fastcgi_read_timeout",
    "fastcgi_connect_timeout",
    "fastcgi_send_timeout",
    "fastcgi_buffer_size",
    "fastcgi_buffers",
    "proxy_buffer_size",
    "proxy_buffers",
    "resolver",
    "worker_connections",
    "worker_rlimit_nofile",
    "pm.max_children",
];

/// An id that names no variant of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{id}`, expected one of: {expected}")]
pub struct UnknownId {
    /// What was being parsed: "cause", "root cause", "action", "action status".
    pub kind: &'static str,
    /// The text that was given.
    pub id: String,
    /// The valid ids, comma separated.
    pub expected: String,
}

macro_rules! ids {
    ($ty:ident, $kind:literal, [$($variant:ident => $id:literal),+ $(,)?]) => {
        impl $ty {
            /// Every variant with a public id, in declaration order (`Unspecified` excluded).
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The public snake_case id; `unspecified` for the protobuf zero value.
            pub fn id(self) -> &'static str {
                match self {
                    $($ty::$variant => $id,)+
                    $ty::Unspecified => "unspecified",
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.id())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($id => Ok($ty::$variant),)+
                    _ => Err(UnknownId {
                        kind: $kind,
                        id: s.to_owned(),
                        expected: [$($id),+].join(", "),
                    }),
                }
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.id())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

ids!(Cause, "cause", [
    None => "none",
    UpstreamRefused => "upstream_refused",
    UpstreamSocketMissing => "upstream_socket_missing",
    UpstreamSocketPermission => "upstream_socket_permission",
    UpstreamOverloaded => "upstream_overloaded",
    UpstreamConnectTimeout => "upstream_connect_timeout",
    UpstreamReadTimeout => "upstream_read_timeout",
    UpstreamReset => "upstream_reset",
    UpstreamPrematureClose => "upstream_premature_close",
    UpstreamInvalidResponse => "upstream_invalid_response",
    UpstreamHeaderTooBig => "upstream_header_too_big",
    NoLiveUpstreams => "no_live_upstreams",
    WorkerConnectionsExhausted => "worker_connections_exhausted",
    DnsNoResolver => "dns_no_resolver",
    DnsResolutionFailed => "dns_resolution_failed",
    HostNotFoundInUpstream => "host_not_found_in_upstream",
    UpstreamTlsError => "upstream_tls_error",
    FpmMaxChildren => "fpm_max_children",
    ConfigInvalid => "config_invalid",
]);

ids!(RootCause, "root cause", [
    ServiceDown => "service_down",
    ServiceNotListening => "service_not_listening",
    SocketPermission => "socket_permission",
    WrongTarget => "wrong_target",
    UpstreamSlow => "upstream_slow",
    UpstreamCrashing => "upstream_crashing",
    CapacityExhausted => "capacity_exhausted",
    DnsFailure => "dns_failure",
    TlsFailure => "tls_failure",
    ConfigInvalid => "config_invalid",
    Unknown => "unknown",
]);

ids!(ActionKind, "action", [
    RestartUnit => "restart_unit",
    StartUnit => "start_unit",
    FixSocketOwnership => "fix_socket_ownership",
    ReloadNginx => "reload_nginx",
    Escalate => "escalate",
    EditConfig => "edit_config",
]);

ids!(ActionStatus, "action status", [
    Succeeded => "succeeded",
    Failed => "failed",
    Refused => "refused",
    Planned => "planned",
    TimedOut => "timed_out",
    RolledBack => "rolled_back",
]);

ids!(ConfigKind, "config kind", [
    Nginx => "nginx",
    PhpFpmPool => "php_fpm_pool",
]);

#[cfg(test)]
mod tests {
    use super::*;

    /// The cause ids of DESIGN.md's taxonomy table, in its order.
    const DESIGN_CAUSES: &[&str] = &[
        "upstream_refused",
        "upstream_socket_missing",
        "upstream_socket_permission",
        "upstream_overloaded",
        "upstream_connect_timeout",
        "upstream_read_timeout",
        "upstream_reset",
        "upstream_premature_close",
        "upstream_invalid_response",
        "upstream_header_too_big",
        "no_live_upstreams",
        "worker_connections_exhausted",
        "dns_no_resolver",
        "dns_resolution_failed",
        "host_not_found_in_upstream",
        "upstream_tls_error",
        "fpm_max_children",
        "config_invalid",
        "none",
    ];

    #[test]
    fn cause_ids_are_exactly_the_design_taxonomy() {
        let mut ours: Vec<&str> = Cause::ALL.iter().map(|c| c.id()).collect();
        let mut design = DESIGN_CAUSES.to_vec();
        ours.sort_unstable();
        design.sort_unstable();
        assert_eq!(ours, design);
    }

    #[test]
    fn every_cause_round_trips_through_its_id_and_the_wire_value() {
        for &cause in Cause::ALL {
            assert_eq!(cause.to_string().parse::<Cause>(), Ok(cause));
            assert_eq!(Cause::try_from(cause as i32), Ok(cause));
        }
    }

    #[test]
    fn the_proto_enum_names_match_the_ids() {
        // CAUSE_UPSTREAM_REFUSED <-> upstream_refused: the table cannot drift from the .proto.
        for &c in Cause::ALL {
            assert_eq!(c.as_str_name(), format!("CAUSE_{}", c.id().to_uppercase()));
        }
        for &r in RootCause::ALL {
            assert_eq!(
                r.as_str_name(),
                format!("ROOT_CAUSE_{}", r.id().to_uppercase())
            );
        }
        for &a in ActionKind::ALL {
            assert_eq!(
                a.as_str_name(),
                format!("ACTION_KIND_{}", a.id().to_uppercase())
            );
        }
        for &s in ActionStatus::ALL {
            assert_eq!(
                s.as_str_name(),
                format!("ACTION_STATUS_{}", s.id().to_uppercase())
            );
        }
    }

    #[test]
    fn an_unknown_id_is_refused_with_the_valid_ones_listed() {
        let err = "upstream_down".parse::<Cause>().unwrap_err();
        assert_eq!(err.kind, "cause");
        assert!(err.to_string().contains("upstream_refused"), "{err}");
        assert!("unspecified".parse::<RootCause>().is_err());
    }

    #[test]
    fn ids_serialize_as_strings() {
        assert_eq!(
            serde_json::to_string(&Cause::FpmMaxChildren).unwrap(),
            "\"fpm_max_children\""
        );
        let back: ActionKind = serde_json::from_str("\"reload_nginx\"").unwrap();
        assert_eq!(back, ActionKind::ReloadNginx);
        assert!(serde_json::from_str::<ActionKind>("\"run_command\"").is_err());
    }
}
