//! A local Pulumi ESC server (work in progress).
#![allow(dead_code)]
mod crypto;
mod eval;
mod path;
mod secrets;
mod yaml;
