//! Black-box tests of baton over real TCP live in `tests/`.
