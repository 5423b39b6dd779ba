//! Helpers shared by the integration tests that run real `ringdb server`
//! processes (`mod support;` in each test file). Not every test file uses
//! every helper.
#![allow(dead_code)]

pub mod process;
