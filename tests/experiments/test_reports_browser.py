"""Every experiment's report.html, as headless Chromium shows it.

A smoke run of each experiment (a few steps on a data subset) is rendered, then opened in
Debian's ``chromium`` through the DevTools protocol: every figure must load (naturalWidth > 0),
the console must stay free of errors, and the headline numbers of ``metrics.json`` must be on
the page. Screenshots go to ``$BNLAB_SCREENSHOTS`` when set (to look at them), else to the
test's temporary directory. Skipped, with the reason, where chromium is not installed (CI
installs it: ``.ci/run``).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (apt-get install -y chromium; .ci/run does it)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1100,900",
]
MNIST = {"train_subset": 600, "test_subset": 300, "hidden": [16, 16], "progress": False}


# -- smoke runs ----------------------------------------------------------------------------------


def _cifar_batches(root: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """A tiny CIFAR-10 in the official python layout (random pixels)."""
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, [n_train // 5] * 5 + [n_test], strict=True):
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=n).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


def make_smoke_runs(root: Path) -> dict[str, Path]:
    """One run directory per experiment (and the sweep and one-seed forms of mnist-sigmoid)."""
    from bnlab.experiments import get

    runs: dict[str, Path] = {}
    sig = get("mnist-sigmoid")
    tiny = {**MNIST, "steps": 12, "eval_every": 4, "lrs": [0.5, 3.0]}
    runs["mnist-sigmoid"] = sig.run({**tiny, "seeds": 2}, root / "mnist-sigmoid")
    runs["mnist-sigmoid-1seed"] = sig.run(
        {**tiny, "save_checkpoints": True}, root / "mnist-sigmoid-1seed"
    )
    runs["mnist-sigmoid-sweep"] = sig.run(
        {**MNIST, "sweep": True, "sweep_steps": 8, "sweep_lrs": [0.1, 1.0]}, root / "sweep"
    )
    runs["mnist-lr"] = get("mnist-lr").run(
        {**MNIST, "steps": 8, "eval_every": 4, "multipliers": [1.0, 5.0]}, root / "mnist-lr"
    )
    runs["renorm-small-batch"] = get("renorm-small-batch").run(
        {**MNIST, "test_subset": 256, "steps": 6, "eval_every": 3, "micro_sizes": [4]},
        root / "renorm",
    )
    pop = {**MNIST, "steps": 20, "eval_every": 10, "recal_examples": 300, "momenta": [0.01, 0.5]}
    runs["population-stats"] = get("population-stats").run(pop, root / "population-stats")
    ckpts = str(runs["mnist-sigmoid-1seed"] / "checkpoints" / "bn-*.npz")
    runs["population-stats-epochs"] = get("population-stats-epochs").run(
        {"checkpoints": ckpts, "recal_examples": 300, "progress": False},
        root / "population-stats-epochs",
    )
    data = _cifar_batches(root / "cifar")
    runs["cifar10-keras"] = get("cifar10-keras").run(
        {"data": str(data), "epochs": 1, "progress": False}, root / "cifar10-keras"
    )
    return runs


# -- the browser ---------------------------------------------------------------------------------


class Page:
    """One Chromium tab driven over the DevTools protocol (websocket-client)."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id, self.events = 0, []  # type: ignore[var-annotated]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > end:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def open(self, url: str) -> None:
        self.call("Emulation.clearDeviceMetricsOverride")
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads since the last open()."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console: {p.get('args')}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails')}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path) -> None:
        height = self.js("document.documentElement.scrollHeight")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=1100,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        png = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(png["data"]))


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    pytest.importorskip("websocket", reason="websocket-client (the test extra) not installed")
    profile = Path(tempfile.mkdtemp(prefix="bnlab-chromium-"))
    proc = subprocess.Popen(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        tab = next(t for t in targets if t["type"] == "page")
        p = Page(tab["webSocketDebuggerUrl"])
        yield p
        p.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_smoke_runs(tmp_path_factory.mktemp("smoke"))


# -- headline numbers, read from metrics.json independently of the report code ------------------


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _mnist(m: dict[str, Any]) -> list[str]:
    out = [m["status"]]
    for lr in sorted({r["lr"] for r in m["runs"]}):
        for net in ("plain", "bn"):
            finals = [
                r["history"]["accuracy"][-1] for r in m["runs"] if (r["lr"], r["net"]) == (lr, net)
            ]
            out.append(_pct(float(np.mean(finals))))
    return out


def _renorm(m: dict[str, Any]) -> list[str]:
    return (
        [m["status"]]
        + [r["name"] for r in m["runs"]]
        + [_pct(r["history"]["test_acc"][-1]) for r in m["runs"]]
    )


def _population(m: dict[str, Any]) -> list[str]:
    h = m["history"]
    return [m["status"], _pct(h["population"][-1])] + [_pct(v[-1]) for v in h["moving"].values()]


def _epochs(m: dict[str, Any]) -> list[str]:
    return [m["status"]] + [_pct(r["population_acc"]) for r in m["rows"]]


def _cifar(m: dict[str, Any]) -> list[str]:
    return [m["status"]] + [_pct(v["history"]["test_accuracy"][-1]) for v in m["models"].values()]


HEADLINES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "mnist-sigmoid": _mnist,
    "mnist-sigmoid-1seed": _mnist,
    "mnist-sigmoid-sweep": _mnist,
    "mnist-lr": _mnist,
    "renorm-small-batch": _renorm,
    "population-stats": _population,
    "population-stats-epochs": _epochs,
    "cifar10-keras": _cifar,
}


@pytest.mark.parametrize("name", list(HEADLINES))
def test_report_reads_right_in_a_browser(
    name: str, page: Page, smoke_runs: dict[str, Path], tmp_path: Path
) -> None:
    run = smoke_runs[name]
    page.open((run / "report.html").resolve().as_uri())
    images = page.js(
        "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    md_figures = (run / "report.md").read_text().count("![")
    assert len(images) == md_figures >= 1, images
    for src, complete, width in images:
        assert complete and width > 0, f"{name}: figure {src} did not load"
    assert page.errors() == [], name
    text = page.js("document.body.innerText")
    assert "**" not in text and "`" not in text, f"{name}: Markdown left unrendered"
    assert not re.search(r"(?<![\w*])\*[^\s*][^*]*\*(?![\w*])", text), f"{name}: literal *...*"
    for number in HEADLINES[name](json.loads((run / "metrics.json").read_text())):
        assert number in text, f"{name}: {number!r} is not on the page"
    shots = Path(os.environ.get("BNLAB_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(shots / f"{name}.png")
    assert (shots / f"{name}.png").stat().st_size > 10_000
