//! Helpers of the `kiln` binary's integration tests.

pub(crate) mod webdriver;
