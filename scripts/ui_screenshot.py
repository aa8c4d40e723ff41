"""Screenshots of one nightly flow run in the Prefect UI, for docs/OPERATIONS.md.

Starts `prefect server start` (API and UI) on a free port with a throwaway PREFECT_HOME, builds the demo
database, serves the demo sensors pipeline with `lstmcast serve` (a smaller model, so it finishes in about a
minute), triggers the nightly deployment, waits for the run to complete and photographs its page with
headless Chromium: the run graph with its logs, the task runs tab and the artifacts tab.

    .venv/bin/python scripts/ui_screenshot.py [--out docs] [--keep]

Needs the dev extras (tomli-w) and Chromium (Debian: `apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import tomli_w

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "nightly-forecast/nightly-sensors"
# (file name, tab of the flow run page to click, text that tells its content has loaded); the page
# opens on its Logs tab under the run graph.
SHOTS = (
    ("prefect-ui-flow-run.png", None, "Finished in state Completed"),
    ("prefect-ui-flow-run-task-runs.png", "Task Runs", "publish-"),
    ("prefect-ui-flow-run-artifacts.png", "Artifacts", "sensors-backtest"),
)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SETTLE_S = 3.0  # after the awaited text is there, for the rest of the page to draw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


@contextmanager
def process(args: list[str], log: Path, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A background process, stopped with Ctrl-C (then killed) on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(what: str, check: Callable[[], object], limit_s: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if result is not None:
            return result
        if proc.poll() is not None:
            sys.exit(f"{' '.join(map(str, proc.args[:4]))} exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            sys.exit(f"no {what} after {limit_s:.0f} s; last output:\n{tail(log)}")
        time.sleep(1)


def demo_config(work: Path) -> Path:
    """The shipped sensors demo on a database in `work`, with a smaller model and the gate off, so that
    every stage (train included) runs and shows up in the UI."""
    from lstmcast.demo import build_demo_db, demo_file

    url = f"sqlite:///{work / 'demo.db'}"
    build_demo_db(url)
    cfg = tomllib.loads(demo_file("sensors.toml").read_text())
    cfg["source"]["url"] = cfg["output"]["url"] = url
    cfg["data"]["data_dir"] = str(work / "lstmcast")
    cfg["forecast"]["gate"] = "off"
    cfg["model"]["hidden_size"] = 16
    cfg["training"].update(max_epochs=2, steps_per_epoch=5, time_budget_s=10)
    path = work / "sensors.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return path


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    sys.exit(f"none of {', '.join(CHROMIUM_NAMES)} on PATH; on Debian: apt-get install -y chromium")


class Browser:
    """Headless Chromium driven over the DevTools protocol, so that a shot waits for what it must show
    (the UI is a single-page app that keeps loading after the first paint) and can open a tab first."""

    def __init__(self, binary: str, profile: Path, width: int = 1600, height: int = 1400) -> None:
        from websockets.sync.client import connect

        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        args += [f"--user-data-dir={profile}", f"--window-size={width},{height}", "--remote-debugging-port=0"]
        self.proc = subprocess.Popen(
            [*args, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"{binary} did not open its DevTools port (exit {self.proc.returncode})")
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        import httpx

        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.calls = 0
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def send(self, method: str, **params) -> dict:
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(self.ws.recv())
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for_text(self, text: str, limit_s: float = 60) -> None:
        deadline = time.monotonic() + limit_s
        while not self.evaluate(f"document.body && document.body.innerText.includes({json.dumps(text)})"):
            if time.monotonic() > deadline:
                sys.exit(f"the page never showed {text!r}")
            time.sleep(0.5)

    def open(self, url: str, text: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for_text(text)

    def click(self, label: str, then_text: str) -> None:
        """Click the innermost element whose whole text is `label` (a tab), then wait for its content."""
        found = self.evaluate(
            "(() => { const hits = [...document.querySelectorAll('button, a, [role=tab], li, span, div')]"
            f".filter(e => e.textContent.trim() === {json.dumps(label)}); const el = hits[hits.length - 1];"
            " if (el) { el.click(); } return Boolean(el); })()"
        )
        if not found:
            sys.exit(f"no {label!r} on the page")
        self.wait_for_text(then_text)

    def capture(self, path: Path, settle_s: float = SETTLE_S) -> None:
        time.sleep(settle_s)  # the run graph draws on a canvas after its data arrived
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="Folder for the PNG files.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (logs, database).")
    opts = parser.parse_args()
    chromium_binary = chromium()

    work = Path(tempfile.mkdtemp(prefix="lstmcast-ui-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_API_URL": f"{base}/api",
        "PREFECT_UI_API_URL": f"{base}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    env.pop("LSTMCAST_SOURCE_URL", None)
    env.pop("LSTMCAST_OUTPUT_URL", None)
    # This process talks to the same server as its children.
    os.environ.update(
        {k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    )
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    def healthy():
        try:
            return True if httpx.get(f"{base}/api/health", timeout=2).status_code == 200 else None
        except httpx.HTTPError:
            return None

    def deployed():
        try:
            with get_client(sync_client=True) as client:
                return client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            return None

    try:
        with ExitStack() as stack:
            server_log, serve_log = work / "server.log", work / "serve.log"
            server_cmd = ["-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
            server = stack.enter_context(process([sys.executable, *server_cmd], server_log, work, env))
            print(f"Prefect server and UI: {base} (PREFECT_HOME {env['PREFECT_HOME']})")
            wait_until("healthy Prefect server", healthy, 120, server, server_log)

            config = demo_config(work)
            serve_cmd = ["-m", "lstmcast.cli", "serve", "--config", str(config)]
            serve = stack.enter_context(process([sys.executable, *serve_cmd], serve_log, work, env))
            wait_until(f"deployment {DEPLOYMENT}", deployed, 300, serve, serve_log)
            print(f"running {DEPLOYMENT} on {config}")
            run = run_deployment(name=DEPLOYMENT, timeout=1800, poll_interval=2)
            if run.state is None or not run.state.is_completed():
                sys.exit(f"flow run {run.id} ended {run.state}:\n{tail(serve_log)}")

            page = f"{base}/runs/flow-run/{run.id}"
            opts.out.mkdir(parents=True, exist_ok=True)
            browser = Browser(chromium_binary, work / "chromium")
            stack.callback(browser.close)
            for name, tab, loaded in SHOTS:
                browser.open(page, "Finished in state Completed")
                if tab is not None:
                    browser.click(tab, loaded)
                else:
                    browser.wait_for_text(loaded)
                path = opts.out / name
                browser.capture(path)
                print(f"{path}  <-  {page}" + (f", tab {tab}" if tab else ""))
    finally:
        if opts.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
