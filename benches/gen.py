"""Generated inputs for the benchmark: wheels, apps and large repositories.

Python 3 standard library only. Nothing here touches the network.

- wheels: 40 tiny pure-Python wheels (benchpkg01 .. benchpkg40), built the
  way fixtures/build-wheels builds the test fixtures (stored zip, METADATA,
  WHEEL, RECORD with sha256 hashes). benchpkg01..20 each depend on
  benchpkg21..40 (Requires-Dist), so pip has a small graph to resolve.
- the app: a Flask-style app whose requirements.txt pins all 40 packages (as
  `pip freeze` would) and whose runtime.txt says python-3.11.
- big repositories: N files (no requirements.txt, so no Python steps) written
  by one `git fast-import` stream, followed by commits that each change one file.
"""

import base64
import hashlib
import os
import random
import subprocess
import zipfile

PACKAGES = 40
DATE = (1980, 1, 1, 0, 0, 0)
TAG = "py3-none-any"


def package_names():
    return ["benchpkg%02d" % i for i in range(1, PACKAGES + 1)]


def _record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _add(zf, path, data):
    zi = zipfile.ZipInfo(path, date_time=DATE)
    zi.compress_type = zipfile.ZIP_STORED
    zi.create_system = 3
    zi.external_attr = 0o100644 << 16
    zf.writestr(zi, data)


def build_wheel(out_dir, name, version, requires=(), modules=8):
    """One pure-Python wheel with a package of `modules` small modules."""
    dist_info = "%s-%s.dist-info" % (name, version)
    entries = []
    entries.append(("%s/__init__.py" % name,
                    ('"""%s %s: a generated benchmark package."""\n__version__ = "%s"\n'
                     % (name, version, version)).encode()))
    for m in range(modules):
        body = "".join("def f%d_%d(x):\n    return x * %d + %d\n\n" % (m, k, k, m)
                       for k in range(30))
        entries.append(("%s/mod%02d.py" % (name, m), body.encode()))
    meta = ["Metadata-Version: 2.1", "Name: " + name, "Version: " + version,
            "Summary: generated package for the pushdeploy benchmark"]
    meta += ["Requires-Dist: " + r for r in requires]
    entries.append((dist_info + "/METADATA", ("\n".join(meta) + "\n").encode()))
    entries.append((dist_info + "/WHEEL", (
        "Wheel-Version: 1.0\nGenerator: pushdeploy-benches (1.0)\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()))
    record = "".join("%s,%s,%d\n" % (p, _record_hash(d), len(d)) for p, d in entries)
    record += dist_info + "/RECORD,,\n"
    entries.append((dist_info + "/RECORD", record.encode()))
    path = os.path.join(out_dir, "%s-%s-%s.whl" % (name, version, TAG))
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in entries:
            _add(zf, p, d)
    return path


def build_wheels(out_dir):
    """The 40 wheels; returns the requirement lines (all 40 pinned)."""
    os.makedirs(out_dir, exist_ok=True)
    names = package_names()
    half = PACKAGES // 2
    for i, name in enumerate(names):
        requires = ["%s>=1.0" % names[i + half]] if i < half else []
        build_wheel(out_dir, name, "1.0.0", requires)
    return ["%s==1.0.0" % n for n in names]


APP_PY = '''"""A small WSGI app, deployed by the pushdeploy benchmark."""
import benchpkg01


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from the benchmark app"]
'''


def write_app(work, requirements):
    """A Flask-style app in `work` (a plain directory), with a few extra files."""
    os.makedirs(os.path.join(work, "static"), exist_ok=True)
    os.makedirs(os.path.join(work, "templates"), exist_ok=True)
    files = {
        "app.py": APP_PY,
        "requirements.txt": "".join(r + "\n" for r in requirements),
        "runtime.txt": "python-3.11\n",
        "README.md": "# benchmark app\n",
        "static/style.css": "body { font-family: sans-serif; }\n",
        "templates/index.html": "<h1>hello</h1>\n",
    }
    for i in range(20):
        files["views_%02d.py" % i] = "def view_%d():\n    return %d\n" % (i, i)
    for rel, text in files.items():
        with open(os.path.join(work, rel), "w") as f:
            f.write(text)


def file_path(i):
    """Path of file i: 50 files per directory, 20 directories per top directory."""
    leaf = i // 50
    top = leaf // 20
    ext = ".py" if i % 3 == 0 else (".html" if i % 3 == 1 else ".txt")
    return "src/part%03d/dir%04d/file%06d%s" % (top, leaf, i, ext)


_POOL = None


def file_content(rng, i):
    """About 1 KiB on average (100 B to 2 KiB), unique to the file."""
    global _POOL
    if _POOL is None:
        pool_rng = random.Random(0)
        _POOL = ["value_%d = %d  # %s\n" % (pool_rng.randint(0, 10 ** 6), pool_rng.randint(0, 10 ** 9),
                                            "x" * pool_rng.randint(0, 20)) for _ in range(4096)]
    start = rng.randrange(0, len(_POOL) - 40)
    return ("# %s (generated)\n" % file_path(i) + "".join(_POOL[start:start + rng.randint(2, 40)])).encode()


def _data(out, payload):
    out.append(b"data %d\n" % len(payload))
    out.append(payload)
    out.append(b"\n")


def big_repo(git_dir, files, changes, env):
    """A bare repository `git_dir` whose main has, in order: one commit with
    `files` files, then `changes` commits each changing one file (a different
    one each time). Returns the commit ids in that order and, for each change
    commit, (path, new content)."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", git_dir],
                   check=True, env=env)
    rng = random.Random(files)
    stamp = b"Bench <bench@example.invalid> 1700000000 +0000"
    out = []
    out.append(b"commit refs/heads/main\nmark :1\n")
    out.append(b"author " + stamp + b"\ncommitter " + stamp + b"\n")
    _data(out, b"%d generated files\n" % files)
    out.append(b"M 100644 inline README.md\n")
    _data(out, b"# generated repository, %d files\n" % files)
    for i in range(files - 1):
        mode = b"100755" if i % 97 == 0 else b"100644"
        out.append(b"M " + mode + b" inline " + file_path(i).encode() + b"\n")
        _data(out, file_content(rng, i))
    changed = []
    for c in range(changes):
        i = (c * 7919 + 13) % (files - 1)
        path = file_path(i)
        content = file_content(rng, i) + b"# change %d\n" % (c + 1)
        mode = b"100755" if i % 97 == 0 else b"100644"
        out.append(b"commit refs/heads/main\nmark :%d\n" % (c + 2))
        out.append(b"author " + stamp + b"\ncommitter " + stamp + b"\n")
        _data(out, b"change %s\n" % path.encode())
        out.append(b"from :%d\n" % (c + 1))
        out.append(b"M " + mode + b" inline " + path.encode() + b"\n")
        _data(out, content)
        changed.append((path, content))
    out.append(b"done\n")
    marks = git_dir + ".marks"
    subprocess.run(["git", "--git-dir", git_dir, "-c", "pack.compression=1", "fast-import", "--quiet", "--done",
                    "--export-marks=" + marks],
                   input=b"".join(out), check=True, env=env)
    ids = {}
    with open(marks) as f:
        for line in f:
            mark, sha = line.split()
            ids[int(mark[1:])] = sha
    os.remove(marks)
    commits = [ids[m] for m in range(1, changes + 2)]
    return commits, changed
