//! The desks as their users meet them: real node processes serving real
//! HTTP on loopback, driven over HTTP (the security rules) and by a real
//! headless Chromium (the day's work across the three tiers).

mod browser;
mod files;
mod rules;
