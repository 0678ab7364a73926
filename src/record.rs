//! Deployment records: one JSON file per deployment under
//! `<state dir>/deployments/`, each written atomically. The newest successful
//! one is the active deployment.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::commit::CommitInfo;
use crate::commit::short_id;
use crate::files::write_atomic;
use crate::report::StepTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Success,
    Failed,
    /// Failed, and the site was put back as the last successful deployment left it.
    #[serde(rename = "rolled back")]
    RolledBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Push,
    Manual,
    Redeploy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The deployment's number in this state dir; orders the records.
    pub seq: u64,
    /// The commit id, as in Kudu: 40 hex digits in the file.
    #[serde(with = "hex_id")]
    pub id: Oid,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub author: String,
    pub message: String,
    pub trigger: Trigger,
    pub started: String,
    pub finished: Option<String>,
    pub status: Status,
    pub steps: Vec<StepTime>,
    pub error: Option<String>,
    pub pid: u32,
    /// The deployment's whole time, from start to finish.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// What went wrong without failing it (a failed collectstatic): `list`
    /// and `show` say so. Absent from records without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What runs (the Procfile, startupCommand or detection) and why;
    /// absent from records written before it, or when the plan failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<crate::app::App>,
    pub log: Vec<String>,
}

/// A record's commit id as records have always stored it, 40 hex digits, so
/// records written before ids were `Oid`s load unchanged.
mod hex_id {
    use git2::Oid;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &Oid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Oid, D::Error> {
        let text = String::deserialize(d)?;
        // Oid::from_str pads a short prefix with zeros: take whole ids only.
        let whole = text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit());
        whole
            .then(|| Oid::from_str(&text).ok())
            .flatten()
            .ok_or_else(|| D::Error::custom(format!("id {text:?} is not a commit id")))
    }
}

impl Record {
    /// The commit id's first seven digits, as git shows it.
    pub fn short(&self) -> String {
        short_id(&self.id.to_string()).to_string()
    }
}

impl Record {
    /// Marked running, but its deployment ended without finishing it (it
    /// was killed): no deployment holds the lock (`lock_held`), or a newer
    /// record exists (`newest` is the newest record's number). Only shown:
    /// the stored status stays until the next deployment closes it.
    pub fn did_not_finish(&self, newest: u64, lock_held: bool) -> bool {
        self.status == Status::Running && (!lock_held || self.seq != newest)
    }

    /// The status as `list` and `show` print it.
    pub fn status_text(&self, newest: u64, lock_held: bool) -> String {
        if self.did_not_finish(newest, lock_held) {
            "did not finish".to_string()
        } else {
            self.status.to_string()
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::RolledBack => "rolled back",
        })
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Push => "push",
            Trigger::Manual => "manual",
            Trigger::Redeploy => "redeploy",
        })
    }
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(state_dir: &Path) -> Self {
        Records {
            dir: state_dir.join("deployments"),
        }
    }

    fn path(&self, record: &Record) -> PathBuf {
        self.dir
            .join(format!("{:06}-{}.json", record.seq, record.short()))
    }

    pub fn save(&self, record: &Record) -> Result<()> {
        write_atomic(&self.path(record), &serde_json::to_vec_pretty(record)?)
    }

    /// All records, newest first.
    pub fn list(&self) -> Result<Vec<Record>> {
        let entries = match fs_err::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs_err::read(&path)?;
                let record: Record = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not a deployment record", path.display()))?;
                records.push(record);
            }
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.seq));
        Ok(records)
    }

    /// The newest record, found by the number in the file names: a
    /// deployment reads one record, not the whole history.
    fn newest(&self) -> Result<Option<Record>> {
        let Ok(entries) = fs_err::read_dir(&self.dir) else {
            return Ok(None);
        };
        let newest = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq: u64 = name
                    .strip_suffix(".json")?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .max_by_key(|(seq, _)| *seq);
        match newest {
            Some((_, path)) => {
                let bytes = fs_err::read(&path)?;
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{}: not a deployment record", path.display())
                })?))
            }
            None => Ok(None),
        }
    }

    /// Starts the record of a new deployment (status running).
    pub fn start(&self, commit: &CommitInfo, ref_name: &str, trigger: Trigger) -> Result<Record> {
        let seq = self.newest()?.map_or(1, |r| r.seq + 1);
        let record = Record {
            seq,
            id: commit.oid,
            ref_name: ref_name.to_string(),
            author: commit.author.clone(),
            message: commit.message.clone(),
            trigger,
            started: now(),
            finished: None,
            status: Status::Running,
            steps: Vec::new(),
            error: None,
            pid: std::process::id(),
            seconds: None,
            warnings: Vec::new(),
            app: None,
            log: Vec::new(),
        };
        self.save(&record)?;
        Ok(record)
    }

    /// The record a killed deployment left as running, now marked failed.
    /// Called under the lock, so no other deployment is running; only the
    /// newest record can be one, as each deployment closes the one before it.
    /// Not saved: the caller decides its status first (and saves it once,
    /// so that a recovery killed half-way finds it still running).
    pub fn unfinished(&self) -> Result<Option<Record>> {
        let Some(mut record) = self.newest()?.filter(|r| r.status == Status::Running) else {
            return Ok(None);
        };
        record.status = Status::Failed;
        record.error = Some(format!(
            "did not finish: the process (pid {}) ended during the deployment",
            record.pid
        ));
        Ok(Some(record))
    }

    /// A record by a unique prefix of its commit id (the newest of that
    /// commit), or by its number (`#3`).
    pub fn find(&self, wanted: &str) -> Result<Record> {
        let records = self.list()?;
        if let Some(seq) = wanted.strip_prefix('#').and_then(|n| n.parse::<u64>().ok()) {
            return records
                .into_iter()
                .find(|r| r.seq == seq)
                .with_context(|| format!("no deployment #{seq}"));
        }
        let lower = wanted.to_ascii_lowercase();
        let mut ids: Vec<&Record> = records
            .iter()
            .filter(|r| !lower.is_empty() && r.id.to_string().starts_with(&lower))
            .collect();
        // Newest first: the first record of each commit is the one to show.
        let mut seen = std::collections::HashSet::new();
        ids.retain(|r| seen.insert(r.id));
        match ids.as_slice() {
            [] => bail!("no deployment has an id starting with {wanted:?}"),
            [one] => Ok((*one).clone()),
            many => bail!(
                "{wanted:?} is the start of {} deployment ids ({}); give more of it",
                many.len(),
                many.iter()
                    .map(|r| r.id.to_string()[..12].to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
