//! The testbed. Filled next.
