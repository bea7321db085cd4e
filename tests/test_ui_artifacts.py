"""Class names that hold markup, in the Prefect UI: fruitlens' table and markdown artifacts, created against a real
``prefect server start`` and opened in headless Chromium, show each name as typed and build no element from it.

The Prefect 3.8.8 UI renders markdown artifacts and the string cells of table artifacts through its markdown
renderer (HTML kept after sanitising, markdown syntax interpreted); column headers are plain text. What
``fruitlens.summary.markdown_text`` writes for it is checked here in the browser, not assumed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_prefect_stack import server  # noqa: F401 - the module's real Prefect server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

NAMES = ["<img src=x onerror=\"document.title='pwned'\">", "<b>bold</b>", "a & b", "a<b", "x*y*", "&lt;",
         "[link](http://evil.example)", "# head", "1. one", "1) one", "+ item", "`tick`", "a\\b", "~~s~~", "it's",
         "http://evil.example/a_b", "www.evil.example", "x@y.example", string.punctuation, "red_dot"]

MAKE = textwrap.dedent("""
    import json, sys
    from prefect import flow
    from pathlib import Path
    from flows.artifacts import publish_comparison, publish_links, publish_summary
    from fruitlens.summary import markdown_text

    names, folder = json.loads(sys.argv[1]), Path(sys.argv[2])

    @flow(name="ui-artifacts")
    def make():
        publish_comparison([{"class": n, "accuracy": 0.5} for n in names], "kept", prefix="hostile-")
        publish_summary("run " + names[0], {n: 0.5 for n in names} | {"worst class": names[1]},
                        "\\n".join("- " + markdown_text(n) for n in names), [], prefix="hostile-")
        (folder / (names[0].replace("/", "") + ".html")).write_text("report")
        publish_links({"report": folder / (names[0].replace("/", "") + ".html")}, prefix="hostile-")

    make()
""")

# What the page built: elements a name could have made, the title, and the text of each table cell and list item.
PROBE = """(() => {
  const data = [...document.querySelectorAll('.artifact-data-table, .artifact-data-markdown')];
  const inData = sel => data.flatMap(d => [...d.querySelectorAll(sel)]);
  return {title: document.title,
          text: document.body.innerText,
          made: inData('img, b, strong, em, ol, code, pre, del, h2').map(e => e.outerHTML),
          links: inData('a').map(e => [e.innerText.trim(), e.getAttribute('href')]),
          any_img_x: [...document.querySelectorAll('img[src="x"]')].map(e => e.parentElement.parentElement.outerHTML),
          headers: inData('th').map(e => e.innerText.trim()),
          cells: inData('td').map(e => e.innerText.trim()),
          items: inData('li').map(e => e.innerText.trim()),
          heading: inData('h1').map(e => e.innerText.trim())};
})()"""


def _ui_screenshot():
    spec = importlib.util.spec_from_file_location("ui_screenshot", ROOT / "scripts" / "ui_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_artifacts_show_class_names_as_typed_in_the_prefect_ui(server, tmp_path):  # noqa: F811
    ui = _ui_screenshot()
    browser = ui.find_chromium()  # installs it (scripts/install-chromium.sh) when it can
    if browser is None:
        pytest.skip("headless Chromium unavailable: not installed and scripts/install-chromium.sh could not")
    made = subprocess.run([sys.executable, "-c", MAKE, json.dumps(NAMES), str(tmp_path)], env=server.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-3000:]

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            return {a.key: a.id for a in await client.read_artifacts() if a.key and a.key.startswith("hostile-")}

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        ids = asyncio.run(read())
    assert set(ids) == {"hostile-model-comparison", "hostile-run-summary", "hostile-report-link"}, ids
    report = tmp_path / (NAMES[0].replace("/", "") + ".html")
    port = server.url.rsplit(":", 1)[1].split("/")[0]

    for key, artifact_id in ids.items():
        page = f"http://127.0.0.1:{port}/artifacts/artifact/{artifact_id}"
        shows = [f"report: {report.name}"] if key == "hostile-report-link" else NAMES
        seen = asyncio.run(ui._page_showing(browser, page, shows, timeout=60, expression=PROBE))
        assert seen["title"] == f"Artifact: {key} • Prefect Server", (key, seen)
        assert seen["made"] == [] and seen["any_img_x"] == [], (key, seen["made"], seen["any_img_x"])
        if key == "hostile-report-link":  # a link artifact: one link, its text as typed, to the file
            assert seen["links"] == [[f"report: {report.name}", report.as_uri()]], seen["links"]
            continue
        assert seen["links"] == [], (key, seen["links"])
        if key == "hostile-model-comparison":  # a table artifact: one row per name, the cells as typed
            assert seen["headers"] == ["class", "accuracy"], seen["headers"]
            assert seen["cells"][0::2] == NAMES, seen["cells"]
            assert "\nNew vs current model: kept the current model\n" in seen["text"], seen["text"]
        else:  # the markdown summary: the title, the metrics table and the lines
            assert seen["heading"] == [f"run {NAMES[0]}"], seen["heading"]
            assert f"\nrun {NAMES[0]}\n" in seen["text"], seen["text"]  # the description, as typed
            assert seen["cells"][0::2] == [*NAMES, "worst class"], seen["cells"]
            assert seen["cells"][-1] == NAMES[1], seen["cells"]
            assert seen["items"] == NAMES, seen["items"]
