//! Framework steps after the packages: Django's collectstatic, when the app
//! has manage.py and Django is installed in the env.

use std::path::Path;

use anyhow::Result;

use crate::process::{Runner, spawn_rules};
use crate::report::Report;

/// Whether the env's Python can import Django. `-I` keeps the site's own
/// folder off `sys.path`: an app's `django.py` is not Django, and is not run.
pub fn django_installed(site: &Path) -> bool {
    spawn_rules(duct::cmd!(
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

/// `env/bin/python manage.py collectstatic --noinput --clear`, in the site.
pub fn collectstatic(site: &Path, runner: &Runner, report: &mut Report) -> Result<()> {
    let expr = duct::cmd!(
        site.join("env/bin/python"),
        "manage.py",
        "collectstatic",
        "--noinput",
        "--clear"
    )
    .dir(site);
    runner.run(report, "manage.py collectstatic", expr)
}
