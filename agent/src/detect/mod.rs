//! Detect: turn what nginx and php-fpm write into typed signals.
//!
//! [`classify`] maps one log line to one cause of DESIGN.md's taxonomy. It is pure and total:
//! no I/O, no clock, and any bytes give an answer. The tailers that feed it live beside it.

pub mod access;
pub mod classify;
pub mod error;
pub mod tail;

pub use classify::{Classified, Level, Phase, Time, classify};
pub use error::DetectError;
pub use tail::{Line, StartAt, Tailer};
