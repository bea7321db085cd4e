"""Check the Prefect UI end to end: server up, demo pipeline run against it, flow run page lists the artifacts.

1. starts ``prefect server start`` on 127.0.0.1:4200 (SQLite in a fresh PREFECT_HOME), unless one answers;
2. runs ``fruitlens demo`` against it (PREFECT_API_URL set), into a temporary folder;
3. reads the nightly flow run and its artifacts back with Prefect's own client;
4. opens the flow run page (Artifacts tab) and the artifacts page in headless Chromium, driven over the DevTools
   protocol: each must show the artifact keys (polled until they do, up to 90 s each, so a slow machine is waited
   for rather than sampled once), and a screenshot of the flow run page is saved.

    python scripts/ui_screenshot.py [--out docs/ui-flow-run.png] [--small] [--port 4200] [--keep]

``--small`` runs a smaller demo (fewer images, 2 epochs) for the test. Exit 0 when the page lists the
artifacts; 1 when it does not; 77 when Chromium is missing and cannot be installed (a test skips on 77).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = 77
SMALL_CONFIG = {"train": {"epochs": 2, "image_size": 24}, "explain_limit": 8, "chunk_size": 4,
                "explain_options": {"lime": {"num_samples": 100, "plots": "explanation"}}}


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    script = ROOT / "scripts" / "install-chromium.sh"
    if script.is_file() and subprocess.run(["bash", str(script)]).returncode == 0:
        return shutil.which("chromium") or shutil.which("chromium-browser")
    return None


def get_json(url: str, timeout: float = 30):
    """GET ``url`` and parse its JSON (the server's health, Chromium's DevTools target list)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def healthy(url: str) -> bool:
    try:
        return get_json(f"{url}/health") is True
    except OSError:
        return False


def read_back(url: str):
    """The newest ``nightly`` flow run, its artifacts and every artifact, read with Prefect's client."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="nightly-")),
                                               sort=FlowRunSort.START_TIME_DESC, limit=1)
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[runs[0].id])),
                sort=ArtifactSort.CREATED_DESC, limit=200)
            every = await client.read_artifacts(sort=ArtifactSort.CREATED_DESC, limit=200)
            return runs[0], arts, every

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return asyncio.run(read())


def start_server(port: int, home: Path) -> subprocess.Popen | None:
    url = f"http://127.0.0.1:{port}/api"
    if healthy(url):
        print(f"using the Prefect server already at {url}")
        return None
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_UI_API_URL": url}  # the UI calls this API, not :4200
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if healthy(url):
            print(f"started `prefect server start` at {url} (PREFECT_HOME={home})")
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server start exited with {proc.returncode}")
        time.sleep(1)
    proc.terminate()
    raise RuntimeError("the Prefect server did not answer in 180 s")


def run_demo(url: str, work: Path, small: bool) -> Path:
    out = work / "runs" / "demo"
    cmd = [sys.executable, "-m", "fruitlens", "demo", "--out", str(out), "--data", str(work / "data"),
           "--cache-dir", str(work / "cache")]
    if small:
        cfg = work / "small.json"
        cfg.write_text(json.dumps(SMALL_CONFIG))
        cmd += ["--train-per-class", "40", "--test-per-class", "8", "--config", str(cfg)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PREFECT_API_URL": url}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fruitlens demo failed: {proc.stderr[-3000:]}")
    print(f"fruitlens demo finished in {time.perf_counter() - start:.1f}s")
    return out


async def _page_showing(browser: str, page: str, keys: list[str], shot: Path | None = None, tab: str | None = None,
                        timeout: float = 90, expression: str | None = None):
    """Open ``page`` in headless Chromium over the DevTools protocol, click its ``tab`` (if given) until the
    artifact ``keys`` all show or ``timeout`` passes, screenshot it to ``shot`` (if given); the page's text,
    or the value of the JavaScript ``expression`` (if given) evaluated in the page then.
    Polling, not ``--dump-dom``: the UI fetches from the API after load, and under load a fixed virtual-time
    budget snapshots the page before the list arrives; the flow run page also hides its other tabs until
    the run has loaded."""
    import asyncio
    import base64

    import websockets

    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        port = _free_port()
        proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1000",
                                 f"--remote-debugging-port={port}", "--remote-allow-origins=*", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    targets = get_json(f"http://127.0.0.1:{port}/json/list")
                    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
                    break
                except (OSError, StopIteration):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
                counter = 0

                async def call(method: str, **params):
                    nonlocal counter
                    counter += 1
                    await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
                    while True:
                        msg = json.loads(await ws.recv())
                        if msg.get("id") == counter:
                            return msg.get("result", {})

                async def text() -> str:
                    res = await call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                                     returnByValue=True)
                    return res.get("result", {}).get("value", "")

                await call("Page.navigate", url=page)
                click = ("(() => { const t = [...document.querySelectorAll('li.p-tab, [role=tab], button')]"
                         f".find(b => b.textContent.trim() === {json.dumps(tab)}); if (t) {{ t.click(); return true; }}"
                         " return false; })()")
                deadline = time.monotonic() + timeout
                body = ""
                while time.monotonic() < deadline:
                    if tab:
                        await call("Runtime.evaluate", expression=click, returnByValue=True)
                    body = await text()
                    if all(k in body for k in keys):
                        break
                    await asyncio.sleep(1)
                if shot is not None:
                    await asyncio.sleep(1)
                    png = await call("Page.captureScreenshot", format="png")
                    shot.write_bytes(base64.b64decode(png["data"]))
                if expression is not None:
                    res = await call("Runtime.evaluate", expression=expression, returnByValue=True)
                    return res.get("result", {}).get("value")
                return body
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui-flow-run.png", help="screenshot file")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--small", action="store_true", help="a smaller demo (for the test)")
    parser.add_argument("--keep", action="store_true", help="leave the server running and the work folder")
    args = parser.parse_args(argv)

    browser = find_chromium()
    if browser is None:
        print("chromium is not installed and could not be installed", file=sys.stderr)
        return SKIP
    work = Path(tempfile.mkdtemp(prefix="fruitlens-ui-"))
    server = start_server(args.port, work / "prefect-home")
    url = f"http://127.0.0.1:{args.port}/api"
    try:
        run_demo(url, work, args.small)
        run, arts, every = read_back(url)
        keys = sorted({a.key for a in arts if a.key})
        print(f"flow run {run.name} ({run.state_name}): {len(arts)} artifacts: {', '.join(keys)}")
        import asyncio

        args.out.parent.mkdir(parents=True, exist_ok=True)
        page = f"http://127.0.0.1:{args.port}/runs/flow-run/{run.id}"
        body = asyncio.run(_page_showing(browser, page, keys, shot=args.out, tab="Artifacts"))
        shown = [k for k in keys if k in body]
        print(f"flow run page {page}, Artifacts tab: {len(shown)} of {len(keys)} artifact keys shown; "
              f"screenshot {args.out} ({args.out.stat().st_size if args.out.is_file() else 0} bytes)")
        listing = f"http://127.0.0.1:{args.port}/artifacts"
        all_keys = sorted({a.key for a in every if a.key})
        listing_text = asyncio.run(_page_showing(browser, listing, all_keys))
        listed = [k for k in all_keys if k in listing_text]
        print(f"artifacts page {listing}: {len(listed)} of {len(all_keys)} keys listed "
              f"(subflow artifacts included: {', '.join(sorted(set(all_keys) - set(keys)))})")
        ok = (run.state_name == "Completed" and bool(keys) and len(shown) == len(keys)
              and len(listed) == len(all_keys) and args.out.is_file())
        if not ok:
            print(f"missing: flow run page {sorted(set(keys) - set(shown))}, artifacts page "
                  f"{sorted(set(all_keys) - set(listed))}", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if server is not None and not args.keep:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
