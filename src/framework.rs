//! Framework steps after the packages: Django's collectstatic, when the app
//! has manage.py and Django is installed in the env.

use std::path::Path;

use anyhow::Result;

use crate::report::{Report, dies_with_us};

/// Whether the env's Python can import Django. `-I` keeps the site's own
/// folder off `sys.path`: an app's `django.py` is not Django, and is not run.
pub fn django_installed(site: &Path) -> bool {
    dies_with_us(duct::cmd!(
        site.join("env/bin/python"),
        "-I",
        "-c",
        "import django"
    ))
    .dir(site)
    .stdout_null()
    .stderr_null()
    .unchecked()
    .run()
    .is_ok_and(|out| out.status.success())
}

/// `env/bin/python manage.py collectstatic --noinput --clear`, in the site,
/// as Kudu runs it. `--clear` makes Django print `Deleting '<file>'` for every
/// static file of the last run (hundreds with the admin's), on every push:
/// such a run of lines is printed as one count.
pub fn collectstatic(site: &Path, report: &mut Report) -> Result<()> {
    let expr = duct::cmd!(
        site.join("env/bin/python"),
        "manage.py",
        "collectstatic",
        "--noinput",
        "--clear"
    )
    .dir(site);
    report.folding("Deleting '", |r| r.run("manage.py collectstatic", expr))
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
