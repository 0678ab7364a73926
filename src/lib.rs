//! pushdeploy: `git push` deploys a Python web app into a site directory.
//!
//! One module per concept of a deployment; `deploy` ties them together and
//! `cli` turns the command line into calls of the others.

pub mod cli;
pub mod command;
pub mod commit;
pub mod deploy;
pub mod deployment_file;
pub mod env;
pub mod error;
pub mod exact;
pub mod files;
pub mod framework;
pub mod health;
pub mod init;
pub mod installed;
pub mod journal;
pub mod lock;
pub mod lockfile;
pub mod managers;
pub mod manifest;
pub mod packages;
pub mod pipfile;
pub mod plan;
pub mod process;
pub mod receive;
pub mod record;
pub mod report;
pub mod requirements;
pub mod runtime;
pub mod seed;
pub mod settings;
pub mod site_dir;
pub mod sync;
pub mod tools;

pub use error::{Failure, UsageError};
