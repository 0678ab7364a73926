//! Framework steps after the packages: Django's collectstatic, when the app
//! has manage.py and Django is installed in the env.

use std::path::Path;

use anyhow::Result;

use crate::process::Runner;
use crate::report::Report;

/// Whether the env's Python can import Django. `-I` keeps the site's own
/// folder off `sys.path`: an app's `django.py` is not Django, and is not run.
/// Fails when the interpreter cannot be run or outlives the limits.
pub fn django_installed(site: &Path, runner: &Runner) -> Result<bool> {
    let expr = duct::cmd!(site.join("env/bin/python"), "-I", "-c", "import django").dir(site);
    Ok(runner
        .for_server()
        .capture("the Django check", expr)?
        .success)
}

/// A failed collectstatic (`error`), as Kudu and Oryx take it: a warning,
/// and the deployment goes on (Kudu's script does not check its status;
/// Oryx prints it and goes on), since an app may serve its static files
/// otherwise and the health check judges whether it works. `strict`
/// (setting `strictCollectstatic`): the error, which rolls back.
pub fn failed(
    error: anyhow::Error,
    strict: bool,
    runner: &Runner,
    report: &mut Report,
) -> Result<()> {
    // Killed for the deployment's time limit, it fails whatever: the limit
    // is the whole deployment's.
    if strict || runner.check_deadline().is_err() {
        return Err(error);
    }
    // The step did not fail the deployment: a later failure is not its.
    report.current = None;
    report.warning(format!(
        "collectstatic failed ({error:#}): the app may lack its static files; the deployment goes on, as in Kudu (setting {} = true makes this a failure that rolls back)",
        crate::settings::STRICT_COLLECTSTATIC.name
    ));
    Ok(())
}

/// `env/bin/python manage.py collectstatic --noinput --clear`, in the site,
/// as Kudu runs it. `--clear` makes Django print `Deleting '<file>'` for every
/// static file of the last run (hundreds with the admin's), on every push:
/// such a run of lines is printed as one count.
pub fn collectstatic(site: &Path, runner: &Runner, report: &mut Report) -> Result<()> {
    let expr = duct::cmd!(
        site.join("env/bin/python"),
        "manage.py",
        "collectstatic",
        "--noinput",
        "--clear"
    )
    .dir(site);
    report.folding("Deleting '", |r| {
        runner.run(r, "manage.py collectstatic", expr)
    })
}

#[cfg(test)]
mod tests {
    use crate::process::{Limits, Runner};
    use crate::report::{INDENT, Report};

    /// A failure is a warning and clears the failed step, unless strict or
    /// past the deployment's time limit: then it is the deployment's error.
    #[test]
    fn a_failed_collectstatic_is_a_warning_unless_strict_or_out_of_time() {
        let runner = Runner::new(Vec::new(), Limits::DEFAULT, None);
        let mut report = Report::new(Box::new(std::io::sink()));
        report.current = Some("collectstatic".into());
        let error = || anyhow::anyhow!("manage.py collectstatic exited with status 1");
        super::failed(error(), false, &runner, &mut report).unwrap();
        assert_eq!(report.current, None);
        assert_eq!(report.warnings.len(), 1);
        assert!(
            report.log[0].starts_with("-----> Warning: collectstatic failed (manage.py collectstatic exited with status 1): the app may lack its static files"),
            "{:?}",
            report.log
        );
        let mut report = Report::new(Box::new(std::io::sink()));
        let err = super::failed(error(), true, &runner, &mut report).unwrap_err();
        assert_eq!(err.to_string(), error().to_string());
        let out_of_time = Runner::new(
            Vec::new(),
            Limits {
                total: std::time::Duration::ZERO,
                ..Limits::DEFAULT
            },
            None,
        );
        assert!(super::failed(error(), false, &out_of_time, &mut report).is_err());
        assert!(report.warnings.is_empty());
    }

    #[test]
    fn runs_of_deleting_lines_are_folded_into_one_each() {
        let mut report = Report::new(Box::new(std::io::sink()));
        report.folding("Deleting '", |r| {
            for line in [
                "before",
                "Deleting 'a.css'",
                "Deleting 'b/c.js'",
                "Deleting 'z.png'",
                "",
                "Deleting 'alone.txt'",
                "after",
                "Deleting 'x'",
                "Deleting 'y'",
            ] {
                r.detail(line);
            }
        });
        report.detail("Deleting 'not folded'");
        let log: Vec<&str> = report.log.iter().map(|l| l.trim_start()).collect();
        assert_eq!(
            log,
            [
                "before",
                "Deleting 3 files ('a.css' ... 'z.png')",
                "",
                "Deleting 'alone.txt'",
                "after",
                "Deleting 2 files ('x' ... 'y')",
                "Deleting 'not folded'",
            ]
        );
        assert!(report.log[0].starts_with(INDENT));
    }
}
