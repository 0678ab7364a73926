#!/usr/bin/env python3
"""The pushdeploy benchmark (issue 5). Run it with `bash benches/run`.

Every case is measured against its baseline in the same run, in temp dirs,
offline: packages come from 40 generated wheels (see gen.py), pip and uv are
pointed at them with PIP_NO_INDEX / PIP_FIND_LINKS (UV_NO_INDEX /
UV_FIND_LINKS) and PIP_CONFIG_FILE=/dev/null. Deployments are real: `pushdeploy
init`, then `git push` into the bare repository (the hook deploys) or
`pushdeploy deploy --repo` where the case is a manual deployment. Step times
come from the deployment records (<repo>/pushdeploy/deployments/*.json).

Prints one table (medians of several runs; ratio = ours / baseline) with
PASS or MISS against each target, then what each deployment spent its time on.
Python 3 standard library only. Never part of `cargo test`.
"""

import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in benches/
import gen  # noqa: E402

DEFAULT_PYTHON = os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python3.11")
MIB = 1024 * 1024
STARTED = time.monotonic()


def log(msg):
    print("[%6.1fs] %s" % (time.monotonic() - STARTED, msg), file=sys.stderr, flush=True)


def fmt_time(s):
    if s is None:
        return "n/a"
    if s < 0.01:
        return "%.2f ms" % (s * 1000)
    if s < 1:
        return "%.0f ms" % (s * 1000)
    return "%.2f s" % s


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Failed(Exception):
    pass


def fs_of(path):
    """(mount point, file system type) of the mount that holds path."""
    best = ("/", "?")
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt, typ = parts[1], parts[2]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, typ)
    return best


def default_dir():
    """A tmpfs (/dev/shm) when it has room, else the system's temp dir.

    A disk makes file-heavy timings depend on the disk and on whatever else
    writes to it: on the machine this was written on (ext4 mounted with
    `discard`, shared with other jobs), deleting one 100,000-file tree took
    about a minute and made the next `git archive | tar -x` 3 to 12 times
    slower, so the same extraction took anything from 3 s to 38 s. Both sides
    of every comparison run on the same file system; give --dir to choose.
    """
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if fs_of(shm)[1] == "tmpfs" and st.f_bavail * st.f_frsize >= 4 * 1024 * MIB \
            and os.access(shm, os.W_OK):
        return shm
    return None


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.python = args.python
        self.tmp = tempfile.mkdtemp(prefix="pushdeploy-bench-",
                                    dir=args.dir if args.dir else default_dir())
        self.rows = []
        self.details = []
        self.results = {}
        q = args.quick
        self.n_fast = 2 if q else 5      # cases of a second or less per run
        self.n_slow = 1 if q else 3      # first deployments with packages
        self.n_noop = 3 if q else 9      # cheap, and its target is close to git's own push time
        self.wheels = os.path.join(self.tmp, "wheels")
        gitconfig = os.path.join(self.tmp, "gitconfig")
        with open(gitconfig, "w") as f:
            f.write("[user]\n\tname = Bench\n\temail = bench@example.invalid\n"
                    "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PUSHDEPLOY_", "GIT_", "PIP_", "UV_", "VIRTUAL_ENV"))}
        env.update({
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": self.wheels,
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_CACHE_DIR": os.path.join(self.tmp, "pip-cache"),
            "UV_NO_INDEX": "1",
            # uv has no UV_NO_INDEX: without this it asks PyPI for every
            # package it has not cached (a 404 each) before the find-links
            "UV_OFFLINE": "1",
            "UV_FIND_LINKS": self.wheels,
            "UV_NO_CONFIG": "1",
            "UV_CACHE_DIR": os.path.join(self.tmp, "uv-cache"),
            "UV_PYTHON_DOWNLOADS": "never",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": gitconfig,
            # the interpreter the baselines use is the one pushdeploy finds first
            "PUSHDEPLOY_PYTHON_PATH": os.path.dirname(self.python),
        })
        self.env = env

    # ---- running things -------------------------------------------------

    def run(self, cmd, cwd=None, env=None, check=True, stdin=None):
        """Runs cmd, output captured; returns (wall seconds, CompletedProcess).
        Dirty pages are flushed first, so that the writeback of an earlier
        run's files is not charged to this one."""
        os.sync()
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, env=env or self.env, input=stdin,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        dt = time.perf_counter() - t0
        if check and p.returncode != 0:
            raise Failed("%s exited %d:\n%s" % (" ".join(map(str, cmd)), p.returncode,
                                               p.stdout.decode(errors="replace")[-3000:]))
        return dt, p

    def run_rss(self, cmd, cwd=None, env=None):
        """Runs cmd; returns (wall seconds, exit status, output, peak RSS in bytes
        of that process). The peak comes from GNU time when it is installed: a
        child forked straight from this (large) Python process reports this
        process's own size as its ru_maxrss, so wait4 alone over-reports."""
        out_path = os.path.join(self.tmp, "rss-out.txt")
        rss_path = os.path.join(self.tmp, "rss-kb.txt")
        timer = ["/usr/bin/time", "-q", "-f", "%M", "-o", rss_path] if os.path.exists("/usr/bin/time") else []
        os.sync()
        with open(out_path, "wb") as out:
            t0 = time.perf_counter()
            p = subprocess.Popen(timer + cmd, cwd=cwd, env=env or self.env, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(p.pid, 0)
            dt = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
        with open(out_path, "rb") as f:
            output = f.read().decode(errors="replace")
        rss = usage.ru_maxrss * 1024
        if timer:
            with open(rss_path) as f:
                rss = int(f.read().split()[-1]) * 1024
        return dt, p.returncode, output, rss

    def git(self, *args, **kw):
        return self.run(["git"] + list(args), **kw)

    def init(self, repo, site):
        self.run([self.bin, "init", repo, "--site", site])
        # `init` turns running the app on for a new repository; the cases
        # measure deployments, the app's own cases turn it on themselves.
        self.git("--git-dir", repo, "config", "deploy.run", "false")

    def rm(self, *paths):
        subprocess.run(["rm", "-rf", "--"] + [p for p in paths if p])

    # ---- records ----------------------------------------------------------

    def latest_record(self, repo):
        files = glob.glob(os.path.join(repo, "pushdeploy", "deployments", "*.json"))
        if not files:
            raise Failed("%s: no deployment record" % repo)
        records = []
        for path in files:
            with open(path) as f:
                records.append(json.load(f))
        return max(records, key=lambda r: r.get("seq", 0))

    def checked_record(self, repo, output):
        rec = self.latest_record(repo)
        if rec.get("status") != "success":
            raise Failed("deployment in %s did not succeed: %s\n%s"
                         % (repo, rec.get("error"), output[-3000:]))
        return rec

    @staticmethod
    def steps(rec):
        out = {}
        for s in rec.get("steps", []):
            out[s["step"]] = out.get(s["step"], 0.0) + s["seconds"]
        return out

    def step_summary(self, recs):
        """'sync 1.2 ms, pip 1.10 s' from the medians of each step over records."""
        names = []
        for r in recs:
            for n in self.steps(r):
                if n not in names:
                    names.append(n)
        return ", ".join("%s %s" % (n, fmt_time(median([self.steps(r).get(n) for r in recs])))
                         for n in names) or "no steps"

    # ---- rows ---------------------------------------------------------------

    def row(self, key, case, ours, baseline, target, limit, note="", higher_is_ok=False,
            unit="time", status=None):
        """limit: the largest ours/baseline that passes (or, for memory, bytes)."""
        if unit == "bytes":
            ratio = None
            ok = ours is not None and ours <= limit
            ours_s, base_s = ("%.1f MiB" % (ours / MIB) if ours is not None else "n/a"), "-"
            ratio_s = "-"
        else:
            ratio = ours / baseline if ours is not None and baseline else None
            ok = ratio is not None and ratio <= limit
            ours_s, base_s = fmt_time(ours), fmt_time(baseline)
            ratio_s = "%.3g" % ratio if ratio is not None else "n/a"
            if ratio:
                ratio_s += " (%s)" % ("%.1fx faster" % (1 / ratio) if ratio < 1
                                      else "%.2fx" % ratio)
        result = status or ("PASS" if ok else "MISS")
        self.rows.append([case, ours_s, base_s, ratio_s, target, result, note])
        self.results[key] = {"ours": ours, "baseline": baseline, "ratio": ratio,
                             "result": result, "note": note}

    def error_row(self, key, case, target, err):
        log("ERROR in %s: %s" % (key, err))
        self.rows.append([case, "n/a", "n/a", "n/a", target, "ERROR", str(err).splitlines()[0]])
        self.results[key] = {"result": "ERROR", "error": str(err)}

    def detail(self, text):
        self.details.append(text)
        log(text)

    # ---- setup ----------------------------------------------------------------

    def setup(self):
        log("temp dir %s" % self.tmp)
        self.requirements = gen.build_wheels(self.wheels)
        log("built %d wheels into %s" % (len(os.listdir(self.wheels)), self.wheels))
        # the 40-package app, committed once; used by the no-op and uv cases
        self.app_work = os.path.join(self.tmp, "app-work")
        os.makedirs(self.app_work)
        gen.write_app(self.app_work, self.requirements)
        self.git("init", "-q", "-b", "main", cwd=self.app_work)
        self.git("add", "-A", cwd=self.app_work)
        self.git("commit", "-q", "-m", "benchmark app", cwd=self.app_work)
        self.app_first = self.git("rev-parse", "HEAD", cwd=self.app_work)[1].stdout.decode().strip()

    # ---- cases ------------------------------------------------------------------

    def case_noop(self):
        """A push that changes one .py file; the env and its 40 packages stay."""
        repo, site = os.path.join(self.tmp, "noop.git"), os.path.join(self.tmp, "noop-site")
        self.init(repo, site)
        dt, p = self.git("push", "-q", repo, "%s:refs/heads/main" % self.app_first,
                         cwd=self.app_work)
        first = self.checked_record(repo, p.stdout.decode(errors="replace"))
        self.detail("no-op: the first push (env + 40 packages with pip) took %s: %s"
                    % (fmt_time(dt), self.step_summary([first])))
        pip = os.path.join(site, "env", "bin", "pip")
        # git's own share of a push: the same pushes into a bare repository without the hook
        plain = os.path.join(self.tmp, "noop-plain.git")
        self.git("init", "-q", "--bare", plain)
        self.git("push", "-q", plain, "%s:refs/heads/main" % self.app_first, cwd=self.app_work)
        ours, base, recs, pip_ran, plain_t = [], [], [], 0, []
        for r in range(self.n_noop):
            with open(os.path.join(self.app_work, "app.py"), "a") as f:
                f.write("# edit %d\n" % r)
            self.git("commit", "-q", "-am", "edit %d" % r, cwd=self.app_work)
            dt, p = self.git("push", repo, "main", cwd=self.app_work)
            out = p.stdout.decode(errors="replace")
            rec = self.checked_record(repo, out)
            with open(os.path.join(site, "app.py")) as f:
                if not f.read().endswith("# edit %d\n" % r):
                    raise Failed("site/app.py does not have the pushed change")
            ours.append(dt)
            recs.append(rec)
            pip_ran += "pip" in self.steps(rec)
            # baseline: pip alone, on the same env, as the deployment would run it
            bt, _ = self.run([pip, "install", "--progress-bar", "off", "-r", "requirements.txt"],
                             cwd=site)
            base.append(bt)
            pt, _ = self.git("push", plain, "main", cwd=self.app_work)
            plain_t.append(pt)
        self.detail("no-op push (median of %d): whole push %s (the same push into a bare "
                    "repository without the hook: %s); steps: %s; pip ran in %d of %d"
                    % (len(ours), fmt_time(median(ours)), fmt_time(median(plain_t)),
                       self.step_summary(recs), pip_ran, len(recs)))
        self.row("noop", "no-op redeploy: push changing one .py file, 40 installed packages",
                 median(ours), median(base), "<= 1/20 of `pip install -r` alone", 1 / 20,
                 note="whole push; pip ran in %d/%d pushes" % (pip_ran, len(recs)))

    def big_case(self, files, n_first, n_change, first_baseline=True):
        """First deployments (`pushdeploy deploy --repo`, fresh repo and site each)
        of a `files`-file repository, then pushes that change one file."""
        tag = "%dk" % (files // 1000)
        src = os.path.join(self.tmp, "src%s.git" % tag)
        t0 = time.perf_counter()
        commits, changed = gen.big_repo(src, files, n_change, self.env)
        log("generated the %d-file repository in %s" % (files, fmt_time(time.perf_counter() - t0)))
        first_t, first_rss, first_recs, arch = [], [], [], []
        repo = site = None
        for r in range(n_first):
            if repo:
                self.rm(repo, site)
            repo = os.path.join(self.tmp, "big%s-%d.git" % (tag, r))
            site = os.path.join(self.tmp, "big%s-%d-site" % (tag, r))
            self.git("clone", "-q", "--bare", src, repo)
            self.git("--git-dir", repo, "update-ref", "refs/heads/main", commits[0])
            self.init(repo, site)
            dt, rc, out, rss = self.run_rss([self.bin, "deploy", "--repo", repo])
            if rc != 0:
                raise Failed("pushdeploy deploy exited %d:\n%s" % (rc, out[-3000:]))
            first_recs.append(self.checked_record(repo, out))
            first_t.append(dt)
            first_rss.append(rss)
            n = sum(len(fs) for _, _, fs in os.walk(site))
            if n < files:
                raise Failed("the site has %d files after the first deployment, want %d"
                             % (n, files))
            if first_baseline:
                d = os.path.join(self.tmp, "archive-%s" % tag)
                os.makedirs(d)
                bt, _ = self.run(["bash", "-c", 'git --git-dir "$1" archive "$2" | tar -x -C "$3"',
                                  "-", repo, commits[0], d])
                arch.append(bt)
                self.rm(d)
        self.detail("%d files, first deployment (median of %d): %s, peak RSS %.1f MiB; steps: %s"
                    % (files, len(first_t), fmt_time(median(first_t)),
                       max(first_rss) / MIB, self.step_summary(first_recs)))
        # one changed file per push
        change_wall, change_sync, change_arch, change_recs = [], [], [], []
        for r in range(n_change):
            sha = commits[r + 1]
            dt, p = self.git("--git-dir", src, "push", repo, "%s:refs/heads/main" % sha)
            rec = self.checked_record(repo, p.stdout.decode(errors="replace"))
            path, content = changed[r]
            with open(os.path.join(site, path), "rb") as f:
                if f.read() != content:
                    raise Failed("site/%s does not have the pushed change" % path)
            change_wall.append(dt)
            change_sync.append(self.steps(rec).get("sync"))
            change_recs.append(rec)
            d = os.path.join(self.tmp, "archive-%s" % tag)
            os.makedirs(d)
            bt, _ = self.run(["bash", "-c", 'git --git-dir "$1" archive "$2" | tar -x -C "$3"',
                              "-", repo, sha, d])
            change_arch.append(bt)
            self.rm(d)
        self.detail("%d files, one changed file (median of %d): sync step %s, whole push %s, "
                    "git archive | tar -x %s; steps: %s"
                    % (files, n_change, fmt_time(median(change_sync)), fmt_time(median(change_wall)),
                       fmt_time(median(change_arch)), self.step_summary(change_recs)))
        self.rm(repo, site, src)
        return {
            "first": median(first_t), "first_rss": max(first_rss),
            "first_archive": median(arch), "sync": median(change_sync),
            "change_wall": median(change_wall), "change_archive": median(change_arch),
        }

    def case_big(self):
        tgt10 = "sync step <= 1/10 of `git archive | tar -x`"
        try:
            r10 = self.big_case(10000, self.n_fast, self.n_fast)
        except Failed as e:
            r10 = None
            self.error_row("change10k", "one changed file, 10,000-file repository", tgt10, e)
            self.error_row("first10k", "first deployment, 10,000 files, no Python",
                           "<= 1.5x `git archive | tar -x`", e)
        if r10:
            self.row("change10k", "one changed file, 10,000-file repository", r10["sync"],
                     r10["change_archive"], tgt10, 1 / 10,
                     note="record's sync step; whole push %s" % fmt_time(r10["change_wall"]))
        tgt100 = "<= 1.5x the 10,000-file case"
        try:
            # one first deployment of 100,000 files: it is the memory case too
            r100 = self.big_case(100000, 1, self.n_fast)
        except Failed as e:
            r100 = None
            self.error_row("change100k", "the same with 100,000 files", tgt100, e)
        if r100:
            self.row("change100k", "the same with 100,000 files", r100["sync"],
                     r10 and r10["sync"], tgt100, 1.5,
                     note="sync step vs the 10,000-file sync step; whole push %s; "
                     "git archive | tar -x %s" % (fmt_time(r100["change_wall"]),
                                                  fmt_time(r100["change_archive"])))
        if r10:
            self.row("first10k", "first deployment, 10,000 files, no Python", r10["first"],
                     r10["first_archive"], "<= 1.5x `git archive | tar -x`", 1.5,
                     note="whole `pushdeploy deploy --repo`; peak RSS %.1f MiB"
                     % (r10["first_rss"] / MIB))
        if r100:
            self.row("memory", "peak memory, 100,000-file first deployment", r100["first_rss"],
                     None, "<= 64 MiB", 64 * MIB, unit="bytes",
                     note="max RSS of `pushdeploy deploy`; took %s (git archive | tar -x: %s)"
                     % (fmt_time(r100["first"]), fmt_time(r100["first_archive"])))
        else:
            self.rows.append(["peak memory, 100,000-file first deployment", "n/a", "-", "-",
                              "<= 64 MiB", "ERROR", "see the row above"])

    def case_env(self):
        """Creating the env, from the record's `env` step, vs `python -m venv`."""
        work = os.path.join(self.tmp, "env-work")
        os.makedirs(work)
        gen.write_app(work, ["benchpkg40==1.0.0"])
        self.git("init", "-q", "-b", "main", cwd=work)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", "one-package app", cwd=work)
        repo, site = os.path.join(self.tmp, "env.git"), os.path.join(self.tmp, "env-site")
        self.init(repo, site)
        _, p = self.git("push", "-q", repo, "main", cwd=work)
        first = self.checked_record(repo, p.stdout.decode(errors="replace"))
        ours, base, recs, pip_ok = [], [], [], 0
        for r in range(self.n_fast):
            _, p = self.run([self.bin, "deploy", "--repo", repo, "--recreate-env"])
            rec = self.checked_record(repo, p.stdout.decode(errors="replace"))
            recs.append(rec)
            ours.append(self.steps(rec).get("env"))
            _, v = self.run([os.path.join(site, "env", "bin", "pip"), "--version"], check=False)
            _, i = self.run([os.path.join(site, "env", "bin", "python"), "-c", "import benchpkg40"],
                            check=False)
            pip_ok += v.returncode == 0 and i.returncode == 0
            d = os.path.join(self.tmp, "venv-%d" % r)
            bt, _ = self.run([self.python, "-m", "venv", d])
            base.append(bt)
            self.rm(d)
        self.detail("env creation (median of %d): env step %s (first deployment's: %s), "
                    "`python -m venv` %s; steps: %s; env/bin/pip --version worked %d/%d"
                    % (len(ours), fmt_time(median(ours)), fmt_time(self.steps(first).get("env")),
                       fmt_time(median(base)), self.step_summary(recs), pip_ok, len(recs)))
        status = None if pip_ok == len(recs) else "MISS"
        self.row("env", "env creation", median(ours), median(base),
                 ">= 5x faster, pip working", 1 / 5, status=status,
                 note="record's env step, --recreate-env; pip worked in %d/%d envs; the "
                 "repository's first env took %s" % (pip_ok, len(recs),
                                                     fmt_time(self.steps(first).get("env"))))
        self.rm(repo, site, work)

    def find_uv(self):
        if self.args.uv:
            return self.args.uv
        found = shutil.which("uv")
        if found:
            return found
        if self.args.no_uv_install:
            return None
        target = os.path.join(self.tmp, "uv-pkg")
        log("uv not found: pip install uv into %s (from PyPI)" % target)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_NO_INDEX")}
        _, p = self.run([self.python, "-m", "pip", "install", "--quiet", "--target", target, "uv"],
                        env=env, check=False)
        uv = os.path.join(target, "bin", "uv")
        if p.returncode != 0 or not os.path.exists(uv):
            log("could not install uv: %s" % p.stdout.decode(errors="replace")[-500:])
            return None
        return uv

    def case_uv(self):
        case = "first deployment, 40-package app, installer = uv"
        target = ">= 5x faster than with pip"
        uv = self.find_uv()
        if not uv:
            self.rows.append([case, "-", "-", "-", target, "SKIPPED", "skipped: uv not found"])
            self.results["uv"] = {"result": "SKIPPED"}
            return
        version = self.run([uv, "--version"])[1].stdout.decode().strip()
        env_pip = dict(self.env)
        env_pip["PATH"] = os.path.dirname(uv) + os.pathsep + env_pip.get("PATH", "")
        env_uv = dict(env_pip, PUSHDEPLOY_INSTALLER="uv")
        # as configured by default: each new repository makes its own pip seed
        times, recs, uv_ran = self.first_deploys("a", env_pip, env_uv)
        implemented = uv_ran == self.n_slow
        self.detail("first deployment of the 40-package app, default settings (median of %d): "
                    "with pip %s (steps: %s); with installer=uv %s (steps: %s); uv named in the "
                    "output of %d/%d; %s"
                    % (self.n_slow, fmt_time(median(times["pip"])), self.step_summary(recs["pip"]),
                       fmt_time(median(times["uv"])), self.step_summary(recs["uv"]), uv_ran,
                       self.n_slow, version))
        self.row("uv", case, median(times["uv"]), median(times["pip"]), target, 1 / 5,
                 status=None if implemented else "MISS",
                 note="whole push, default settings; " + (
                     version if implemented else "installer=uv not implemented yet (pip ran)"))
        # a variant: repositories that share a seed dir made earlier (setting
        # cacheDir), so that env creation is the fast one in both
        seeds = os.path.join(self.tmp, "shared-seeds")
        env_pip = dict(env_pip, PUSHDEPLOY_CACHE_DIR=seeds)
        env_uv = dict(env_uv, PUSHDEPLOY_CACHE_DIR=seeds)
        self.first_deploys("w", env_pip, None, runs=1)  # makes the seed; not timed
        times, recs, uv_ran = self.first_deploys("b", env_pip, env_uv)
        self.detail("the same with a shared seed dir made beforehand (median of %d): with pip %s "
                    "(steps: %s); with installer=uv %s (steps: %s); uv named in the output of %d/%d"
                    % (self.n_slow, fmt_time(median(times["pip"])), self.step_summary(recs["pip"]),
                       fmt_time(median(times["uv"])), self.step_summary(recs["uv"]), uv_ran,
                       self.n_slow))
        self.row("uv-seeded", "the same, cacheDir shared and already made (variant, not in the issue)",
                 median(times["uv"]), median(times["pip"]), target, 1 / 5,
                 status=None if uv_ran == self.n_slow else "MISS",
                 note="whole push; env creation fast in both")

    def case_add(self):
        """A requirements change adding one package to the 40-package app: the
        deployment copies the env aside and installs into the copy; the baseline
        is pip installing the same change in place, into an env of its own."""
        case = "a requirements change adding one package, 40-package app"
        extra = [gen.build_wheel(self.wheels, "benchadd%02d" % r, "1.0.0")
                 for r in range(2 * self.n_fast + 2)]
        del extra
        uv = self.find_uv()
        envs = [("pip", dict(self.env))]
        if uv:
            env_uv = dict(self.env, PUSHDEPLOY_INSTALLER="uv")
            env_uv["PATH"] = os.path.dirname(uv) + os.pathsep + env_uv.get("PATH", "")
            envs.append(("uv", env_uv))
        base_env = os.path.join(self.tmp, "add-baseline-env")
        self.run([self.python, "-m", "venv", base_env])
        req = os.path.join(self.app_work, "requirements.txt")
        with open(req) as f:
            original = f.read()
        self.run([os.path.join(base_env, "bin", "pip"), "install", "-q", "-r", req])
        sites = {}
        for which, env in envs:
            repo = os.path.join(self.tmp, "add-%s.git" % which)
            site = os.path.join(self.tmp, "add-%s-site" % which)
            self.init(repo, site)
            _, p = self.git("push", "-q", repo, "%s:refs/heads/main" % self.app_first,
                            cwd=self.app_work, env=env)
            self.checked_record(repo, p.stdout.decode(errors="replace"))
            sites[which] = (repo, site, env)
        ours = {"pip": [], "uv": []}
        recs = {"pip": [], "uv": []}
        base = []
        lines = original
        for r in range(self.n_fast):
            lines += "benchadd%02d==1.0.0\n" % r
            with open(req, "w") as f:
                f.write(lines)
            self.git("commit", "-q", "-am", "add benchadd%02d" % r, cwd=self.app_work)
            for which, (repo, site, env) in sites.items():
                _, p = self.git("push", repo, "HEAD:refs/heads/main", cwd=self.app_work, env=env)
                rec = self.checked_record(repo, p.stdout.decode(errors="replace"))
                st = self.steps(rec)
                ours[which].append(st.get("env", 0.0) + st.get(which, 0.0))
                recs[which].append(rec)
            bt, _ = self.run([os.path.join(base_env, "bin", "pip"), "install", "--progress-bar",
                              "off", "-r", req])
            base.append(bt)
        with open(req, "w") as f:
            f.write(original)
        self.git("commit", "-q", "-am", "back to the 40 packages", cwd=self.app_work)
        self.detail("one added package (median of %d): with pip: copy aside and install %s "
                    "(steps: %s); pip in place %s%s"
                    % (len(base), fmt_time(median(ours["pip"])), self.step_summary(recs["pip"]),
                       fmt_time(median(base)),
                       "; with uv: %s (steps: %s)" % (fmt_time(median(ours["uv"])),
                                                      self.step_summary(recs["uv"]))
                       if recs["uv"] else ""))
        self.row("add", case + ", installer = pip", median(ours["pip"]), median(base),
                 "<= 1.3x pip installing it in place", 1.3,
                 note="record's env (the copy) + pip steps vs `pip install -r` in place")
        if recs["uv"]:
            self.row("add-uv", case + ", installer = uv", median(ours["uv"]), median(base),
                     "<= 1/3 of pip in place", 1 / 3,
                     note="record's env (the copy) + uv steps")
        for repo, site, _ in sites.values():
            self.rm(repo, site)
        self.rm(base_env)

    def case_rollback(self):
        """A push changing 100 files of a 10,000-file site whose health check
        fails: the restore (the record's `restore` step) against the sync that
        deployed them (its `sync` step)."""
        case = "rollback after a failed health check, 10,000 files, 100 changed"
        src = os.path.join(self.tmp, "src-rollback.git")
        commits, _ = gen.big_repo(src, 10000, 0, self.env)
        repo = os.path.join(self.tmp, "rollback.git")
        site = os.path.join(self.tmp, "rollback-site")
        work = os.path.join(self.tmp, "rollback-work")
        self.git("clone", "-q", "--bare", src, repo)
        self.git("--git-dir", repo, "update-ref", "refs/heads/main", commits[0])
        self.init(repo, site)
        dt, rc, out, _ = self.run_rss([self.bin, "deploy", "--repo", repo])
        if rc != 0:
            raise Failed("pushdeploy deploy exited %d:\n%s" % (rc, out[-3000:]))
        self.git("clone", "-q", repo, work)
        self.git("--git-dir", repo, "config", "deploy.healthCheck", "false")
        self.git("--git-dir", repo, "config", "deploy.healthCheckTimeout", "1")
        files = sorted(os.path.relpath(os.path.join(d, f), work)
                       for d, _, fs in os.walk(work) if ".git" not in d for f in fs)
        chosen = files[::len(files) // 100][:100]
        syncs, restores, recs = [], [], []
        for r in range(self.n_fast):
            for path in chosen:
                with open(os.path.join(work, path), "a") as f:
                    f.write("# rollback run %d\n" % r)
            self.git("commit", "-q", "-am", "100 files, run %d" % r, cwd=work)
            self.git("push", "-q", "origin", "HEAD:main", cwd=work, check=False)
            rec = self.latest_record(repo)
            if rec.get("status") != "rolled back":
                raise Failed("the push was not rolled back: %s" % rec.get("error"))
            with open(os.path.join(site, chosen[0])) as f:
                if "# rollback run" in f.read():
                    raise Failed("site/%s still has the rolled-back change" % chosen[0])
            st = self.steps(rec)
            syncs.append(st.get("sync"))
            restores.append(st.get("restore"))
            recs.append(rec)
            # the next run starts from the deployed commit again
            self.git("reset", "-q", "--hard", "HEAD~1", cwd=work)
            self.git("push", "-q", "-f", "origin", "HEAD:main", cwd=work, check=False)
        self.detail("rollback of 100 changed files in a 10,000-file site (median of %d): sync %s, "
                    "restore %s; steps: %s"
                    % (len(recs), fmt_time(median(syncs)), fmt_time(median(restores)),
                       self.step_summary(recs)))
        self.row("rollback", case, median(restores), median(syncs),
                 "restore <= 2x the sync", 2,
                 note="record's restore step vs its sync step (the health check's retries not counted)")
        self.rm(repo, site, work, src)

    def first_deploys(self, tag, env_pip, env_uv, runs=None):
        """First deployments of the 40-package app (a fresh repository and site
        each), alternately with pip and with installer=uv. Returns the push
        times and records by installer, and how often the output named uv."""
        times = {"pip": [], "uv": []}
        recs = {"pip": [], "uv": []}
        uv_ran = 0
        for r in range(runs or self.n_slow):
            for k, (which, env) in enumerate((("pip", env_pip), ("uv", env_uv))):
                if env is None:
                    continue
                repo = os.path.join(self.tmp, "first-%s%d-%d.git" % (tag, k, r))
                site = os.path.join(self.tmp, "first-%s%d-%d-site" % (tag, k, r))
                self.init(repo, site)
                dt, p = self.git("push", repo, "%s:refs/heads/main" % self.app_first,
                                 cwd=self.app_work, env=env)
                out = p.stdout.decode(errors="replace")
                rec = self.checked_record(repo, out)
                _, i = self.run([os.path.join(site, "env", "bin", "python"), "-c",
                                 "import benchpkg01, benchpkg40"], check=False)
                if i.returncode != 0:
                    raise Failed("%s: the packages are not importable after the deployment" % which)
                times[which].append(dt)
                recs[which].append(rec)
                # the output names the installer that ran (paths are left out:
                # they could contain "uv" by chance)
                if which == "uv" and re.search(r"\buv\b", out.replace(self.tmp, "")):
                    uv_ran += 1
                self.rm(repo, site)
        return times, recs, uv_ran

    # ---- lock files (issue 12) ------------------------------------------------------

    def lock_app(self, uv, name, requirements):
        """A work dir with the 40-package app: requirements.txt, or (uv set)
        pyproject.toml and a uv.lock made by uv from the same pins. Returns
        (work dir, first commit)."""
        work = os.path.join(self.tmp, name)
        os.makedirs(work)
        gen.write_app(work, requirements)
        self.git("init", "-q", "-b", "main", cwd=work)
        if uv:
            os.remove(os.path.join(work, "requirements.txt"))
            self.write_pyproject(work, requirements)
            self.run([uv, "lock", "--quiet"], cwd=work, env=dict(self.env, UV_PYTHON=self.python))
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", "benchmark app", cwd=work)
        return work, self.git("rev-parse", "HEAD", cwd=work)[1].stdout.decode().strip()

    @staticmethod
    def write_pyproject(work, requirements):
        with open(os.path.join(work, "pyproject.toml"), "w") as f:
            f.write('[project]\nname = "bench-app"\nversion = "0.1.0"\n'
                    'requires-python = ">=3.8"\ndependencies = [\n%s]\n'
                    % "".join('    "%s",\n' % r for r in requirements))

    def case_lock(self):
        uv = self.find_uv()
        if not uv:
            for key, case in (("lock-first", "first deployment, 40-package app from uv.lock"),
                              ("lock-noop", "no-op push, 40-package app from uv.lock"),
                              ("lock-change", "uv.lock change of one package")):
                self.rows.append([case, "-", "-", "-", "-", "SKIPPED", "skipped: uv not found"])
                self.results[key] = {"result": "SKIPPED"}
            return
        version = self.run([uv, "--version"])[1].stdout.decode().strip()
        env_lock = dict(self.env, PUSHDEPLOY_UV_PATH=uv)
        req_work, req_first = self.lock_app(None, "lock-req-work", self.requirements)
        lock_work, lock_first = self.lock_app(uv, "lock-uv-work", self.requirements)

        # first deployments, alternated: requirements.txt with pip, uv.lock with uv
        times = {"pip": [], "uv": []}
        recs = {"pip": [], "uv": []}
        for r in range(self.n_slow):
            for which, work, sha, env in (("pip", req_work, req_first, self.env),
                                          ("uv", lock_work, lock_first, env_lock)):
                repo = os.path.join(self.tmp, "lockfirst-%s-%d.git" % (which, r))
                site = repo[:-4] + "-site"
                self.init(repo, site)
                dt, p = self.git("push", repo, "%s:refs/heads/main" % sha, cwd=work, env=env)
                rec = self.checked_record(repo, p.stdout.decode(errors="replace"))
                _, i = self.run([os.path.join(site, "env", "bin", "python"), "-c",
                                 "import benchpkg01, benchpkg40"], check=False)
                if i.returncode != 0:
                    raise Failed("%s: the packages are not importable after the deployment" % which)
                if which == "uv" and "uv sync" not in self.steps(rec):
                    raise Failed("uv.lock app: no uv sync step in the record")
                times[which].append(dt)
                recs[which].append(rec)
                self.rm(repo, site)
        self.detail("first deployment of the 40-package app (median of %d): requirements.txt with "
                    "pip %s (steps: %s); uv.lock with %s %s (steps: %s)"
                    % (self.n_slow, fmt_time(median(times["pip"])), self.step_summary(recs["pip"]),
                       version, fmt_time(median(times["uv"])), self.step_summary(recs["uv"])))
        self.row("lock-first", "first deployment, 40-package app from uv.lock (uv installed)",
                 median(times["uv"]), median(times["pip"]), "<= 1/5 of requirements.txt with pip",
                 1 / 5, note="whole push; " + version)

        # a no-op push of the uv.lock app vs the same push into a repository without the hook
        repo, site = os.path.join(self.tmp, "locknoop.git"), os.path.join(self.tmp, "locknoop-site")
        self.init(repo, site)
        self.git("push", "-q", repo, "%s:refs/heads/main" % lock_first, cwd=lock_work, env=env_lock)
        self.checked_record(repo, "")
        plain = os.path.join(self.tmp, "locknoop-plain.git")
        self.git("init", "-q", "--bare", plain)
        self.git("push", "-q", plain, "%s:refs/heads/main" % lock_first, cwd=lock_work)
        n = 5 if self.args.quick else 15
        ours, base, recs, ran = [], [], [], 0
        for r in range(n):
            with open(os.path.join(lock_work, "app.py"), "a") as f:
                f.write("# edit %d\n" % r)
            self.git("commit", "-q", "-am", "edit %d" % r, cwd=lock_work)
            # alternated: which push goes first changes every run
            order = [("ours", repo), ("plain", plain)]
            if r % 2:
                order.reverse()
            for which, target in order:
                dt, p = self.git("push", target, "main", cwd=lock_work, env=env_lock)
                if which == "ours":
                    rec = self.checked_record(repo, p.stdout.decode(errors="replace"))
                    ran += "uv sync" in self.steps(rec)
                    recs.append(rec)
                    ours.append(dt)
                else:
                    base.append(dt)
        self.detail("no-op push of the uv.lock app (median of %d, alternated): whole push %s, the "
                    "same push into a bare repository without the hook %s; steps: %s; uv ran in "
                    "%d of %d" % (n, fmt_time(median(ours)), fmt_time(median(base)),
                                  self.step_summary(recs), ran, n))
        self.row("lock-noop", "no-op push (one .py file changed), 40-package app from uv.lock",
                 median(ours), median(base), "<= 1.5x a push without the hook, uv not run", 1.5,
                 status=None if ran == 0 else "MISS",
                 note="whole push, %d alternated runs; uv ran in %d" % (n, ran))
        self.rm(repo, site, plain)

        # one package changes (benchpkg40 1.0.0 <-> 2.0.0), alternately upgraded and downgraded
        gen.build_wheel(self.wheels, "benchpkg40", "2.0.0")
        repos = {}
        for which, work, sha, env in (("pip", req_work, req_first, self.env),
                                      ("uv", lock_work, lock_first, env_lock)):
            repo = os.path.join(self.tmp, "lockchange-%s.git" % which)
            self.init(repo, repo[:-4] + "-site")
            self.git("push", "-q", repo, "main", cwd=work, env=env)
            self.checked_record(repo, "")
            repos[which] = (repo, work, env)
        times = {"pip": [], "uv": []}
        recs = {"pip": [], "uv": []}
        for r in range(self.n_fast):
            pins = [q if not q.startswith("benchpkg40==") else
                    "benchpkg40==%s" % ("2.0.0" if r % 2 == 0 else "1.0.0")
                    for q in self.requirements]
            with open(os.path.join(req_work, "requirements.txt"), "w") as f:
                f.write("".join(q + "\n" for q in pins))
            self.write_pyproject(lock_work, pins)
            self.run([uv, "lock", "--quiet"], cwd=lock_work, env=dict(self.env, UV_PYTHON=self.python))
            for which in ("pip", "uv") if r % 2 == 0 else ("uv", "pip"):
                repo, work, env = repos[which]
                self.git("commit", "-q", "-am", "benchpkg40 %d" % r, cwd=work)
                dt, p = self.git("push", repo, "main", cwd=work, env=env)
                recs[which].append(self.checked_record(repo, p.stdout.decode(errors="replace")))
                times[which].append(dt)
        self.detail("one package changed (median of %d, alternated): requirements.txt with pip %s "
                    "(steps: %s); uv.lock %s (steps: %s)"
                    % (self.n_fast, fmt_time(median(times["pip"])), self.step_summary(recs["pip"]),
                       fmt_time(median(times["uv"])), self.step_summary(recs["uv"])))
        self.row("lock-change", "uv.lock change of one package (40-package app)",
                 median(times["uv"]), median(times["pip"]), "<= 1/3 of pip installing the same change",
                 1 / 3, note="whole push; benchpkg40 1.0.0 <-> 2.0.0")
        for repo, _, _ in repos.values():
            self.rm(repo, repo[:-4] + "-site")

    # ---- output -----------------------------------------------------------------

    def table(self):
        head = ["case", "ours", "baseline", "ratio (ours/baseline)", "target", "result", "notes"]
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
        for r in self.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        return "\n".join(lines)

    def main(self):
        cases = [("noop", self.case_noop, "no-op redeploy: push changing one .py file, 40 installed packages",
                  "<= 1/20 of `pip install -r` alone"),
                 ("big", self.case_big, "large repositories (10,000 and 100,000 files)", "-"),
                 ("env", self.case_env, "env creation", ">= 5x faster, pip working"),
                 ("uv", self.case_uv, "first deployment, 40-package app, installer = uv",
                  ">= 5x faster than with pip"),
                 ("lock", self.case_lock, "uv.lock: first deployment, no-op push, one package changed",
                  "see the rows"),
                 ("add", self.case_add, "a requirements change adding one package, 40-package app",
                  "<= 1.3x pip in place (uv <= 1/3)"),
                 ("rollback", self.case_rollback,
                  "rollback after a failed health check, 10,000 files, 100 changed",
                  "restore <= 2x the sync"),
                 ("served", self.case_served,
                  "push to new page served, code-only change, fixture Flask app", "<= 1.5 s"),
                 ("load", self.case_load, "requests failed during 20 deployments under load", "0"),
                 ("python-change", self.case_python_change,
                  "Python version change, push to new version serving", "<= deployment + 3 s"),
                 ("vcs", self.case_vcs, "no-op push, requirements.txt with a VCS line",
                  "<= 1.2x the same push without it"),
                 ("first", self.case_first, "first deployment, 10,000 and 100,000 files",
                  "<= 1.0x `git archive | tar -x`"),
                 ("envchange", self.case_envchange,
                  "one pin changed in an env of more than 10,000 files", "<= 1.2x the installer in place"),
                 ("oldenv", self.case_oldenv, "push after which an old env is removed",
                  "the wait does not grow with the old env")]
        only = set(self.args.only.split(",")) if self.args.only else None
        self.load0 = os.getloadavg()[0]
        try:
            self.setup()
            for key, fn, case, target in cases:
                if only and key not in only:
                    continue
                log("== case %s" % key)
                try:
                    fn()
                except Exception as e:  # one case's failure must not hide the others
                    self.error_row(key, case, target, e)
        finally:
            if self.args.keep:
                log("kept %s" % self.tmp)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
        print()
        print("pushdeploy benchmark, %s, %s, %d cores, %s, pushdeploy %s, python %s, %s runs, "
              "load average %.1f at the start, %.1f at the end"
              % (time.strftime("%Y-%m-%d"), platform.machine(), os.cpu_count(),
                 platform.platform(terse=True), rev or "?",
                 self.python, "quick" if self.args.quick else "full", self.load0,
                 os.getloadavg()[0]))
        mnt, typ = fs_of(self.tmp)
        print("work dir %s (%s on %s)" % (self.tmp, typ, mnt))
        print()
        print(self.table())
        print()
        print("Where the time went (medians; steps from the deployment records):")
        for d in self.details:
            print("- " + d)
        print()
        print("total benchmark time %s" % fmt_time(time.monotonic() - STARTED))
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d"), "rev": rev, "results": self.results,
                           "details": self.details}, f, indent=2)

    def case_vcs(self):
        """No-op pushes (one .py file changed) of the 40-package app whose
        requirements.txt also names fixtures/git-src/hellogit by a VCS URL
        (fetched from a local repository through `url.<dir>.insteadOf`; its
        build backend flit_core from fixtures/wheels), by branch and at a
        commit, alternated with the same pushes of the app without that line."""
        target = "<= 1.2x the same push without the VCS line"
        hello = os.path.join(self.tmp, "hellogit")
        shutil.copytree(os.path.join(ROOT, "fixtures", "git-src", "hellogit"), hello)
        self.git("init", "-q", "-b", "main", cwd=hello)
        self.git("add", "-A", cwd=hello)
        self.git("commit", "-q", "-m", "hellogit", cwd=hello)
        sha = self.git("rev-parse", "HEAD", cwd=hello)[1].stdout.decode().strip()
        flit = os.path.join(self.tmp, "vcs-wheels")
        os.makedirs(flit)
        for w in glob.glob(os.path.join(ROOT, "fixtures", "wheels", "flit_core-*.whl")):
            shutil.copy(w, flit)
        gitconfig = os.path.join(self.tmp, "gitconfig-vcs")
        with open(self.env["GIT_CONFIG_GLOBAL"]) as f:
            base = f.read()
        with open(gitconfig, "w") as f:
            f.write(base + '[url "%s"]\n\tinsteadOf = https://git.example.invalid/hellogit.git\n'
                    % hello)
        env = dict(self.env, GIT_CONFIG_GLOBAL=gitconfig,
                   PIP_FIND_LINKS="%s %s" % (self.wheels, flit))
        url = "hellogit @ git+https://git.example.invalid/hellogit.git"
        apps = {"plain": [], "branch": [url], "commit": [url + "@" + sha]}
        sites = {}
        for tag, extra in apps.items():
            work = os.path.join(self.tmp, "vcs-%s-work" % tag)
            os.makedirs(work)
            gen.write_app(work, self.requirements + extra)
            self.git("init", "-q", "-b", "main", cwd=work)
            self.git("add", "-A", cwd=work)
            self.git("commit", "-q", "-m", "app", cwd=work)
            repo = os.path.join(self.tmp, "vcs-%s.git" % tag)
            self.init(repo, os.path.join(self.tmp, "vcs-%s-site" % tag))
            _, p = self.git("push", "-q", repo, "main", cwd=work, env=env)
            self.checked_record(repo, p.stdout.decode(errors="replace"))
            sites[tag] = (work, repo, [], [])
        for r in range(self.n_noop):
            for tag, (work, repo, times, recs) in sites.items():
                with open(os.path.join(work, "app.py"), "a") as f:
                    f.write("# edit %d\n" % r)
                self.git("commit", "-q", "-am", "edit %d" % r, cwd=work)
                dt, p = self.git("push", "-q", repo, "main", cwd=work, env=env)
                recs.append(self.checked_record(repo, p.stdout.decode(errors="replace")))
                times.append(dt)
        for tag, (_, _, times, recs) in sites.items():
            self.detail("no-op push, %s (median of %d): %s; steps: %s"
                        % ({"plain": "without a VCS line", "branch": "VCS line by branch",
                            "commit": "VCS line at a commit"}[tag], len(times),
                           fmt_time(median(times)), self.step_summary(recs)))
        plain = median(sites["plain"][2])
        for tag, key, case in (("branch", "vcs", "no-op push, requirements.txt with a VCS line"),
                               ("commit", "vcs-commit", "the same, the VCS line at a commit")):
            recs = sites[tag][3]
            ran = sum("pip" in self.steps(rec) for rec in recs)
            closure = median([self.steps(rec).get("closure", 0.0) for rec in recs])
            self.row(key, case, median(sites[tag][2]), plain, target, 1.2,
                     note="whole push; pip ran in %d/%d; closure step %s"
                     % (ran, len(recs), fmt_time(closure)))
        for _, repo, _, _ in sites.values():
            self.rm(repo, repo[:-len(".git")] + "-site")

    def case_first(self):
        """First deployments (`pushdeploy deploy --repo`, fresh repository and
        site each) of 10,000 and 100,000 files, each run alternated with
        `git archive | tar -x` of the same commit into the same file system;
        peak RSS at 100,000 files."""
        for files, runs in ((10000, self.n_fast), (100000, max(1, self.n_slow))):
            tag = "%dk" % (files // 1000)
            src = os.path.join(self.tmp, "first%s.git" % tag)
            commits, _ = gen.big_repo(src, files, 0, self.env)
            ours, base, rss, recs = [], [], [], []
            for r in range(runs):
                repo = os.path.join(self.tmp, "first%s-%d.git" % (tag, r))
                site = os.path.join(self.tmp, "first%s-%d-site" % (tag, r))
                self.git("clone", "-q", "--bare", src, repo)
                self.init(repo, site)
                d = os.path.join(self.tmp, "first-archive-%s" % tag)
                os.makedirs(d)
                # alternated: on a disk, whichever writes first after the
                # clone (and the last run's deletions) is the slower one
                for side in (["ours", "tar"] if r % 2 == 0 else ["tar", "ours"]):
                    if side == "ours":
                        dt, rc, out, peak = self.run_rss([self.bin, "deploy", "--repo", repo])
                        if rc != 0:
                            raise Failed("pushdeploy deploy exited %d:\n%s" % (rc, out[-3000:]))
                        recs.append(self.checked_record(repo, out))
                        ours.append(dt)
                        rss.append(peak)
                    else:
                        bt, _ = self.run(["bash", "-c",
                                          'git --git-dir "$1" archive "$2" | tar -x -C "$3"',
                                          "-", repo, commits[0], d])
                        base.append(bt)
                self.rm(d, repo, site)
            self.detail("first deployment of %d files (median of %d, alternated with git archive "
                        "| tar -x): %s, tar %s, peak RSS %.1f MiB; steps: %s"
                        % (files, runs, fmt_time(median(ours)), fmt_time(median(base)),
                           max(rss) / MIB, self.step_summary(recs)))
            self.row("first" + tag, "first deployment, %s files, no Python" % format(files, ","),
                     median(ours), median(base), "<= 1.0x `git archive | tar -x`", 1.0,
                     note="whole `pushdeploy deploy --repo`; peak RSS %.1f MiB" % (max(rss) / MIB))
            if files == 100000:
                self.row("first-memory", "peak memory, 100,000-file first deployment", max(rss),
                         None, "<= 32 MiB", 32 * MIB, unit="bytes",
                         note="max RSS of `pushdeploy deploy`")
            self.rm(src)


    # ---- the app running (issue 16) ------------------------------------------------

    def running_repo(self, name, app, env, run=True):
        """A repository and site for `fixtures/apps/<app>`, the app run by
        pushdeploy (git config deploy.run) on a port of its own; returns
        (repo, site, work dir, port)."""
        repo, site = os.path.join(self.tmp, name + ".git"), os.path.join(self.tmp, name + "-site")
        work = os.path.join(self.tmp, name + "-work")
        self.init(repo, site)
        port = free_port()
        self.git("--git-dir", repo, "config", "deploy.run", "true" if run else "false")
        self.git("--git-dir", repo, "config", "deploy.port", str(port))
        if os.geteuid() == 0:
            # the app never runs as root unless the server says so
            self.git("--git-dir", repo, "config", "deploy.runAsRoot", "true")
        shutil.copytree(os.path.join(ROOT, "fixtures", "apps", app), work)
        self.git("init", "-q", "-b", "main", cwd=work)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", "first", cwd=work)
        _, p = self.git("push", repo, "main", cwd=work, env=env)
        self.checked_record(repo, p.stdout.decode(errors="replace"))
        return repo, site, work, port

    def fixture_env(self):
        """The benchmark's environment with the fixtures' wheels (the apps'
        packages and gunicorn) instead of the generated ones."""
        wheels = os.path.join(ROOT, "fixtures", "wheels")
        return dict(self.env, PIP_FIND_LINKS=wheels, UV_FIND_LINKS=wheels)

    def stop_app(self, repo):
        self.run([self.bin, "stop", "--repo", repo], check=False)

    def push_until_served(self, repo, work, port, want, env):
        """`git push`, then GET / until the page contains `want`: (seconds from
        the push to that page, the push's own seconds, its output)."""
        t0 = time.perf_counter()
        p = subprocess.run(["git", "push", repo, "main"], cwd=work, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pushed = time.perf_counter() - t0
        out = p.stdout.decode(errors="replace")
        deadline = time.perf_counter() + 60
        while True:
            status, body = http_get(port)
            if status is not None and status < 500 and want in body:
                return time.perf_counter() - t0, pushed, out
            if time.perf_counter() > deadline:
                raise Failed("%r not served 60 s after the push (last: %s %r):\n%s"
                             % (want, status, body[:200], out[-3000:]))
            time.sleep(0.01)

    @staticmethod
    def set_version(work, code):
        path = os.path.join(work, "app.py")
        with open(path) as f:
            text = re.sub(r'(?m)^VERSION = ".*"$', 'VERSION = "%d"' % code, f.read())
        with open(path, "w") as f:
            f.write(text)

    def absolute_row(self, key, case, ours, baseline, target, ok, note):
        """A row whose target is a number, not a ratio: the baseline (the same
        push without the app running, or the requests made) is shown beside it."""
        result = "PASS" if ok else "MISS"
        self.rows.append([case, ours, baseline, "-", target, result, note])
        self.results[key] = {"ours": ours, "baseline": baseline, "result": result, "note": note}

    def case_served(self):
        """A code-only change of the fixture Flask app: from `git push` to the
        new page served, the push into a repository whose app does not run
        (the deployment alone) as the baseline."""
        env = self.fixture_env()
        repo, site, work, port = self.running_repo("served", "flask-app", env)
        plain, plain_site, plain_work, _ = self.running_repo("served-plain", "flask-app", env,
                                                             run=False)
        ours, base, recs = [], [], []
        try:
            for r in range(self.n_fast):
                for w in (work, plain_work):
                    path = os.path.join(w, "app.py")
                    with open(path) as f:
                        text = re.sub(r"Hello from pushdeploy( \d+)?!",
                                      "Hello from pushdeploy %d!" % r, f.read())
                    with open(path, "w") as f:
                        f.write(text)
                    self.git("commit", "-q", "-am", "edit %d" % r, cwd=w)
                dt, _, out = self.push_until_served(repo, work, port,
                                                    "Hello from pushdeploy %d!" % r, env)
                recs.append(self.checked_record(repo, out))
                ours.append(dt)
                bt, p = self.git("push", plain, "main", cwd=plain_work, env=env)
                self.checked_record(plain, p.stdout.decode(errors="replace"))
                base.append(bt)
        finally:
            self.stop_app(repo)
        self.detail("code-only change of the Flask fixture (median of %d): push to new page %s, "
                    "the same push with the app not running %s; steps: %s"
                    % (len(ours), fmt_time(median(ours)), fmt_time(median(base)),
                       self.step_summary(recs)))
        ok = median(ours) is not None and median(ours) <= 1.5
        self.absolute_row("served", "push to new page served, code-only change, fixture Flask app",
                          fmt_time(median(ours)), fmt_time(median(base)), "<= 1.5 s", ok,
                          "whole push, then GET / until the new page; baseline: the same push, "
                          "app not running")
        self.rm(repo, site, work, plain, plain_site, plain_work)

    def case_load(self):
        """20 deployments (code changes, and a requirements change every fifth)
        while two clients request the app over fresh connections: requests
        refused, reset, timed out or answered 5xx."""
        env = self.fixture_env()
        repo, site, work, port = self.running_repo("load", "load-app", env)
        load = LoadClients(port, 2)
        pushes = 20
        stale = []
        try:
            for r in range(pushes):
                self.set_version(work, r + 2)
                if r % 5 == 4:
                    greeting = "2.0.0" if (r // 5) % 2 == 0 else "1.0.0"
                    with open(os.path.join(work, "requirements.txt"), "w") as f:
                        f.write("greeting==%s\ntinyweb==1.0.0\n" % greeting)
                self.git("commit", "-q", "-am", "v%d" % (r + 2), cwd=work)
                _, p = self.git("push", repo, "main", cwd=work, env=env)
                self.checked_record(repo, p.stdout.decode(errors="replace"))
                # the pusher's next request: the version just pushed
                status, body = http_get(port)
                if not body.startswith("version=%d " % (r + 2)):
                    stale.append("v%d: %s %r" % (r + 2, status, body[:60]))
        finally:
            total, failed = load.stop()
            self.stop_app(repo)
        kinds = ", ".join("%s %d" % kv for kv in sorted(failed.items())) or "none"
        n_failed = sum(failed.values())
        self.detail("20 deployments under load: %d requests, failed: %s; after %d of 20 pushes "
                    "the next request got another version%s"
                    % (total, kinds, len(stale), (": " + "; ".join(stale)) if stale else ""))
        self.absolute_row("load", "requests failed during 20 deployments under load", str(n_failed),
                          "%d requests" % total, "0", n_failed == 0 and not stale,
                          "2 clients, fresh connection each; failed: %s; pushes not served at "
                          "once: %d" % (kinds, len(stale)))
        self.rm(repo, site, work)

    def case_python_change(self):
        """A runtime.txt change (3.11 <-> 3.12), alternately: from `git push` to
        the page of the new interpreter, minus the same push into a repository
        whose app does not run (the deployment itself)."""
        env = self.fixture_env()
        repo, site, work, port = self.running_repo("pychange", "load-app", env)
        plain, plain_site, plain_work, _ = self.running_repo("pychange-plain", "load-app", env,
                                                             run=False)
        ours, base, extra = [], [], []
        try:
            for r in range(self.n_slow + 1):
                python = "3.12" if r % 2 == 0 else "3.11"
                for w in (work, plain_work):
                    with open(os.path.join(w, "runtime.txt"), "w") as f:
                        f.write("python-%s\n" % python)
                    self.git("commit", "-q", "-am", "python %s" % python, cwd=w)
                dt, _, out = self.push_until_served(repo, work, port, "python=%s" % python, env)
                self.checked_record(repo, out)
                bt, p = self.git("push", plain, "main", cwd=plain_work, env=env)
                self.checked_record(plain, p.stdout.decode(errors="replace"))
                if r == 0:
                    continue  # the first 3.12 env of each repository makes its seed
                ours.append(dt)
                base.append(bt)
                extra.append(dt - bt)
        finally:
            self.stop_app(repo)
        self.detail("Python version change (median of %d): push to new version serving %s, "
                    "the same push with the app not running %s, difference %s"
                    % (len(ours), fmt_time(median(ours)), fmt_time(median(base)),
                       fmt_time(median(extra))))
        more = median(extra)
        ok = more is not None and more <= 3
        self.absolute_row("python-change", "Python version change, push to new version serving",
                          fmt_time(median(ours)), fmt_time(median(base)), "<= deployment + 3 s",
                          ok, "%s more than the same push with the app not running (the baseline)"
                          % fmt_time(more))
        self.rm(repo, site, work, plain, plain_site, plain_work)

    def big_env_app(self, name):
        """Wheels for an app whose env holds more than 10,000 files (with pip's
        bytecode, about 20,000), built once: a few large packages and many small
        ones, as real apps have (botocore, pandas, django, ...), plus `benchpin`
        1.0.0 and 2.0.0, the one pin that changes. Returns (wheel dir,
        requirement lines without benchpin)."""
        wheels = os.path.join(self.tmp, "big-env-wheels")
        if not os.path.isdir(wheels):
            os.makedirs(wheels)
            sizes = [3000, 1500, 1500, 800, 800, 500, 500, 300, 300, 300] + [40] * 30
            for i, modules in enumerate(sizes):
                gen.build_wheel(wheels, "benchbig%02d" % i, "1.0.0", modules=modules)
            for version in ("1.0.0", "2.0.0"):
                gen.build_wheel(wheels, "benchpin", version, modules=20)
        lines = ["benchbig%02d==1.0.0" % i for i in range(40)]
        return wheels, lines

    def big_env_work(self, name, lines, pin):
        work = os.path.join(self.tmp, name)
        os.makedirs(work)
        gen.write_app(work, lines + ["benchpin==%s" % pin])
        self.git("init", "-q", "-b", "main", cwd=work)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", "a large env", cwd=work)
        return work

    def wait_for_lock(self, repo):
        """Until no deployment (nor the removal of old envs after one) holds the lock."""
        import fcntl
        with open(os.path.join(repo, "pushdeploy", "lock")) as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)

    def case_envchange(self):
        """One pin changes (benchpin 1.0.0 <-> 2.0.0) in an env of more than
        10,000 files: the whole push against the installer changing the same pin
        in place in an identical env, with pip and with uv."""
        wheels, lines = self.big_env_app("envchange")
        env = dict(self.env, PIP_FIND_LINKS=wheels, UV_FIND_LINKS=wheels)
        uv = self.find_uv()
        installers = [("pip", dict(env))]
        if uv:
            env_uv = dict(env, PUSHDEPLOY_INSTALLER="uv")
            env_uv["PATH"] = os.path.dirname(uv) + os.pathsep + env_uv.get("PATH", "")
            installers.append(("uv", env_uv))
        req = lambda pin: "".join(q + "\n" for q in lines + ["benchpin==%s" % pin])
        for which, ienv in installers:
            work = self.big_env_work("envchange-%s-work" % which, lines, "1.0.0")
            repo = os.path.join(self.tmp, "envchange-%s.git" % which)
            site = os.path.join(self.tmp, "envchange-%s-site" % which)
            self.init(repo, site)
            t0 = time.perf_counter()
            _, p = self.git("push", "-q", repo, "main", cwd=work, env=ienv)
            self.checked_record(repo, p.stdout.decode(errors="replace"))
            files = sum(len(fs) for _, _, fs in os.walk(os.path.join(site, "env")))
            log("envchange %s: first deployment %s, env of %d files"
                % (which, fmt_time(time.perf_counter() - t0), files))
            # the baseline: an identical env, changed in place by the installer alone
            base = os.path.join(self.tmp, "envchange-%s-baseline" % which)
            base_req = os.path.join(self.tmp, "envchange-%s-requirements.txt" % which)
            with open(base_req, "w") as f:
                f.write(req("1.0.0"))
            if which == "pip":
                self.run([self.python, "-m", "venv", base], env=env)
                install = [os.path.join(base, "bin", "pip"), "install", "--progress-bar", "off",
                           "-r", base_req]
            else:
                self.run([uv, "venv", "--quiet", "--python", self.python, base], env=env)
                install = [uv, "pip", "install", "-r", base_req, "--python",
                           os.path.join(base, "bin", "python")]
            self.run(install, env=env)
            base_files = sum(len(fs) for _, _, fs in os.walk(base))
            ours, base_t, recs = [], [], []
            for r in range(self.n_fast):
                pin = "2.0.0" if r % 2 == 0 else "1.0.0"
                with open(os.path.join(work, "requirements.txt"), "w") as f:
                    f.write(req(pin))
                with open(base_req, "w") as f:
                    f.write(req(pin))
                self.git("commit", "-q", "-am", "benchpin %s" % pin, cwd=work)
                # alternated: which goes first changes every run
                order = ["ours", "base"] if r % 2 == 0 else ["base", "ours"]
                for side in order:
                    if side == "ours":
                        self.wait_for_lock(repo)
                        dt, p = self.git("push", repo, "main", cwd=work, env=ienv)
                        recs.append(self.checked_record(repo, p.stdout.decode(errors="replace")))
                        ours.append(dt)
                    else:
                        bt, _ = self.run(install, env=env)
                        base_t.append(bt)
                _, i = self.run([os.path.join(site, "env", "bin", "python"), "-c",
                                 "import benchpin, sys; sys.exit(benchpin.__version__ != %r)" % pin],
                                check=False)
                if i.returncode != 0:
                    raise Failed("envchange %s: env/ does not have benchpin %s" % (which, pin))
            self.detail("one pin changed in an env of %d files (the baseline's: %d), %s (median of "
                        "%d, alternated): whole push %s, %s in place %s; steps: %s"
                        % (files, base_files, which, len(ours), fmt_time(median(ours)), which,
                           fmt_time(median(base_t)), self.step_summary(recs)))
            self.row("envchange-%s" % which,
                     "one pin changed, env of %d files, installer = %s" % (files, which),
                     median(ours), median(base_t), "<= 1.2x `%s install -r` in place"
                     % ("pip" if which == "pip" else "uv pip"), 1.2,
                     note="whole push vs the installer alone on an identical env")
            self.wait_for_lock(repo)
            self.rm(repo, site, work, base)

    def case_oldenv(self):
        """A push whose success makes an env old (the one of two deployments
        ago), small or large (20,000 more files), alternated: the push's time
        must not grow with the size of the env removed after it."""
        work = os.path.join(self.tmp, "oldenv-work")
        os.makedirs(work)
        gen.write_app(work, ["benchpkg40==1.0.0"])
        self.git("init", "-q", "-b", "main", cwd=work)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-q", "-m", "one-package app", cwd=work)
        repo, site = os.path.join(self.tmp, "oldenv.git"), os.path.join(self.tmp, "oldenv-site")
        self.init(repo, site)
        self.git("push", "-q", repo, "main", cwd=work)
        self.checked_record(repo, "")
        times = {"small": [], "large": []}
        recs = []
        for r in range(2 * self.n_fast + 1):
            # each push changes the requirements, so that its env is new
            with open(os.path.join(work, "requirements.txt"), "w") as f:
                f.write("benchpkg40==1.0.0\n" + ("benchpkg39==1.0.0\n" if r % 2 == 0 else ""))
            self.git("commit", "-q", "-am", "requirements %d" % r, cwd=work)
            self.wait_for_lock(repo)
            size = "large" if r % 4 in (1, 2) else "small"
            previous = os.path.join(repo, "pushdeploy", "env-previous")
            if r > 0 and size == "large" and os.path.exists(previous):
                with open(previous) as f:
                    old = os.path.join(site, f.read().split()[0])
                for d in range(200):
                    sub = os.path.join(old, "lib", "bulk%03d" % d)
                    os.makedirs(sub)
                    for i in range(100):
                        with open(os.path.join(sub, "f%03d.py" % i), "w") as f:
                            f.write("x = %d\n" % i)
            dt, p = self.git("push", repo, "main", cwd=work)
            rec = self.checked_record(repo, p.stdout.decode(errors="replace"))
            if r > 0:
                times[size].append(dt)
                recs.append(rec)
        self.wait_for_lock(repo)
        self.detail("push that makes an env old (median of %d each): with a small old env %s, "
                    "with one of 20,000 more files %s; steps: %s"
                    % (len(times["large"]), fmt_time(median(times["small"])),
                       fmt_time(median(times["large"])), self.step_summary(recs)))
        self.row("oldenv", "push after which an old env of 20,000 more files is removed",
                 median(times["large"]), median(times["small"]),
                 "the wait does not grow with the old env (<= 1.2x a small one)", 1.2,
                 note="whole push; the removal runs after the last line, under the lock")
        self.rm(repo, site, work)


# ---- requests to the running app (issue 16) ------------------------------------------


def free_port():
    """A port nothing listens on now (the kernel's choice, then released)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port, timeout=60):
    """GET / over a new connection: (status, body), or (None, what went wrong)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except ConnectionRefusedError:
        return None, "refused"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
            http.client.IncompleteRead, http.client.BadStatusLine):
        return None, "reset"
    except TimeoutError:
        return None, "timed out"
    except OSError as e:
        return None, "error %s" % e
    finally:
        conn.close()


class LoadClients:
    """Threads that GET / without a pause, each over a fresh connection,
    counting the requests and the failed ones by kind."""

    def __init__(self, port, clients):
        import threading
        self.port = port
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.total = 0
        self.failed = {}
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def client(self):
        while not self.stopping.is_set():
            status, what = http_get(self.port)
            kind = what if status is None else ("5xx" if status >= 500 else None)
            with self.lock:
                self.total += 1
                if kind:
                    self.failed[kind] = self.failed.get(kind, 0) + 1
            # a few hundred requests a second: every moment of a reload is met
            # without taking the cores from the deployments measured
            time.sleep(0.01)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join()
        return self.total, dict(self.failed)


    # ---- issue 17: a dependency change in a large env, old envs removed ---------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "pushdeploy"),
                    help="the pushdeploy binary to measure (default: target/release/pushdeploy)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer runs per case (no-op 3, others 2, slow ones 1; full: 9, 5, 3)")
    ap.add_argument("--only", help="comma-separated cases to run: noop,big,env,uv,lock,add,rollback,"
                    "served,load,python-change,vcs,first,envchange,oldenv")
    ap.add_argument("--python", default=DEFAULT_PYTHON,
                    help="the interpreter for baselines and deployments (default: %(default)s)")
    ap.add_argument("--uv", help="the uv binary (default: `which uv`, else pip install uv into a temp dir)")
    ap.add_argument("--no-uv-install", action="store_true", help="skip the uv row when uv is not installed")
    ap.add_argument("--dir", help="where to make the temp dir (default: /dev/shm when it is a "
                    "tmpfs with 4 GiB free, else the system's temp dir; see default_dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit("no pushdeploy binary at %s: run `cargo build --release` or `bash benches/run`"
                 % args.bin)
    if not os.access(args.python, os.X_OK):
        sys.exit("no interpreter at %s (the app's runtime.txt says python-3.11): give --python"
                 % args.python)
    Bench(args).main()


if __name__ == "__main__":
    main()
