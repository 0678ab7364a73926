//! Integration tests: each does what a user does, with a real `git push`,
//! real `python -m venv` and real pip (offline, from fixtures/wheels).

mod util;

mod app;
mod bad_input;
mod closure;
mod customise;
mod demo;
mod docs;
mod envcopy;
mod every_point;
mod faults;
mod history;
mod hostile;
mod load;
mod lockfiles;
mod packages;
mod pipeline;
mod programs;
mod properties;
mod running;
mod runtime_env;
mod setup;
mod speed;
mod sync_safety;
mod systemd;
mod transactions;
mod transcript;
mod trust;
mod vcs;
