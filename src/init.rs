//! `pushdeploy init`: makes or adopts a bare repository, installs the
//! post-receive hook and writes the settings. Running it again changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use git2::{Repository, RepositoryInitOptions};

use crate::error::usage;
use crate::report::Report;

/// The file at the top of a site that names the repository deploying into
/// it (written by `init` and by each deployment), so that `init` of another
/// repository onto the same site is refused. It only points: the named
/// repository's own `deploy.site` says whether it still deploys there.
pub const OWNER_FILE: &str = ".pushdeploy-repository";

/// The hook script kept in this repository's `hooks/` folder.
const HOOK_TEMPLATE: &str = include_str!("../hooks/post-receive");

/// Quotes a path for the hook script (single quotes; a `'` inside is closed,
/// escaped and reopened), so no character of it is read by the shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

pub fn hook_script(exe: &Path) -> String {
    HOOK_TEMPLATE.replace("@PUSHDEPLOY@", &shell_quote(&exe.to_string_lossy()))
}

/// Sets up `repo_path` to deploy into `site`. Every error is a setup error
/// (exit status 2, like bad usage): no deployment ran, so none failed.
pub fn init(
    repo_path: &Path,
    site: &Path,
    branch: Option<&str>,
    move_site: bool,
    report: &mut Report,
) -> Result<()> {
    set_up(repo_path, site, branch, move_site, report).map_err(|e| {
        if crate::error::exit_status(&e) == 2 {
            e
        } else {
            usage(format!("{e:#}"))
        }
    })
}

/// The existing repository at `path`, if it is a bare one.
fn adopt(path: &Path) -> Result<Repository> {
    let not_bare = |workdir: &Path| {
        // libgit2 ends a work tree's path with `/`.
        let workdir = workdir.components().as_path().display();
        usage(format!(
            "{}: a repository with a work tree ({workdir}), not a bare one: pushes to it do not \
             deploy (git refuses a push to its checked-out branch); make a bare one for \
             pushdeploy with `git clone --bare {workdir} <new path>.git`, then \
             `pushdeploy init <new path>.git --site <dir>`",
            path.display(),
        ))
    };
    match Repository::open(path) {
        Ok(repo) => match repo.workdir() {
            Some(workdir) => Err(not_bare(workdir)),
            None => Ok(repo),
        },
        Err(e) => Err(crate::error::not_owned(path, &e).unwrap_or_else(|| usage(format!(
            "{}: exists but is not a git repository; give a new path, or one made with `git init --bare`",
            path.display()
        )))),
    }
}

fn set_up(
    repo_path: &Path,
    site: &Path,
    branch: Option<&str>,
    move_site: bool,
    report: &mut Report,
) -> Result<()> {
    let mut changes = Vec::new();
    let existing = if repo_path.exists() {
        Some(adopt(repo_path)?)
    } else {
        None
    };
    // An existing repository set up for another site: moving it is asked for
    // by name, since the state dir's manifest belongs to the old site.
    if let Some(repo) = &existing {
        let old = repo.config()?.get_string("deploy.site").ok();
        let new = std::path::absolute(site)?;
        let new = fs_err::canonicalize(&new).unwrap_or(new);
        if let Some(old) = old.filter(|old| Path::new(old) != new && !move_site) {
            return Err(usage(format!(
                "{}: already deploys to {old}; to deploy to {} instead, run again with \
                 --move-site (the next deployment then compares every file of the new site \
                 with the commit; the old site is left as it is)",
                repo_path.display(),
                new.display()
            )));
        }
    }

    // A site that another repository deploys into: both would deploy at
    // once (each has its own lock), and each would undo the other's files.
    if let Some(other) = other_owner(site, repo_path) {
        return Err(usage(format!(
            "site {}: repository {} deploys to it (named in {}/{OWNER_FILE}, and its \
             deploy.site is this site); give another site, or move that repository's \
             with `pushdeploy init {} --site <dir> --move-site`",
            site.display(),
            other.display(),
            site.display(),
            other.display()
        )));
    }

    // The site first: when it cannot be made, no repository is left behind.
    if !site.exists() {
        fs_err::create_dir_all(site)?;
        changes.push(format!("created site directory {}", site.display()));
    }
    let site = fs_err::canonicalize(site)?;

    let repo = match existing {
        Some(repo) => repo,
        None => {
            let mut opts = RepositoryInitOptions::new();
            opts.bare(true).initial_head(branch.unwrap_or("main"));
            changes.push(format!("created bare repository {}", repo_path.display()));
            Repository::init_opts(repo_path, &opts)
                .map_err(|e| anyhow::anyhow!("creating {}: {}", repo_path.display(), e.message()))?
        }
    };
    let made = changes.iter().any(|c| c.starts_with("created bare"));
    let result = configure(&repo, &site, branch, &mut changes).and_then(|()| {
        let repo_path = repo.path();
        if owner(&site).is_none_or(|named| !same_path(&named, repo_path)) {
            // The state dir's default place: only the temp file's name uses it.
            mark(&site, repo_path, &repo_path.join("pushdeploy"))?;
            changes.push(format!("wrote {}/{OWNER_FILE}", site.display()));
        }
        Ok(())
    });
    if result.is_err() && made {
        // Remove the half-made repository this run created.
        let _ = fs_err::remove_dir_all(repo.path());
    }
    result?;
    let repo_path = repo.path().to_path_buf();

    if changes.is_empty() {
        report.header(format!(
            "{} is already set up to deploy to {}: nothing changed",
            repo_path.display(),
            site.display()
        ));
    } else {
        report.header(format!(
            "{} deploys to {}",
            repo_path.display(),
            site.display()
        ));
        for change in changes {
            report.detail(change);
        }
    }
    Ok(())
}

/// Installs the hook and writes the settings into `repo`.
fn configure(
    repo: &Repository,
    site: &Path,
    branch: Option<&str>,
    changes: &mut Vec<String>,
) -> Result<()> {
    let repo_path = repo.path().to_path_buf();
    let exe = std::env::current_exe().context("finding the pushdeploy executable")?;
    let hook = repo_path.join("hooks").join("post-receive");
    let script = hook_script(&exe);
    if fs_err::read_to_string(&hook).ok().as_deref() != Some(script.as_str()) {
        fs_err::create_dir_all(hook.parent().expect("hooks/ has a parent"))?;
        fs_err::write(&hook, &script)?;
        changes.push(format!("installed {}", hook.display()));
    }
    if fs_err::metadata(&hook)?.permissions().mode() & 0o777 != 0o755 {
        fs_err::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    }

    let mut config = repo.config()?.open_level(git2::ConfigLevel::Local)?;
    let mut wanted = vec![
        ("deploy.site", site.to_string_lossy().into_owned()),
        ("receive.advertisePushOptions", "true".into()),
    ];
    if let Some(branch) = branch {
        wanted.push(("deploy.branch", branch.to_string()));
    }
    // A new repository runs its app; an adopted one keeps what it did.
    if changes.iter().any(|c| c.starts_with("created bare")) {
        wanted.push(("deploy.run", "true".into()));
    }
    let mut moved = false;
    for (key, value) in wanted {
        let old = config.get_string(key).ok();
        if old.as_deref() != Some(value.as_str()) {
            config.set_str(key, &value)?;
            match old {
                // The old site keeps its files and env; say so, it is not moved.
                Some(old) if key == "deploy.site" => {
                    moved = true;
                    changes.push(format!(
                        "set {key} = {value} (was {old}, which is left as it is; the next \
                         deployment compares every file)"
                    ))
                }
                Some(old) => changes.push(format!("set {key} = {value} (was {old})")),
                None => changes.push(format!("set {key} = {value}")),
            }
        }
    }

    if moved {
        // The deployed-commit basis belongs to the old site: forget it, so
        // that the next deployment compares every file, wherever it goes.
        let sources =
            crate::settings::Sources::new(crate::settings::Environment::from_process(), repo)?;
        let settings = crate::settings::Settings::resolve(&repo_path, repo, sources)?;
        crate::manifest::Store::new(&settings.state_dir).forget()?;
    }
    Ok(())
}

/// The repository that the site's marker names, if it names one.
fn owner(site: &Path) -> Option<std::path::PathBuf> {
    use std::io::Read;
    // Opened as any file in the site: no symlink followed, never blocking.
    let dir = crate::site_dir::SiteDir::open(site).ok()?;
    let (mut file, _) = dir.root().open_file(OWNER_FILE).ok()?;
    let mut text = String::new();
    file.by_ref().take(4096).read_to_string(&mut text).ok()?;
    let path = text.strip_suffix('\n').unwrap_or(&text);
    (!path.is_empty()).then(|| path.into())
}

/// The same path, whichever way it is written.
fn same_path(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| fs_err::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}

/// The repository other than `repo_path` that deploys into `site`: the one
/// the site's marker names, if it is still a repository whose `deploy.site`
/// is this site (a marker left by a repository that moved or is gone names
/// none).
pub fn other_owner(site: &Path, repo_path: &Path) -> Option<std::path::PathBuf> {
    let named = owner(site)?;
    if same_path(&named, repo_path) {
        return None;
    }
    let repo = Repository::open_bare(&named).ok()?;
    if same_path(repo.path(), repo_path) {
        return None;
    }
    let theirs = repo.config().ok()?.get_string("deploy.site").ok()?;
    same_path(Path::new(&theirs), site).then(|| repo.path().components().as_path().to_path_buf())
}

/// Writes the site's marker naming `repo_path` (a temp file renamed over it,
/// through the site's handle: a symlink there is replaced, not followed).
fn mark(site: &Path, repo_path: &Path, state_dir: &Path) -> Result<()> {
    use std::io::Write;
    let dir = crate::site_dir::SiteDir::open(site)?;
    let root = dir.root();
    // A temp file of this repository's, which only its own sweeps remove.
    let tag = crate::journal::owner_tag(state_dir);
    let prefix = format!("{}{tag}-", crate::sync::SYNC_TEMP_PREFIX);
    let (temp, mut file) = root.make_temp(&prefix, |n| root.create_new(n, 0o644))?;
    // libgit2 ends a repository's path with `/`.
    let named = repo_path.components().as_path().display();
    let written = file
        .write_all(format!("{named}\n").as_bytes())
        .and_then(|()| root.rename(&temp, root, OWNER_FILE));
    if written.is_err() {
        let _ = root.unlink(&temp);
    }
    written.with_context(|| format!("writing {}/{OWNER_FILE}", site.display()))
}

/// At each deployment, under the lock: the site's marker names this
/// repository, unless another one that still deploys there is named (then
/// the pusher is told, and the marker left). Never fails the deployment.
pub fn claim_site(site: &Path, repo: &Repository, state_dir: &Path, report: &mut Report) {
    let repo_path = repo.path();
    if let Some(other) = other_owner(site, repo_path) {
        report.detail(format!(
            "warning: repository {} deploys to this site too; two repositories deploying \
             into one site replace each other's files (move one with `pushdeploy init \
             <repository> --site <dir> --move-site`)",
            other.display()
        ));
        return;
    }
    if owner(site).is_none_or(|named| !same_path(&named, repo_path))
        && let Err(e) = mark(site, repo_path, state_dir)
    {
        report.detail(format!("warning: {e:#}"));
    }
}
