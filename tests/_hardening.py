"""Helpers of the hardening tests: snapshots of folders, and cases run as an unprivileged user.

:func:`snapshot` records every file of a folder (content hash and permission bits), so that a test
can check that a failed operation wrote, added and changed nothing; :func:`raises_clearly` checks one
case: the error's type and phrases of its message, and the folder unchanged.

The tests run as root here, and root reads and writes any file whatever its mode, so a case about a
read-only file or folder run as root proves nothing. :func:`run_unprivileged` executes a snippet of
Python that defines ``action()`` in a fresh interpreter: as the user ``nobody`` (or one made with
``useradd``) through ``setpriv``/``runuser`` when we are root, as ourselves otherwise. It returns
``{"ok": action()}`` or ``{"error": type name, "types": [names of its classes], "message": str}``;
:func:`start_unprivileged` starts one to talk to through its stdin and stdout.

``light=True`` imports ``nsi_widgets.annotations`` without ``nsi_widgets/__init__.py`` (which imports
torch), so such a child starts in a fraction of a second. Files the child must reach go in
:func:`shared_folder` (``tmp_path`` is private to root).
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from nsi_widgets.core.errors import NsiError

REPO = Path(__file__).resolve().parents[1]
_FALLBACK_USER = "nsi-hardening"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (hidden ones too) with its SHA-256 and permission bits."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o7777)
            for p in sorted(folder.rglob("*")) if p.is_file()}

_RUNNER = r'''
import json, os, sys, types
repo, light, code = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
sys.path.insert(0, repo)
if light:  # a stand-in top package: its subpackages are found, its __init__ (torch) is not run
    top = types.ModuleType("nsi_widgets")
    top.__path__ = [os.path.join(repo, "nsi_widgets")]
    sys.modules["nsi_widgets"] = top
namespace = {}
exec(code, namespace)
try:
    result = {"ok": namespace["action"]()}
except Exception as exc:
    result = {"error": type(exc).__name__, "types": [c.__name__ for c in type(exc).__mro__],
              "message": str(exc)}
print("RESULT " + json.dumps(result), flush=True)
'''


def raises_clearly(action, folder: Path, error: type, phrases, *, one_line: bool = True) -> BaseException:
    """Run ``action``: it must raise ``error`` (an NsiError) with every phrase in its message, and leave
    every file under ``folder`` as it was (none added, none changed). Returns the error."""
    before = snapshot(folder)
    with pytest.raises(error) as info:
        action()
    message = str(info.value)
    assert isinstance(info.value, NsiError), f"{type(info.value).__mro__} is not an NsiError"
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    if one_line:
        assert "\n" not in message, message
    assert "Traceback" not in message
    assert snapshot(folder) == before  # nothing written, nothing added, nothing changed
    return info.value


def _user() -> str | None:
    """A user without root's override: nobody, else one we create; None if neither works."""
    for name in ("nobody", _FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    useradd = shutil.which("useradd")
    if useradd and subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                                   _FALLBACK_USER], capture_output=True).returncode == 0:
        return _FALLBACK_USER
    return None


def _prefix() -> list[str]:
    """The command prefix that drops root (empty when we are not root); skips with the reason if impossible."""
    if os.geteuid() != 0:
        return []
    user = _user()
    if user is None:
        pytest.skip("running as root and no unprivileged user exists or can be made (useradd failed): "
                    "read-only cases cannot be tested, as root ignores file permissions")
    entry = pwd.getpwnam(user)
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--"]
    pytest.skip("running as root without setpriv or runuser: cannot drop root to test read-only cases")


def _command(code: str, light: bool) -> list[str]:
    return [*_prefix(), sys.executable, "-c", _RUNNER, str(REPO), "1" if light else "0", code]


def _result(stdout: str, stderr: str, returncode: int) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        if "Permission denied" in stderr and "python" in stderr.lower():
            pytest.skip(f"the unprivileged user cannot run this Python interpreter: {stderr.strip()}")
        raise AssertionError(f"the unprivileged child failed (exit {returncode}):\n{stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def run_unprivileged(code: str, *, light: bool = True, timeout: float = 120) -> dict:
    """Run ``code`` (defining ``action()``) as an unprivileged user; return its result or error."""
    proc = subprocess.run(_command(code, light), capture_output=True, text=True, timeout=timeout, cwd="/",
                          stdin=subprocess.DEVNULL)
    return _result(proc.stdout, proc.stderr, proc.returncode)


def start_unprivileged(code: str, *, light: bool = True) -> subprocess.Popen:
    """Start ``code`` as :func:`run_unprivileged` does, with pipes to talk to it; end with :func:`finish`."""
    return subprocess.Popen(_command(code, light), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd="/")


def finish(child: subprocess.Popen, timeout: float = 60) -> dict:
    out, err = child.communicate(timeout=timeout)
    return _result(out, err, child.returncode)


@contextmanager
def shared_folder():
    """A folder outside ``tmp_path`` that the unprivileged user can enter; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="nsi-hardening-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(base)
