//! Whole-system tests: real binaries, real SQLite files in temporary
//! directories. One test binary, modules by area.

mod cli;
mod copies;
mod demo;
mod files;
mod files_attacks;
mod hostile;
mod keys;
mod pair;
mod publications;
mod review_attacks;
mod service_rules;
mod sync;
