//! Framework steps after the packages: Django's collectstatic, when the app
//! has manage.py and Django is installed in the env.

use std::path::Path;

use anyhow::Result;

use crate::report::Report;

/// Whether the env's Python can import Django.
pub fn django_installed(site: &Path) -> bool {
    duct::cmd!(site.join("env/bin/python"), "-c", "import django")
        .dir(site)
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .is_ok_and(|out| out.status.success())
}

/// `env/bin/python manage.py collectstatic --noinput --clear`, in the site.
pub fn collectstatic(site: &Path, report: &mut Report) -> Result<()> {
    let expr = duct::cmd!(
        site.join("env/bin/python"),
        "manage.py",
        "collectstatic",
        "--noinput",
        "--clear"
    )
    .dir(site);
    report.run("manage.py collectstatic", expr)
}
