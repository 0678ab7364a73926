//! The plan: everything a deployment will do, decided before anything
//! changes, each decision with its reason. The dry run prints it; the real
//! run carries it out. What only running can tell (whether Django is in a
//! new env, what pip resolves) the plan names as a question, not an answer.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::command::CustomCommand;
use crate::commit::short_id;
use crate::commit::{Commit, CommitInfo, Kind};
use crate::deployment_file::{self, DeploymentFile};
use crate::env::{self, Decision};
use crate::installed::{Fingerprint, PipDecision};
use crate::lockfile::{self, LockPlan};
use crate::managers::{self, Detected};
use crate::manifest::{self, Manifest};
use crate::packages::{self, Installer, Preview, REQUIREMENTS};
use crate::process::{Limits, Runner};
use crate::runtime::{self, Choice, Probes};
use crate::settings::{
    COMMAND, DISABLE_COLLECTSTATIC, POST_BUILD_COMMAND, POST_DEPLOY, PROJECT, RECREATE_ENV,
    Refused, SCM_DO_BUILD, STRICT_COLLECTSTATIC, Settings, TAKE_OVER_FILES, VERIFY, Values,
};
use crate::sync::{self, SyncPlan, Why};

pub const SKIP_PYTHON: &str = ".skipPythonDeployment";
pub const SKIP_DJANGO: &str = ".skipDjango";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub commit: CommitInfo,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub site: PathBuf,
    /// `.deployment`'s project: the sub-folder that deploys.
    pub project: Option<String>,
    /// The built-in steps, or a custom command instead (JSON: `sync` or `command`).
    #[serde(flatten)]
    pub deploy: Deploy,
    /// Skipped with a reason when a custom command deploys.
    pub python: Python,
    pub framework: Framework,
    /// What runs: the Procfile, startupCommand or detection, with why.
    pub app: crate::app::App,
    /// `.deployment` keys that are not settings, passed to the build steps
    /// (never to `postDeploy` or the health check).
    pub app_settings: Vec<(String, String)>,
    /// `pushdeploy appsettings`: the server's, over the commit's; their
    /// values are secrets, never shown nor in the JSON plan.
    #[serde(skip)]
    pub server_app_settings: Vec<(String, String)>,
    /// `.deployment` keys that a commit may not set: left out.
    pub refused_app_settings: Vec<Refused>,
    /// Oryx's `POST_BUILD_COMMAND`, run in the site after the switch, as words.
    pub post_build: Option<Vec<String>>,
    /// Run after the switch (a server setting), as words: restarts the app.
    pub post_deploy: Option<Vec<String>>,
    /// Decides, after `postDeploy`, whether the new version stays.
    pub health_check: Option<crate::health::HealthCheck>,
}

/// How the site is made to match the commit.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Deploy {
    /// The built-in steps: the sync, then the Python and framework steps.
    Sync(SyncPlan),
    /// `.deployment`'s `command` runs instead of the built-in steps.
    Command(CustomCommand),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
#[expect(
    clippy::large_enum_variant,
    reason = "one plan per deployment: its size does not matter"
)]
pub enum Python {
    Skip {
        reason: String,
    },
    Run {
        runtime: Choice,
        env: Decision,
        /// `pip`, or `uv <path>`.
        installer: Installer,
        pip: PipDecision,
        packages: Preview,
        /// The lock file that says what the env holds, when it is not
        /// requirements.txt.
        lock: Option<LockPlan>,
        /// Lock files beside requirements.txt, and how to use them instead.
        notes: Vec<String>,
        /// Set (to the setting's origin) when removeUnneeded is false.
        #[serde(rename = "keepUnneeded")]
        keep_unneeded: Option<String>,
        /// What the install depends on, recorded after it succeeded; `None`
        /// when pip must always run.
        #[serde(skip)]
        fingerprint: Option<Fingerprint>,
        /// Set when what the requirements need takes a whole resolution.
        resolve: Option<crate::installed::ResolvePlan>,
        /// requirements.txt's git lines: the commit each names now, and
        /// what the env holds of it.
        git: Vec<crate::git_remote::GitLine>,
    },
}

/// Django's collectstatic, run when Django is installed in the env.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Framework {
    Skip {
        reason: String,
    },
    /// `strict` (setting `strictCollectstatic`): a failure rolls back; else
    /// it is a warning, as in Kudu and Oryx.
    Collectstatic {
        strict: bool,
    },
}

/// What forces a new env, if anything: `--recreate-env`, the push option,
/// the environment, or a setting.
fn forced(values: &Values) -> Option<String> {
    values
        .bool(RECREATE_ENV)
        .and_then(|(on, origin)| on.then(|| origin.to_string()))
}

/// Reads `.deployment` from the commit into the settings' values, and
/// narrows the commit to the project folder when one is set.
pub fn prepare<'r>(settings: &Settings, commit: Commit<'r>) -> Result<(Values, Commit<'r>)> {
    let file = match commit.read_top_file(deployment_file::FILE)? {
        Some(bytes) => deployment_file::parse(&bytes)?,
        None => DeploymentFile::default(),
    };
    let values = settings.for_commit(&file)?;
    let commit = match values.text(PROJECT) {
        Some((project, _)) => commit.with_project(project)?,
        None => commit,
    };
    Ok((values, commit))
}

impl Plan {
    /// Reads and checks everything; changes nothing. With `preview`, asks pip
    /// what it would install (the dry run).
    pub fn build(
        settings: &Settings,
        values: &Values,
        commit: &Commit,
        ref_name: &str,
        preview: bool,
    ) -> Result<Plan> {
        let project = values.text(PROJECT).map(|(p, _)| p.to_string());
        let app_settings = values.app.clone();
        let post_deploy = values.words(POST_DEPLOY).map(|(w, _)| w.to_vec());
        let post_build = values.words(POST_BUILD_COMMAND).map(|(w, _)| w.to_vec());
        let health_check = crate::health::from_values(values)?;
        // Programs run before the deployment's runner exists (interpreter
        // probes, the dry run's questions) get the same limits.
        let runner = Runner::new(Vec::new(), Limits::from_values(values), None);
        let probes = Probes::load(&settings.cache_dir, runner);
        let skip = |reason: String| {
            (
                Python::Skip {
                    reason: reason.clone(),
                },
                Framework::Skip { reason },
            )
        };
        let (deploy, (python, framework)) = match values.text(COMMAND) {
            Some((command, _)) => {
                let path = command_path(commit, command)?;
                let runtime = choose_runtime(settings, values, commit, &probes)?;
                let skipped = skip(format!("command {path} deploys instead"));
                (Deploy::Command(CustomCommand { path, runtime }), skipped)
            }
            None => {
                let sync = sync_plan(settings, values, commit)?;
                // The dry run shows the plan, then fails on it.
                if !preview {
                    sync.check_refused()?;
                }
                let steps = match values.bool(SCM_DO_BUILD) {
                    Some((false, origin)) => skip(format!(
                        "SCM_DO_BUILD_DURING_DEPLOYMENT is false ({origin})"
                    )),
                    _ => {
                        let python = python_plan(settings, values, commit, preview, &probes)?;
                        let framework = framework_plan(values, commit, &python);
                        (python, framework)
                    }
                };
                (Deploy::Sync(sync), steps)
            }
        };
        // A probe killed at the deadline answered nothing: the plan must
        // not stand on that.
        probes.runner().check_deadline()?;
        let app = crate::app::decide(values, commit)?;
        let server_app_settings = crate::appsettings::load(&settings.state_dir)?
            .into_iter()
            .collect();
        // A dry run changes nothing, the state dir included.
        if !preview {
            probes.save()?;
        }
        Ok(Plan {
            commit: commit.info.clone(),
            ref_name: ref_name.to_string(),
            site: settings.site.clone(),
            project,
            deploy,
            python,
            framework,
            app,
            app_settings,
            server_app_settings,
            refused_app_settings: values.refused.clone(),
            post_build,
            post_deploy,
            health_check,
        })
    }

    /// The app settings the build steps see: the server's over the commit's.
    pub fn step_app_settings(&self) -> Vec<(String, String)> {
        crate::appsettings::merged(&self.app_settings, &self.server_app_settings)
    }

    pub fn manifest(&self) -> Manifest {
        Manifest {
            site: self.site.clone(),
            commit: self.commit.id.clone(),
            project: self.project.clone(),
            after_command: None,
            command_files: None,
        }
    }

    /// The plan as the dry run prints it.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(project) = &self.project {
            out.push(format!(
                "Project: {project}/ (from .deployment or the settings)"
            ));
        }
        if let Deploy::Sync(sync) = &self.deploy {
            out.push(format!("Files: {}", sync.summary()));
            for change in &sync.write {
                let why = match change.why {
                    Why::Added => "new",
                    Why::Changed => "changed",
                    Why::Repair => "differs in the site",
                    Why::TakeOver => "the site's own file differs: taken over (takeOverFiles)",
                };
                out.push(format!("  write  {} ({why})", change.path));
            }
            out.extend(sync.taken_over.iter().map(|p| {
                format!("  take   {p} (the site's own file, equal to the commit's: taken over)")
            }));
            out.extend(sync.refused.iter().map(|p| {
                format!("  refuse {p} (the site's own file differs from the commit's; -c takeOverFiles=true replaces it)")
            }));
            out.extend(sync.delete.iter().map(|p| format!("  delete {p}")));
            out.extend(
                sync.skipped
                    .iter()
                    .map(|s| format!("  skip   {} ({})", s.path, s.reason)),
            );
        }
        if let Deploy::Command(command) = &self.deploy {
            out.push(format!(
                "Command: {} runs instead of the built-in steps, with {}",
                command.path,
                runtime_line(&command.runtime)
            ));
        }
        match &self.python {
            Python::Skip { reason } => out.push(format!("Python: skipped ({reason})")),
            Python::Run {
                runtime,
                env,
                installer,
                pip,
                packages,
                lock,
                notes,
                resolve,
                git,
                ..
            } => {
                out.extend(notes.iter().cloned());
                out.push(runtime_line(runtime));
                out.push(match env {
                    Decision::Reuse => format!("env: reuse env/ ({})", runtime.runtime),
                    Decision::Create { message, .. } => {
                        format!("env: create with {} ({message})", runtime.runtime)
                    }
                });
                if let Some(lock) = lock {
                    let file = lock.kind.lock_file();
                    let why = lock.reason.clone();
                    out.push(match pip {
                        PipDecision::Skip { .. } => format!("{file}: skipped ({why})"),
                        PipDecision::Run { .. } => {
                            format!("{file}: {} ({why})", lock.command(installer))
                        }
                    });
                    if let Some(tool) = lock.tool.as_ref().or(installer.tool()) {
                        out.push(format!("{file}: with {tool}"));
                    }
                    if let Some(changes) = &lock.changes
                        && matches!(pip, PipDecision::Run { .. })
                    {
                        out.extend(changes.lines().into_iter().map(|l| format!("{file}: {l}")));
                    }
                } else {
                    out.extend(git.iter().map(|line| format!("git: {line}")));
                    out.push(match pip {
                        PipDecision::Skip { .. } => format!("{installer}: skipped ({pip})"),
                        PipDecision::Run { .. } => format!("{installer}: runs ({pip})"),
                    });
                    if let Some(tool) = installer.tool() {
                        out.push(format!("{installer}: with {tool}"));
                    }
                    if matches!(pip, PipDecision::Run { .. }) {
                        out.push(packages_line(installer, packages));
                    }
                    if let Some(resolve) = resolve {
                        out.push(format!(
                            "closure: what requirements.txt needs takes a whole resolution ({}): run after the install unless its inputs are as at the last one",
                            resolve.why
                        ));
                    }
                }
            }
        }
        out.push(match &self.framework {
            Framework::Skip { reason } => format!("Django: skipped ({reason})"),
            Framework::Collectstatic { strict } => format!(
                "Django: manage.py collectstatic --noinput --clear, when Django is installed in env/; {}",
                match strict {
                    true => "a failure rolls the deployment back (strictCollectstatic)",
                    false => "a failure is a warning",
                }
            ),
        });
        out.push(self.app.line());
        for (key, value) in &self.app_settings {
            out.push(format!("App setting: {key}={value}"));
        }
        for (key, _) in &self.server_app_settings {
            out.push(format!(
                "App setting: {key} (pushdeploy appsettings; overrides .deployment's)"
            ));
        }
        for refused in &self.refused_app_settings {
            out.push(refused.to_string());
        }
        if let Some(words) = &self.post_build {
            out.push(format!(
                "POST_BUILD_COMMAND: {} (after the switch)",
                shell_words::join(words)
            ));
        }
        if let Some(words) = &self.post_deploy {
            out.push(format!("postDeploy: {}", shell_words::join(words)));
        }
        if let Some(check) = &self.health_check {
            out.push(format!("Health check: {check}"));
        }
        out
    }
}

/// What the sync will do: from the diff with the deployed commit, or by
/// comparing every file, with the reason.
fn sync_plan(settings: &Settings, values: &Values, commit: &Commit) -> Result<SyncPlan> {
    let store = manifest::Store::new(&settings.state_dir);
    let previous = store.load(&settings.site)?;
    let mut pending = store.load_pending(&settings.site)?;
    // A killed deployment's sync that the deployment undoes before it plans
    // (only a dry run still finds its journal): plan from the site as it
    // will be then, the deployed commit's files again.
    let killed = !crate::lock::is_held(&settings.state_dir);
    let put_back = match crate::journal::outlook(&settings.state_dir) {
        Some(crate::journal::Outlook::Undo { added, .. }) if killed => {
            pending = None;
            Some(added)
        }
        _ => None,
    };
    // Each earlier commit with its own project folder: the files it wrote.
    let open = |m: &Manifest| commit.sibling(&m.commit, m.project.as_deref()).ok();
    let deployed = previous.as_ref().and_then(open);
    let interrupted = pending.as_ref().and_then(open);
    let lost = match (&previous, &deployed) {
        (Some(m), None) => Some(short_id(&m.commit).to_string()),
        _ => None,
    };
    let project_changed = previous
        .as_ref()
        .filter(|m| m.project.as_deref() != commit.project())
        .map(|m| {
            (
                m.project.clone().unwrap_or_else(|| "/".into()),
                commit.project().unwrap_or("/").to_string(),
            )
        });
    let verify = values.bool(VERIFY).is_some_and(|(on, _)| on);
    let before = sync::Before {
        project_changed,
        deployed: deployed.as_ref(),
        interrupted: interrupted.as_ref(),
        lost,
        verify,
        after_command: previous.as_ref().and_then(|m| m.after_command.clone()),
        command_files: previous
            .as_ref()
            .and_then(|m| crate::command::owned_list(&settings.state_dir, m)),
        take_over: values.bool(TAKE_OVER_FILES).is_some_and(|(on, _)| on),
        put_back: put_back.as_ref(),
    };
    sync::plan(commit, &before, &settings.site)
}

fn packages_line(installer: &Installer, packages: &Preview) -> String {
    let name = installer.name();
    match packages {
        Preview::NotAsked => format!("{name}: install -r requirements.txt"),
        Preview::NewEnv => {
            format!("{name}: install everything in requirements.txt into the new env")
        }
        Preview::WouldInstall { packages } if packages.is_empty() => {
            format!("{name}: nothing to install (all requirements are satisfied)")
        }
        Preview::WouldInstall { packages } => format!(
            "{name}: would install {}",
            packages
                .iter()
                .map(|p| format!("{} {}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Preview::Unknown { why } => {
            format!(
                "{name}: install -r requirements.txt (pip cannot say what it would install: {why})"
            )
        }
    }
}

pub fn runtime_line(choice: &Choice) -> String {
    format!(
        "Python runtime: {} ({}) -> {} ({})",
        choice.request,
        choice.source,
        choice.interpreter.path.display(),
        choice.interpreter.version
    )
}

fn choose_runtime(
    settings: &Settings,
    values: &Values,
    commit: &Commit,
    probes: &Probes,
) -> Result<Choice> {
    let runtime_txt = commit.read_root_file("runtime.txt")?;
    let python_version = commit.read_root_file(".python-version")?;
    runtime::choose(
        runtime_txt.as_deref(),
        python_version.as_deref(),
        values.python(),
        &runtime::Search::of(settings),
        probes,
    )
}

/// The runtime of a project with its own Python requirement: where
/// runtime.txt, `.python-version` and the `python` setting are silent, the
/// newest interpreter found that satisfies it; a runtime they choose must
/// satisfy it too.
fn choose_runtime_for(
    settings: &Settings,
    values: &Values,
    commit: &Commit,
    probes: &Probes,
    project: Option<(pep440_rs::VersionSpecifiers, String)>,
) -> Result<Choice> {
    let Some((specs, what)) = project else {
        return choose_runtime(settings, values, commit, probes);
    };
    let silent = !commit.has_root_entry("runtime.txt")
        && !commit.has_root_entry(".python-version")
        && values.python().1.origin == crate::settings::Origin::Default;
    if !silent {
        let choice = choose_runtime(settings, values, commit, probes)?;
        if !managers::satisfies(&specs, choice.interpreter.version) {
            bail!(
                "{}: {} ({} {}) is outside {what}; change one of them",
                choice.source,
                choice.request,
                choice.interpreter.path.display(),
                choice.interpreter.version
            );
        }
        return Ok(choice);
    }
    let fits = |v| managers::satisfies(&specs, v);
    let search = runtime::Search::of(settings);
    let Some(interpreter) = runtime::first_fitting(&search, probes, &fits) else {
        let found = runtime::all_found(&search, probes);
        bail!(
            "{what}: no installed interpreter satisfies it; found: {}",
            found
                .iter()
                .map(|i| format!("{} ({})", i.version, i.path.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let request = runtime::Request {
        major: interpreter.version.major,
        minor: interpreter.version.minor,
        patch: None,
    };
    Ok(Choice {
        request,
        runtime: request.runtime(),
        source: runtime::Source::Project(what),
        interpreter,
    })
}

/// The custom command's path in the commit: a file there, executable, that
/// is run directly (no shell).
fn command_path(commit: &Commit, value: &str) -> Result<String> {
    let path = value.trim().trim_start_matches("./").to_string();
    let entries = commit.all_entries()?;
    match entries.iter().find(|e| e.path == path) {
        Some(e) if e.kind == Kind::Executable => Ok(path),
        Some(_) => bail!(
            "setting command: {path} is not executable in the commit; run `git update-index --chmod=+x {path}` and commit"
        ),
        None => bail!(
            "setting command: {value:?} is not a file of commit {}",
            commit.info.short
        ),
    }
}

fn python_plan(
    settings: &Settings,
    values: &Values,
    commit: &Commit,
    preview: bool,
    probes: &Probes,
) -> Result<Python> {
    let manager_files = [REQUIREMENTS, managers::PYPROJECT, managers::PIPFILE]
        .into_iter()
        .chain(managers::KINDS.iter().map(|k| k.lock_file()));
    if !manager_files.into_iter().any(|f| commit.has_root_entry(f)) {
        return Ok(Python::Skip {
            reason: "no requirements.txt in the commit".into(),
        });
    }
    if commit.has_root_entry(SKIP_PYTHON) {
        return Ok(Python::Skip {
            reason: format!("{SKIP_PYTHON} is in the commit"),
        });
    }
    let (kind, notes) = match managers::detect(commit, values)? {
        Detected::Nothing => {
            return Ok(Python::Skip {
                reason: "no requirements.txt or lock file in the commit".into(),
            });
        }
        Detected::Requirements { notes } => (None, notes),
        Detected::Lock(kind) => (Some(kind), Vec::new()),
    };
    let project_python = match kind {
        Some(kind) => managers::project_python(commit, kind)?,
        None => None,
    };
    let mut runtime = choose_runtime_for(settings, values, commit, probes, project_python)?;
    let env = env::decide(&settings.site, runtime.request, forced(values), probes);
    match &env {
        Decision::Create { .. } => {
            env::tool(&runtime, probes.runner())?;
        }
        // What runs is the env's interpreter, which may be another build of
        // the same runtime (Kudu's rule keeps a 3.11.7 env for python-3.11).
        Decision::Reuse => {
            if let Some(python) = env::interpreter(&settings.site, probes) {
                runtime.interpreter = python;
            }
        }
    }
    let keep_unneeded = match values.bool(crate::settings::REMOVE_UNNEEDED) {
        Some((false, origin)) => Some(origin.to_string()),
        _ => None,
    };
    if let Some(kind) = kind {
        let installer = packages::installer(settings, values)?;
        let cx = lockfile::Inputs {
            settings,
            values,
            commit,
            runtime: &runtime,
            env: &env,
            installer: &installer,
            preview,
            runner: probes.runner(),
        };
        let (lock, pip, fingerprint) = lockfile::plan(kind, &cx)?;
        return Ok(Python::Run {
            runtime,
            env,
            installer,
            pip,
            packages: Preview::NotAsked,
            lock: Some(lock),
            notes,
            keep_unneeded,
            fingerprint,
            resolve: None,
            git: Vec::new(),
        });
    }
    let packages = packages::plan(
        settings,
        values,
        commit,
        &env,
        runtime.interpreter.version,
        preview,
        probes.runner(),
    )?;
    Ok(Python::Run {
        runtime,
        env,
        installer: packages.installer,
        pip: packages.pip,
        packages: packages.packages,
        lock: None,
        notes,
        keep_unneeded,
        fingerprint: packages.fingerprint,
        resolve: packages.resolve,
        git: packages.git,
    })
}

fn framework_plan(values: &Values, commit: &Commit, python: &Python) -> Framework {
    let skip = |reason: String| Framework::Skip { reason };
    if !commit.has_root_entry("manage.py") {
        return skip("no manage.py".into());
    }
    if let Python::Skip { reason } = python {
        return skip(format!("the Python steps are skipped: {reason}"));
    }
    if commit.has_root_entry(SKIP_DJANGO) {
        return skip(format!("{SKIP_DJANGO} is in the commit"));
    }
    if let Some((true, origin)) = values.bool(DISABLE_COLLECTSTATIC) {
        return skip(format!("DISABLE_COLLECTSTATIC is set ({origin})"));
    }
    Framework::Collectstatic {
        strict: values
            .bool(STRICT_COLLECTSTATIC)
            .is_some_and(|(strict, _)| strict),
    }
}
