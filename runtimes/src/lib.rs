//! Nothing here: this crate holds tests only (see `tests/` and `Cargo.toml`).
