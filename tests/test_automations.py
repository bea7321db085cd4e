"""The alert automations against a real ``prefect server start``: installed idempotently by name, and they fire.

A flow run in another process emits ``fruitlens.explanations.drifted`` with ``flows.events.emit``; the event
arrives on the server (read back through the client), the automation fires (``prefect.automation.triggered`` and
``prefect.automation.action.executed`` events, related to that flow run) and its notification block, a custom
webhook pointing at an HTTP server this test runs on 127.0.0.1, receives the message with the run folder in it.
A ``fruitlens.run.completed`` event (not an alert) fires nothing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("prefect")
from flows.automations import ALERTS, automation_name  # noqa: E402
from flows.events import EXPLANATIONS_DRIFTED, RUN_COMPLETED  # noqa: E402
from tests.test_schedule import server  # noqa: E402, F401 - the module's real Prefect server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

NIGHT = textwrap.dedent("""
    import sys
    from prefect import flow
    from flows.events import EXPLANATIONS_DRIFTED, RUN_COMPLETED, emit

    @flow(name="alert-night")
    def night(run_dir: str) -> None:
        emit(RUN_COMPLETED, run_dir, {"accuracy": 0.9})
        emit(EXPLANATIONS_DRIFTED, run_dir, {"drift_share": 0.5, "moved": 6, "probe": 12})

    if __name__ == "__main__":
        night(sys.argv[1])
        print("ok")
""")


@pytest.fixture()
def webhook():
    """An HTTP server on 127.0.0.1 that records the bodies POSTed to it."""
    bodies: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", bodies
    httpd.shutdown()
    httpd.server_close()


def _with_client(url: str, fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go():
        async with get_client() as client:
            return await fn(client)

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return asyncio.run(go())


def _events(url: str, prefixes: list[str]):
    from prefect.events.filters import EventFilter, EventNameFilter

    async def read(client):
        page = await client.read_events(filter=EventFilter(event=EventNameFilter(prefix=prefixes)), limit=50)
        return page.events

    return _with_client(url, read)


def _cli(args: list[str], server_env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fruitlens", *args], env=server_env, cwd=ROOT, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_alert_automations_fire_on_the_events_and_notify_through_a_block(server, webhook, tmp_path):  # noqa: F811
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    hook_url, bodies = webhook
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        CustomWebhookNotificationBlock(name="test", url=hook_url, method="POST",
                                       json_data={"subject": "{{subject}}", "body": "{{body}}"}
                                       ).save("alerts-test", overwrite=True)

    missing = _cli(["automations", "install", "--notify", "custom-webhook/nope"], server.env)
    assert missing.returncode == 2 and "custom-webhook/nope" in missing.stderr, missing.stderr
    first = _cli(["automations", "install", "--notify", "custom-webhook/alerts-test"], server.env)
    assert first.returncode == 0, first.stderr[-2000:]
    again = _cli(["automations", "install", "--notify", "custom-webhook/alerts-test"], server.env)
    assert again.returncode == 0 and again.stdout.count("updated automation") == len(ALERTS), again.stdout

    async def by_name(client):
        return {event: await client.read_automations_by_name(automation_name(event)) for event in ALERTS}

    installed = _with_client(server.url, by_name)
    assert all(len(found) == 1 for found in installed.values()), installed  # idempotent: one each
    drift_automation = installed[EXPLANATIONS_DRIFTED][0]
    assert drift_automation.enabled and drift_automation.trigger.expect == {EXPLANATIONS_DRIFTED}

    script = tmp_path / "night.py"
    script.write_text(NIGHT)
    run_dir = tmp_path / "runs" / "night-1"
    night = subprocess.run([sys.executable, str(script), str(run_dir)], env=server.env, cwd=ROOT,
                           capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert night.returncode == 0 and night.stdout.strip().endswith("ok"), night.stderr[-3000:]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = _events(server.url, ["fruitlens.", "prefect.automation."])
        names = [e.event for e in events]
        if "prefect.automation.action.executed" in names and bodies:
            break
        time.sleep(1)
    fruitlens_events = {e.event: e for e in events if e.event.startswith("fruitlens.")}
    assert set(fruitlens_events) == {RUN_COMPLETED, EXPLANATIONS_DRIFTED}, names
    drifted = fruitlens_events[EXPLANATIONS_DRIFTED]
    assert drifted.resource["fruitlens.run-dir"] == str(run_dir.resolve())
    assert drifted.payload == {"drift_share": 0.5, "moved": 6, "probe": 12}
    flow_runs = [r.id for r in drifted.related if r.role == "flow-run"]
    assert len(flow_runs) == 1  # the event names the nightly flow run it came from

    triggered = [e for e in events if e.event == "prefect.automation.triggered"]
    assert [e.resource.id for e in triggered] == [f"prefect.automation.{drift_automation.id}"], names
    triggering = triggered[0].payload["triggering_event"]  # in the event feed, with the night's flow run
    assert triggering["event"] == EXPLANATIONS_DRIFTED and flow_runs[0] in {
        r["prefect.resource.id"] for r in triggering["related"]}
    executed = [e for e in events if e.event == "prefect.automation.action.executed"]
    assert executed, names
    assert len(bodies) == 1 and EXPLANATIONS_DRIFTED in bodies[0] and str(run_dir.resolve()) in bodies[0], bodies
    assert "drift_share" in bodies[0]
    flow_run_name = next(r.name for r in drifted.related if r.role == "flow-run")
    assert f"flow run {flow_run_name}" in bodies[0], bodies[0]  # the message names the night's flow run
