//! Everything that knows the YAML parser (serde_yaml 0.9) lives here, so it can be swapped.
//!
//! Two jobs: [`parse`] deserializes a file straight into the typed [`super::spec`] structs,
//! turning the parser's error into a position and a message; [`locate`] finds the line and
//! column of a value by its path, for the problems the second pass finds.
//!
//! `locate` asks serde_yaml itself rather than a second YAML parser: it replays the document
//! with a visitor that walks the path and fails on the value it names, and serde_yaml stamps
//! that failure with the mark of the value's first event, exactly as it stamps its own type
//! errors. So positions of both passes come from one parser and cannot disagree (a second
//! parser, YAML 1.2 yaml-rust2 say, could read anchors, tags or odd scalars differently, and
//! libyaml's event API would need `unsafe`). serde_yaml is archived at 0.9.34, so this
//! behaviour is frozen. Re-reading a file per error costs nothing that matters: errors are rare
//! and files are small.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::error::Pos;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A value's path, printed as `policies[0].guards.fleet.max_percent`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct DocPath(pub Vec<Seg>);

impl DocPath {
    /// This path extended by a key.
    pub fn key(&self, key: &str) -> DocPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        DocPath(segs)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> DocPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        DocPath(segs)
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// What the parser reported, without the " at line L column C" it appends itself.
#[derive(Debug)]
pub(super) struct ParseError {
    pub pos: Option<Pos>,
    /// `path: message` as serde_yaml words it (its paths use the same notation as ours).
    pub message: String,
}

/// Deserializes one YAML document into `T`.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    serde_yaml::from_str(text).map_err(|err| {
        let pos = err.location().map(|l| Pos {
            line: l.line(),
            col: l.column(),
        });
        let mut message = err.to_string();
        if let Some(pos) = pos {
            let suffix = format!(" at line {} column {}", pos.line, pos.col);
            if let Some(at) = message.find(&suffix) {
                message.replace_range(at..at + suffix.len(), "");
            }
        }
        ParseError { pos, message }
    })
}

/// The position of the value at `path`, or of its nearest ancestor that exists (a missing key
/// is reported at the mapping that lacks it).
pub(super) fn locate(text: &str, path: &DocPath) -> Option<Pos> {
    (0..=path.0.len())
        .rev()
        .find_map(|len| locate_exact(text, &path.0[..len]))
}

const HERE: &str = "gatemend-locate-here";

fn locate_exact(text: &str, path: &[Seg]) -> Option<Pos> {
    let err = Walk(path)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    // Any other error (the path is absent, or the document no longer parses) says nothing
    // about where the value is.
    if !err.to_string().contains(HERE) {
        return None;
    }
    err.location().map(|l| Pos {
        line: l.line(),
        col: l.column(),
    })
}

/// Walks `path` and fails on the value at its end; succeeds (after consuming everything, as
/// serde_yaml requires) when the path does not exist.
struct Walk<'a>(&'a [Seg]);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walk<'_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(HERE))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            match (first, &key) {
                (Seg::Key(want), serde_yaml::Value::String(got)) if want == got => {
                    return map.next_value_seed(Walk(rest));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        let mut i = 0;
        loop {
            if *first == Seg::Index(i) {
                if seq.next_element_seed(Walk(rest))?.is_none() {
                    return Ok(());
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
policies:
  - name: a
    guards:
      fleet: { max_concurrent: 2, max_percent: 150 }
  - name: b
    match:
      cause:
        - upstream_refused
        - bogus
";

    fn path(segs: &[Seg]) -> DocPath {
        DocPath(segs.to_vec())
    }

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_owned())
    }

    #[test]
    fn paths_print_like_serde_yaml_paths() {
        let p = DocPath::default().key("policies").index(0).key("guards");
        assert_eq!(p.to_string(), "policies[0].guards");
    }

    #[test]
    fn locates_scalars_in_flow_and_block_style() {
        let p = path(&[
            key("policies"),
            Seg::Index(0),
            key("guards"),
            key("fleet"),
            key("max_percent"),
        ]);
        assert_eq!(locate(DOC, &p), Some(Pos { line: 4, col: 48 }));
        let p = path(&[
            key("policies"),
            Seg::Index(1),
            key("match"),
            key("cause"),
            Seg::Index(1),
        ]);
        assert_eq!(locate(DOC, &p), Some(Pos { line: 9, col: 11 }));
    }

    #[test]
    fn a_missing_key_is_located_at_the_mapping_that_lacks_it() {
        let p = path(&[key("policies"), Seg::Index(1), key("actions")]);
        assert_eq!(locate(DOC, &p), Some(Pos { line: 5, col: 5 }));
        let p = path(&[key("policies"), Seg::Index(7), key("name")]);
        assert_eq!(locate(DOC, &p), Some(Pos { line: 2, col: 3 }));
    }

    #[test]
    fn parse_errors_carry_position_and_path_without_the_suffix() {
        let err = parse::<serde_yaml::Value>("a: [1, 2\n").unwrap_err();
        assert!(err.pos.is_some());
        assert!(
            !err.message.contains(" at line 2 column 1,"),
            "{}",
            err.message
        );
    }
}
