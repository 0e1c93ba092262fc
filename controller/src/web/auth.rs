//! Who an operator is: tokens (stored as SHA-256 hashes only), roles, browser sessions and
//! their CSRF tokens.
//!
//! The API takes `Authorization: Bearer <token>`; a bearer token is never sent by a browser on
//! its own, so the API needs no CSRF check. The browser logs in once with its token and then
//! holds a random session id in an HttpOnly, SameSite=Strict cookie; every form it posts
//! carries the session's CSRF token, and the Origin (or Referer) must be this server.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::TokensError;

/// What an operator may do; each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page and API answer.
    Viewer,
    /// Also approves and denies pending actions.
    Approver,
    /// Also runs the administrative API (audit verify).
    Admin,
}

impl Role {
    /// The name as written in the tokens file.
    pub fn id(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "approver" => Ok(Role::Approver),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected viewer, approver or admin"
            )),
        }
    }
}

/// An authenticated operator: the name the audit records, and the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    pub name: String,
    pub role: Role,
}

impl Operator {
    /// Ok when the operator's role is at least `needed`; else why not, for the 403.
    pub fn may(&self, needed: Role, to: &str) -> Result<(), String> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(format!(
                "{} is a {}; to {to} needs the {needed} role",
                self.name, self.role
            ))
        }
    }
}

/// The tokens file: `tokens: [{ name: alice, role: approver, token_sha256: <hex> }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    token_sha256: String,
}

/// The operators who may use the UI and API, by the SHA-256 of their token.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Operator>,
}

impl Tokens {
    /// Loads and checks a tokens file (every problem reported at once).
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse(&text).map_err(|e| match e {
            ParseProblem::Syntax(message) => TokensError::Parse {
                path: path.to_path_buf(),
                message,
            },
            ParseProblem::Rules(problems) => TokensError::Invalid {
                path: path.to_path_buf(),
                problems,
            },
        })
    }

    /// Parses the file's text.
    fn parse(text: &str) -> Result<Tokens, ParseProblem> {
        let file: TokensFile =
            serde_yaml::from_str(text).map_err(|e| ParseProblem::Syntax(e.to_string()))?;
        let mut problems = Vec::new();
        let mut by_hash = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            if entry.name.trim().is_empty() {
                problems.push(format!("tokens[{i}].name: must not be empty"));
            } else if !names.insert(entry.name.clone()) {
                problems.push(format!(
                    "tokens[{i}].name: {:?} is named twice (the audit must tell operators apart)",
                    entry.name
                ));
            }
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(entry.token_sha256.trim(), &mut hash).is_err() {
                problems.push(format!(
                    "tokens[{i}].token_sha256: must be 64 hex digits (the SHA-256 of the token, from `gatemend tokens new`)"
                ));
                continue;
            }
            let operator = Operator {
                name: entry.name,
                role: entry.role,
            };
            if by_hash.insert(hash, operator).is_some() {
                problems.push(format!(
                    "tokens[{i}].token_sha256: the same token is listed twice"
                ));
            }
        }
        if problems.is_empty() {
            Ok(Tokens { by_hash })
        } else {
            Err(ParseProblem::Rules(problems))
        }
    }

    /// The operator holding `token`, if any.
    pub fn operator(&self, token: &str) -> Option<&Operator> {
        self.by_hash.get(&token_hash(token))
    }

    /// How many operators are configured.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no operator is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[derive(Debug)]
enum ParseProblem {
    Syntax(String),
    Rules(Vec<String>),
}

/// SHA-256 of a token (the tokens file holds its lowercase hex).
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// A fresh operator token: `gm_` and 32 random bytes in hex.
pub fn new_token() -> String {
    format!("gm_{}", random_hex())
}

/// 32 bytes from the thread's CSPRNG, as hex: session ids and CSRF tokens.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares secrets without stopping at the first different byte.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// One browser session.
#[derive(Debug, Clone)]
pub struct Session {
    pub operator: Operator,
    /// Every state-changing form must carry it.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether a form's CSRF field is this session's.
    pub fn csrf_ok(&self, presented: &str) -> bool {
        same_secret(&self.csrf, presented)
    }
}

/// The server-side session map. Sessions expire `ttl` after login; an expired one is gone.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl: Duration,
}

/// Sessions kept at most; logging in past it drops the expired ones first, then the oldest.
const MAX_SESSIONS: usize = 10_000;

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        match self.map.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Starts a session for `operator`; returns its id (the cookie's value).
    pub fn start(&self, operator: Operator, now: Instant) -> String {
        let id = random_hex();
        let session = Session {
            operator,
            csrf: random_hex(),
            expires: now + self.ttl,
        };
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session with this id.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session (logout).
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_maps_token_hashes_to_operators_and_reports_every_problem() {
        let token = new_token();
        let text = format!(
            "tokens:\n  - {{ name: alice, role: approver, token_sha256: {} }}\n",
            hex::encode(token_hash(&token))
        );
        let tokens = Tokens::parse(&text).expect("valid");
        assert_eq!(
            tokens.operator(&token),
            Some(&Operator {
                name: "alice".into(),
                role: Role::Approver
            })
        );
        assert_eq!(tokens.operator("gm_wrong"), None);

        let bad = "tokens:\n  - { name: '', role: viewer, token_sha256: zz }\n  - { name: bob, role: admin, token_sha256: 00 }\n";
        let Err(ParseProblem::Rules(problems)) = Tokens::parse(bad) else {
            panic!("accepted");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(matches!(
            Tokens::parse("tokens: [{ name: a, role: root, token_sha256: x }]"),
            Err(ParseProblem::Syntax(_))
        ));
        assert!(matches!(
            Tokens::parse("tokens: [{ name: a, role: viewer, token: x }]"),
            Err(ParseProblem::Syntax(_))
        ));
    }

    #[test]
    fn roles_are_ordered_and_a_refusal_says_why() {
        let viewer = Operator {
            name: "vera".into(),
            role: Role::Viewer,
        };
        assert_eq!(
            viewer.may(Role::Approver, "approve"),
            Err("vera is a viewer; to approve needs the approver role".into())
        );
        assert!(viewer.may(Role::Viewer, "read").is_ok());
        assert!(Role::Admin > Role::Approver && Role::Approver > Role::Viewer);
    }

    #[test]
    fn sessions_expire_and_end() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let op = Operator {
            name: "alice".into(),
            role: Role::Approver,
        };
        let id = sessions.start(op.clone(), t0);
        let s = sessions.get(&id, t0).expect("live");
        assert!(s.csrf_ok(&s.csrf.clone()));
        assert!(!s.csrf_ok("x"));
        assert!(sessions.get(&id, t0 + Duration::from_secs(61)).is_none());
        let id = sessions.start(op, t0);
        sessions.end(&id);
        assert!(sessions.get(&id, t0).is_none());
    }
}
