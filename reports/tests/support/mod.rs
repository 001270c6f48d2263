//! Support for the integration tests: a DevTools client for Debian's Chromium, page helpers
//! and the outline used by the snapshot test. Each test binary uses part of it.
#![allow(dead_code)]

pub mod cdp;
pub mod outline;
pub mod page;
