//! Helpers shared by the integration tests (`mod support;` in each test
//! file): real `ringdb server` processes (`process`) and a raw certified
//! QUIC peer for the transport tests (`peer`). Not every test file uses
//! every helper.
#![allow(dead_code)]

pub mod peer;
pub mod process;
