//! The controller: watches and wiring (`wiring`), one reconcile of a ManagedSecret as its phases
//! (`reconcile`), and the restart task that carries out the restart decisions (`restart_task`).
//!
//! A reconcile reads top to bottom in `reconcile.rs`; each phase has a room of its own:
//! `read` (the source), `target_secret` (make the target Secret match; `sync` is the two together), `rotation`
//! (rotate when due), `push` (GitHub), `consumers` (what the consumers' restarts mean for this object), and
//! `outcome` (conditions, metrics, audit, Events). Below them, shared by several phases: `context` (the
//! dependencies and per-object memory), `failure`, `record` (Events and audit lines), `status` (the status
//! writers), `known_secrets` (which Secrets exist, so a first write needs no read), `timing` (refresh ticks and backoff), `fault` (the crash tests' hook) and `error`.
//! `docs/architecture.md` draws the map. This file only names the rooms: everything is imported from the room
//! that defines it, so no import runs back up.

mod access;
mod authorize;
mod consumers;
pub mod context;
pub mod error;
mod failure;
mod fault;
mod known_secrets;
pub mod leader;
mod outcome;
mod push;
mod read;
mod reconcile;
mod record;
mod restart_task;
mod rotation;
mod settled;
mod status;
mod status_writes;
mod sync;
mod target_secret;
mod task;
mod timing;
mod wakes;
pub mod wiring;
pub mod workloads;
