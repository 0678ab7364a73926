//! Fast env creation. `python -m venv` spends most of its time in ensurepip
//! (about 4 s of 4.5). Instead: `python -m venv --without-pip`, then pip (and
//! whatever else ensurepip puts there) hard-linked from a seed kept per
//! interpreter in the user's cache dir, made once by an ordinary
//! `python -m venv`.
//! The env ends up as ensurepip would have left it: same files, and
//! `bin/pip`, `bin/pipX`, `bin/pipX.Y` scripts pointing at the env's python.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::files::{Files, copy_tree};
use crate::report::Report;
use crate::runtime::Version;

fn site_packages(env: &Path, v: Version) -> PathBuf {
    env.join("lib")
        .join(format!("python{}.{}", v.major, v.minor))
        .join("site-packages")
}

/// The seed for one interpreter: `<cache>/<version>-<path>/site-packages`,
/// by the file the interpreter runs, whatever name led to it
/// (`/usr/bin/python3` and `/usr/bin/python3.11` share one seed).
fn seed_dir(cache: &Path, python: &Path, v: Version) -> PathBuf {
    let real = std::fs::canonicalize(python).unwrap_or_else(|_| python.to_path_buf());
    let path: String = real
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    cache.join(format!("python-{v}-{path}"))
}

const WORK_PREFIX: &str = ".seed-";

/// Removes the work directories of seed builds that were killed: any older
/// than an hour (a build takes seconds; a younger one may be another
/// deployment's, under way). Best effort: the cache is only a cache.
fn remove_abandoned_work(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
        if old && entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes the seed once: an ordinary venv, whose site-packages is kept.
fn ensure_seed(
    python: &Path,
    v: Version,
    cache: &Path,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<PathBuf> {
    let seed = seed_dir(cache, python, v);
    if seed.join("site-packages").is_dir() {
        return Ok(seed);
    }
    report.detail(format!(
        "caching pip for {} (once per interpreter)",
        python.display()
    ));
    fs_err::create_dir_all(cache)?;
    remove_abandoned_work(cache);
    let work = tempfile::Builder::new()
        .prefix(WORK_PREFIX)
        .tempdir_in(cache)?;
    let venv = work.path().join("venv");
    let expr = duct::cmd!(python, "-m", "venv", &venv).stderr_to_stdout();
    let out = runner.for_server().capture("python -m venv", expr)?;
    if !out.success {
        anyhow::bail!(
            "{} -m venv failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let staged = work.path().join("seed");
    fs_err::create_dir(&staged)?;
    fs_err::rename(site_packages(&venv, v), staged.join("site-packages"))?;
    // Another deployment may have made it meanwhile: either copy is good.
    if fs_err::rename(&staged, &seed).is_err() && !seed.join("site-packages").is_dir() {
        anyhow::bail!("could not store the pip seed in {}", seed.display());
    }
    Ok(seed)
}

/// pip's console script, as ensurepip writes it.
fn pip_script(python: &Path) -> String {
    format!(
        "#!{}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom pip._internal.cli.main import main\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(main())\n",
        python.display()
    )
}

/// Creates a venv at `dir` with pip, seeded from the cache.
///
/// With `uv` (the uv installer), the bare env is made by `uv venv`, which is
/// faster than Python's venv module; pip is seeded the same way.
pub fn create(
    python: &Path,
    v: Version,
    dir: &Path,
    cache: &Path,
    uv: Option<&Path>,
    runner: &crate::process::Runner,
    report: &mut Report,
) -> Result<()> {
    let seed = ensure_seed(python, v, cache, runner, report)?;
    match uv {
        Some(uv) => {
            report.detail(format!(
                "{} venv --python {} {}",
                uv.display(),
                python.display(),
                dir.display()
            ));
            runner.run(
                report,
                "uv venv",
                duct::cmd!(uv, "venv", "--quiet", "--python", python, dir),
            )?;
        }
        None => {
            report.detail(format!(
                "{} -m venv --without-pip {}",
                python.display(),
                dir.display()
            ));
            runner.run(
                report,
                "python -m venv",
                duct::cmd!(python, "-m", "venv", "--without-pip", dir),
            )?;
        }
    }
    copy_tree(
        &seed.join("site-packages"),
        &site_packages(dir, v),
        Files::Link,
    )
    .context("seeding pip into the new env")?;
    let env_python = dir.join("bin").join("python");
    for name in [
        "pip".to_string(),
        format!("pip{}", v.major),
        format!("pip{}.{}", v.major, v.minor),
    ] {
        let path = dir.join("bin").join(name);
        fs_err::write(&path, pip_script(&env_python))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    report.detail(format!("pip seeded from {}", seed.display()));
    Ok(())
}
