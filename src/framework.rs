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
    use crate::report::{INDENT, Report};

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
