//! Rotation's pure parts: when a value is due (`schedule`) and how a new one is made (`generate`). Writing it
//! to ESC is the ESC client's (`crate::esc`); carrying a rotation out is the controller's.

pub mod generate;
pub mod schedule;
