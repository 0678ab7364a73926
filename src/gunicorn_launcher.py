# pushdeploy's gunicorn launcher (written into <stateDir>/run/ and run with the
# env's python): `python gunicorn_launcher.py <stateDir>/run/<type>.json`.
#
# The arguments and the environment come from that file, written by each
# deployment, so that a new master started by USR2 (which re-executes this
# file) runs the command, the settings and the interpreter of the deployment
# that sent the signal. A pinned gunicorn is APPENDED to sys.path: a gunicorn
# (and every package) of the env wins. Markers beside the file tell pushdeploy
# that a master started (<type>.start.<pid>), that one of its workers imported
# the app (<type>.ready.<pid>), and how it exited (<type>.exit.<pid>).
import atexit
import json
import os
import sys

spec_path = os.path.abspath(sys.argv[1])
with open(spec_path) as f:
    spec = json.load(f)
# The spec's environment, and what gunicorn passes to a new master (its
# parent's pid and listening sockets) or systemd's socket activation.
kept = {
    k: v
    for k, v in os.environ.items()
    if k.startswith("GUNICORN_") or k.startswith("LISTEN_")
}
os.environ.clear()
os.environ.update(spec["env"])
os.environ.update(kept)
del sys.path[0]  # this file's folder, the state dir, is not the app's
if spec.get("path"):
    sys.path.append(spec["path"])
markers = spec["markers"]


# Words after the spec's path are gunicorn's too: `--check-config` is how a
# deployment asks whether the new version imports, and marks nothing.
extra = sys.argv[2:]


def mark(kind, pid, text=""):
    if extra:
        return
    try:
        with open("%s.%s.%d" % (markers, kind, pid), "w") as f:
            f.write(text)
    except OSError:
        pass


me = os.getpid()
mark("start", me)
exit_code = [0]


@atexit.register
def _exited():
    # Workers are forks of the master: only the master's own exit counts.
    if os.getpid() == me:
        mark("exit", me, str(exit_code[0]))


from gunicorn.arbiter import Arbiter  # noqa: E402
from gunicorn.workers import base  # noqa: E402

_init = Arbiter.__init__


def _arbiter_init(self, app):
    _init(self, app)
    # USR2 re-executes this file with the spec, not gunicorn with old words.
    self.START_CTX["args"] = [sys.executable, os.path.abspath(__file__), spec_path]


Arbiter.__init__ = _arbiter_init
_load = base.Worker.load_wsgi


def _load_wsgi(self):
    _load(self)
    mark("ready", os.getppid())


base.Worker.load_wsgi = _load_wsgi

from gunicorn import config as gunicorn_config  # noqa: E402
from gunicorn.app.wsgiapp import run  # noqa: E402

args = list(spec["args"])
# gunicorn 24 and later open a control socket, by default one per user
# ($HOME/.gunicorn/gunicorn.ctl) that every app of the user would share: each
# app gets its own beside its pid file (none where the path is too long).
known = {s.name for s in gunicorn_config.KNOWN_SETTINGS}
if "control_socket" in known and not any(
    a.startswith("--control-socket") or a == "--no-control-socket" for a in args
):
    socket = markers + ".ctl"
    if len(socket) < 100:
        args += ["--control-socket", socket]
    else:
        args += ["--no-control-socket"]
sys.argv = ["gunicorn"] + args + extra
try:
    run()
except SystemExit as e:
    exit_code[0] = e.code if isinstance(e.code, int) else 1
    raise
