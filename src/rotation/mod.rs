//! Rotation: when a value is due (schedule), how a new one is made (generate), and how it is written into an
//! ESC definition without disturbing the rest of it (esc_edit).

pub mod esc_edit;
pub mod generate;
pub mod schedule;
