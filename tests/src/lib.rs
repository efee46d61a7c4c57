//! Black-box tests of baton over real TCP live in `tests/`. The README's examples compile
//! here as doc tests.
#![doc = include_str!("../../README.md")]
