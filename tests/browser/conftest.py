"""Real-browser tier: one throwaway JupyterLab server per session, Debian's headless Chromium.

Fixtures
--------
chromium_path   path of the Chromium binary; skips without it, fails instead when ``CI`` is set
jupyter_lab     (base_url, root_dir) of a JupyterLab on 127.0.0.1 with a token and isolated config
browser         a Playwright Chromium browser (session)
lab_session     factory: ``lab_session(name)`` opens a page wrapped in :class:`LabPage`, closed at the
                end of the requesting scope; its console errors are collected and a screenshot is
                saved under ``test-artifacts/screenshots/`` when a test using it fails.

:class:`LabPage` has the helpers: write a notebook, open it, run its cells like a person (click the
prompt, Escape, Shift+Enter), read kernel values back by running a cell that prints them, and
take screenshots.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO / "tests"
ARTIFACTS = Path(os.environ.get("NSI_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
TOKEN = "nsi-browser-test-token"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
# console messages that JupyterLab itself may log in an offline sandbox; anything else fails
BENIGN_CONSOLE = (
    re.compile(r"Failed to load resource: the server responded with a status of 404"),
    re.compile(r"net::ERR_(INTERNET_DISCONNECTED|NAME_NOT_RESOLVED|CONNECTION_REFUSED)"),
)

if str(TESTS_DIR) not in sys.path:  # for _fake_index in this process
    sys.path.insert(0, str(TESTS_DIR))

_OPEN_PAGES: list["LabPage"] = []


def _unavailable(reason: str):
    """Skip with the reason, except on CI where the browser tier must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; the environment variable CI is set, so the browser tests must run")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(path):
        _unavailable(f"no Chromium at {path} (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright)")
    if not (REPO / "nsi_widgets" / "static" / "index.js").is_file():
        pytest.fail("nsi_widgets/static/index.js is missing: run `cd js && npm install && npm run build`")
    return path


@contextmanager
def lab_server(tmp: Path):
    """Start JupyterLab on 127.0.0.1 with its own config/runtime/settings dirs under ``tmp``;
    yield ``(base_url, root_dir)``; stop it (and its kernels) at the end. Also used by
    benchmarks/bench_widgets.py."""
    root = tmp / "root"
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
        env[var] = str(tmp / var.lower())
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    # kernels import the working tree's nsi_widgets (and the tests' helpers) even when not installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(TESTS_DIR), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    notif = tmp / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    theme = os.environ.get("NSI_LAB_THEME")  # e.g. "JupyterLab Dark", to look at the dark theme
    if theme:
        (notif / "themes.jupyterlab-settings").write_text(json.dumps({"theme": theme}))
    port = _free_port()
    log_path = tmp / "jupyter.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--allow-root", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.close()
            raise RuntimeError("jupyter lab did not start:\n" + log_path.read_text())
        time.sleep(0.25)
    try:
        yield base, root
    finally:
        proc.terminate()  # the server shuts its kernels down
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory, chromium_path):
    """A JupyterLab for the whole session: (base_url, root_dir)."""
    with lab_server(tmp_path_factory.mktemp("jlab")) as server:
        yield server


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class LabPage:
    """A Chromium page with helpers to drive JupyterLab like a person."""

    KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        return !!k && k.status === 'idle'; }"""

    def __init__(self, browser, base: str, root: Path, name: str, viewport=(1400, 1300)):
        self.base, self.root, self.name = base, root, name
        self.token = TOKEN
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.set_default_timeout(60_000)
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(f"pageerror: {e}"))
        self.page.on("dialog", self._on_dialog)
        self._printed: dict[int, int] = {}
        self.t0 = time.perf_counter()

    def _on_dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def lap(self, what: str) -> None:
        print(f"  [{time.perf_counter() - self.t0:6.2f}s] {what}")

    # notebooks -------------------------------------------------------------------------------------
    def write_notebook(self, filename: str, cells: list[str]) -> Path:
        """Write a notebook (with kernelspec metadata, so no kernel dialog) into the server root."""
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        path = self.root / filename
        nbformat.write(nb, path)
        return path

    def open_notebook(self, filename: str) -> None:
        self.page.goto(f"{self.base}/lab/tree/{filename}?token={TOKEN}&reset")
        self.page.locator(".jp-NotebookPanel:visible .jp-Cell").first.wait_for()
        self.wait_kernel_idle(timeout=90_000)

    def wait_kernel_idle(self, timeout: float = 120_000) -> None:
        self.page.wait_for_function(self.KERNEL_IDLE, timeout=timeout)

    def cell(self, index: int):
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)

    def run_cell(self, index: int, last: bool = False):
        """Select cell ``index`` in command mode (click its prompt, Escape) and run it.

        ``last=True`` uses Ctrl+Enter, which does not add a new cell after the last one.
        """
        cell = self.cell(index)
        cell.locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+Enter" if last else "Shift+Enter")
        return cell

    def read_printed(self, index: int, marker: str, last: bool = True):
        """Run cell ``index``, which prints ``<marker>#<n> <json>``; return the JSON of run ``n``."""
        count = self._printed.get(index, 0) + 1
        self._printed[index] = count
        cell = self.run_cell(index, last=last)
        tag = f"{marker}#{count} "
        output = cell.locator(".jp-OutputArea-output").filter(has_text=tag)
        output.wait_for()
        text = output.inner_text()
        return json.loads(text.split(tag, 1)[1].strip().splitlines()[0])

    # evidence --------------------------------------------------------------------------------------
    def screenshot(self, name: str, locator=None) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        (locator or self.page).screenshot(path=str(path))
        print(f"  screenshot: {path}")
        return path

    def unexpected_console_errors(self) -> list[str]:
        return [e for e in self.console_errors if not any(p.search(e) for p in BENIGN_CONSOLE)]

    def close(self) -> None:
        self.page.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _OPEN_PAGES:
        for lab in list(_OPEN_PAGES):
            try:
                safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)
                path = lab.screenshot(f"failure-{safe}-{lab.name}")
                report.sections.append(("browser", f"screenshot of the failing page: {path}\n"
                                                   f"console errors: {lab.console_errors}\n"
                                                   f"dialogs: {lab.dialogs}"))
            except Exception as exc:  # the page may be gone; the report must still be written
                report.sections.append(("browser", f"no screenshot: {exc}"))


@pytest.fixture(scope="module")
def lab_session(browser, jupyter_lab):
    """Factory of :class:`LabPage` objects that live as long as the requesting module."""
    base, root = jupyter_lab
    pages: list[LabPage] = []

    def open_page(name: str, **kwargs) -> LabPage:
        lab = LabPage(browser, base, root, name, **kwargs)
        pages.append(lab)
        _OPEN_PAGES.append(lab)
        return lab

    yield open_page
    for lab in pages:
        _OPEN_PAGES.remove(lab)
        lab.close()
