//! owl-tui: `owl chat`, a terminal chat over the Engine service API.
//!
//! Shaped as state, messages, update and a pure view (ratatui's Elm
//! architecture): [`app`] holds the state and `update`, [`view`] draws it into a
//! `Buffer`, and the runtime feeds terminal and engine events in as messages
//! and carries out the effects `update` asks for.

pub mod app;
pub mod editor;
pub mod engine;
pub mod fake;
pub mod runtime;
pub mod view;
