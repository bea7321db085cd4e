"""The Prefect flows under a real, temporary Prefect server (``prefect_test_harness``, shared by the session).

End to end on the demo data with a tiny config; a second run with nothing changed is all Cached and several
times faster; one changed image or config value re-runs only what depends on it; a crashed explanation run
resumes without losing or duplicating rows; the Dask task runner gives the same tables; ``fruitlens serve``
registers the cron schedule. Task run states are read back from the server.
"""

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from fruitlens import digests, tables  # noqa: E402
from fruitlens.batch import engine  # noqa: E402
from fruitlens.batch.methods import RUNNERS  # noqa: E402
from fruitlens.batch.rows import rows_from_index  # noqa: E402
from fruitlens.cli import main  # noqa: E402
from fruitlens.dataset import index_or_load  # noqa: E402
from fruitlens.summary import markdown_text  # noqa: E402
from fruitlens.synthetic import CLASSES  # noqa: E402
from tests.helpers import tiny_run  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

# small enough for tests: 72 training images at 16 px, 2 epochs; 24 test images in 3 chunks
TINY = {"train": {"image_size": 16, "epochs": 2, "batch_size": 16}, "explain_limit": None, "chunk_size": 8,
        "explain_options": {"lime": {"num_samples": 64, "plots": "explanation"}, "gradcam": {"faithfulness_steps": 5}}}


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite) for every flow test: starting one takes seconds."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def cache(tmp_path, prefect_server):
    from flows.settings import pipeline_settings

    with pipeline_settings(tmp_path / "cache") as path:
        yield path


def now() -> datetime:
    time.sleep(0.01)
    return datetime.now(UTC)


def task_states(since: datetime) -> dict[str, list[str]]:
    """Task run name -> state names of every task run in flow runs started after ``since`` (from the server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterStartTime
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
                sort=FlowRunSort.START_TIME_ASC, limit=200)
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)

    deadline = time.monotonic() + 60
    task_runs = asyncio.run(read())
    while any(tr.state is None for tr in task_runs) and time.monotonic() < deadline:
        time.sleep(0.5)  # the server records a task run before its state (from the run's events): wait for it
        task_runs = asyncio.run(read())
    out: dict[str, list[str]] = {}
    for tr in sorted(task_runs, key=lambda t: t.expected_start_time or since):
        if re.fullmatch(r"(index|train|evaluate|explain)-\d+", tr.name):
            continue  # the task run a parent flow keeps for each subflow run (train-0, explain-0, ...)
        out.setdefault(tr.name, []).append(tr.state.name)
    return out


def latest_artifacts(keys: list[str]) -> dict[str, dict]:
    """The latest artifact of each key (as the API's JSON), read with Prefect's own client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)),
                                               sort=ArtifactSort.CREATED_DESC, limit=200)

    out: dict[str, dict] = {}
    for art in asyncio.run(read()):
        out.setdefault(art.key, art.model_dump(mode="json"))  # newest first
    return out


def read_events(run: str, expect: set[str], timeout: float = 30.0) -> list[tuple[str, dict]]:
    """(event name, payload) of every fruitlens event about the run folder named ``run``, oldest first (from the
    server), once every name in ``expect`` has arrived (the server stores events asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    async def read():
        async with get_client() as client:
            page = await client.read_events(filter=EventFilter(
                event=EventNameFilter(prefix=["fruitlens."]),
                resource=EventResourceFilter(id=[f"fruitlens.run.{run}"])), limit=50)
            return page.events

    deadline = time.monotonic() + timeout
    while True:
        found = [(e.event, e.payload) for e in sorted(asyncio.run(read()), key=lambda e: e.occurred)]
        if expect <= {name for name, _ in found} or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def chunk_states(states: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in states.items() if "-chunk-" in k}


KEY_CHECK = """
import json, sys, time
from pathlib import Path
from types import SimpleNamespace

from prefect.cache_policies import CacheKeyFnPolicy

import tasks.drift, tasks.evaluate, tasks.evidence, tasks.explain, tasks.index, tasks.report, tasks.sanity
import tasks.stability, tasks.train, tasks.visualize
from fruitlens.config import model_source_fields

data, out = sys.argv[1], Path(sys.argv[2])
model = model_source_fields(str(out))
image = str(sorted(Path(data).rglob("*.jpg"))[0])
run = {"index_dir": str(out / "index"), "explain_dir": str(out / "explain"), "split": "test"}
inputs = {
    "index": {"data_dir": data, "out_dir": str(out / "index")},
    "train": {"data_dir": data, "run_dir": str(out), "train_config": {}},
    "evaluate": {"model": model, "data_dir": data, "out_dir": str(out / "eval"), "split": "test"},
    "explain-chunk": {"model": model, "method": "lime", "options": {}, "chunk": [], "index": 0, "key": "k"},
    "visualize": {"model": model, "image_path": image, "out_dir": str(out / "visualize")},
    "lime-stability": {"model": model, **run, "images": 4, "lime": {}, "out_path": str(out / "s.parquet")},
    "class-evidence": {"model": model, "index_dir": run["index_dir"], "split": "test", "out_dir": str(out / "e")},
    "explanation-drift": {"old_model": model, "new_model": model, **run, "probe": 4, "out_dir": str(out / "d")},
    "sanity": {"model": model, **run, "images": 4, "methods": ["gradcam"], "options": {}, "out_dir": str(out / "x")},
    "report": {"run_dir": str(out)},
}
found, seconds = set(), {}
for module in (tasks.drift, tasks.evaluate, tasks.evidence, tasks.explain, tasks.index, tasks.report,
               tasks.sanity, tasks.stability, tasks.train, tasks.visualize):
    for task in vars(module).values():
        if isinstance(getattr(task, "cache_policy", None), CacheKeyFnPolicy):
            found.add(task.name)
            start = time.perf_counter()
            task.cache_policy.cache_key_fn(SimpleNamespace(task=task), inputs[task.name])
            seconds[task.name] = time.perf_counter() - start
print(json.dumps({"tasks": sorted(found), "tensorflow": "tensorflow" in sys.modules, "seconds": seconds}))
"""


def assert_cache_keys_need_no_tensorflow(data: Path, out: Path) -> None:
    """Every content-keyed task's key, computed on a finished run folder in a fresh process, imports no
    TensorFlow (a key that did cost a Cached step 8-11 s: issue 24)."""
    import json

    proc = subprocess.run([sys.executable, "-c", KEY_CHECK, str(data), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["tasks"]) >= {"index", "train", "evaluate", "explain-chunk", "visualize", "lime-stability",
                                    "class-evidence", "explanation-drift", "sanity", "report"}, result
    assert not result["tensorflow"], result


RERUN_CHECK = """
import json, sys

from flows.nightly import nightly_flow
from flows.settings import pipeline_settings

with pipeline_settings(sys.argv[4]):
    summary = nightly_flow(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
heavy = ("tensorflow", "keras", "sklearn", "scipy", "skimage", "matplotlib.pyplot")
print(json.dumps({"decision": summary["decision"], "imported": sorted(m for m in heavy if m in sys.modules)}))
"""


def assert_cached_rerun_imports_nothing_heavy(data: Path, out: Path, config: dict, cache_dir: Path) -> None:
    """An unchanged rerun in a fresh process (as `fruitlens run` or a served night) imports none of TensorFlow,
    scikit-learn, SciPy, scikit-image or pyplot: each costs a Cached pipeline seconds (issue 24)."""
    import json

    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    proc = subprocess.run([sys.executable, "-c", RERUN_CHECK, str(data), str(out), json.dumps(config),
                           str(cache_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"decision": "unchanged", "imported": []}, result


def test_run_end_to_end_then_everything_is_cached(prefect_server, demo_dir, tmp_path, capsys):
    import yaml

    data = shutil.copytree(demo_dir, tmp_path / "data")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "runs" / "e2e"
    args = ["run", "--data", str(data), "--out", str(out), "--config", str(cfg), "--cache-dir", str(tmp_path / "cache")]

    since, start = now(), time.perf_counter()
    assert main(args) == 0
    first = time.perf_counter() - start
    for rel in ("run.json", "index/images.parquet", "model.keras", "model.json", "history.parquet",
                "eval/predictions.parquet", "eval/metrics.json", "explain/lime.parquet", "explain/gradcam.parquet",
                "comparison.parquet", "report.html"):
        assert (out / rel).is_file(), rel
    assert list((out / "visualize").rglob("*.png"))
    assert_every_file_is_documented(out)
    assert_one_path_convention(out)
    home = tmp_path / "runs" / "models" / "e2e"  # the default models home: the run folder's own
    assert (home / "current" / "model.keras").is_file()  # first model: promoted
    assert f"promoted to current in {home}" in capsys.readouterr().out
    record = tables.read_json(out / "run.json")
    assert set(record["timings"]) >= {"index", "train", "evaluate", "explain", "visualize", "compare"}
    assert record["config"]["chunk_size"] == 8 and "prefect" in record["versions"] and record["promoted"]
    assert record["decision"] == "promoted"
    states = task_states(since)
    assert states["train-e2e"] == ["Completed"] and states["evaluate-test-eval"] == ["Completed"]
    assert sorted(chunk_states(states)) == [f"{m}-chunk-{i}" for m in ("gradcam", "lime") for i in range(3)]
    assert all(v == ["Completed"] for v in chunk_states(states).values())
    test_ids = sorted(rows_from_index(out / "index", "test")["image_id"])
    lime = tables.read_table(out / "explain" / "lime.parquet")
    gradcam = tables.read_table(out / "explain" / "gradcam.parquet")
    assert sorted(set(lime["image_id"])) == test_ids and sorted(gradcam["image_id"]) == test_ids

    keys = [f"e2e-{k}" for k in ("per-class-metrics", "confusion-counts", "model-comparison", "run-summary",
                                 "explain-progress", "report-link", "predictions-link", "lime-link")]
    arts = latest_artifacts(keys)
    assert sorted(arts) == sorted(keys)
    assert arts["e2e-run-summary"]["type"] == "markdown" and "data:image/png;base64," in arts["e2e-run-summary"]["data"]
    per_class = arts["e2e-per-class-metrics"]  # cells as markdown text (fruitlens.summary.markdown_text)
    assert per_class["type"] == "table" and "red\\_dot" in {r["class"] for r in json.loads(per_class["data"])}
    assert arts["e2e-explain-progress"]["type"] == "progress" and float(arts["e2e-explain-progress"]["data"]) == 100.0
    link = arts["e2e-report-link"]["data"]
    assert link.startswith("[") and "file://" in link and "report.html" in link

    written = {rel: (out / rel).stat().st_mtime_ns
               for rel in ("model.keras", "eval/predictions.parquet", "report.html", "explain/stability.parquet")}
    since, start = now(), time.perf_counter()
    assert main(args) == 0  # nothing changed
    second = time.perf_counter() - start
    printed = capsys.readouterr().out
    decision = [line for line in printed.splitlines() if line.startswith("test accuracy")]
    assert len(decision) == 1 and decision[0].endswith(f"unchanged: the current model in {home} is already this one")
    states = task_states(since)
    steps = ("index", "train", "evaluate", "lime-chunk", "gradcam-chunk", "visualize", "lime-stability",
             "class-evidence", "sanity", "report")
    heavy = {k: v for k, v in states.items() if k.startswith(steps)}
    assert len(chunk_states(heavy)) == 6
    assert {"train-e2e", "visualize-e2e", "lime-stability-e2e", "class-evidence-e2e", "sanity-e2e",
            "report-e2e"} <= set(heavy)
    # every step is Cached, the report too: run.json's timings and decision describe one invocation and are
    # left out of the report's key (the report shows those of the run that built it)
    assert all(set(v) == {"Cached"} for v in heavy.values()), heavy
    record = tables.read_json(out / "run.json")
    assert record["decision"] == "unchanged" and not record["promoted"]
    assert tables.read_json(home / "current.json")["run_dir"] == str(out.resolve())
    assert_cache_keys_need_no_tensorflow(data, out)
    assert_cached_rerun_imports_nothing_heavy(data, out, TINY, tmp_path / "cache")
    pd.testing.assert_frame_equal(tables.read_table(out / "explain" / "lime.parquet"), lime)
    # nothing heavy was redone: the model and the predictions are the files the first run wrote (the speed-up itself
    # is measured in benchmarks/bench_pipeline.py, not asserted here: timings on a shared machine are noise)
    assert {rel: (out / rel).stat().st_mtime_ns for rel in written} == written
    print(f"first run {first:.1f}s, second run {second:.1f}s ({first / second:.1f}x)")


# every file a run folder may hold, as README's "What a run writes" names it (<x> there, * here)
RUN_FOLDER_LAYOUT = (
    "run.json", "index/images.parquet", "index/classes.json", "index/index.json", "model.keras", "model.json",
    "history.parquet", "curves.png", "checkpoints/best.keras", "checkpoints/last.keras", "checkpoints/state.json",
    "cache/pixels-*.npy", "cache/pixels-*.errors.json",
    "eval/predictions.parquet", "eval/metrics.json", "eval/confusion.parquet", "eval/confusion.png",
    "eval/mistakes.png", "explain/lime.parquet", "explain/gradcam.parquet", "explain/failed.parquet",
    "explain/faithfulness.parquet", "explain/stability.parquet", "explain/*.parts/part-*.parquet",
    "explain/*.parts/part-*.parquet.sha256", "explain/lime/*-*_outline.png", "explain/lime/*-*_segments.npy",
    "explain/gradcam/*-*_overlay.png", "explain/gradcam/*-*_heatmap.png", "explain/side_by_side/*-*.png",
    "explain/.explained-model.json", "visualize/activations/*.png", "visualize/filters/*.png",
    "sanity/sanity.parquet", "sanity/sanity.png", "sanity/verdicts.json", "evidence/class_evidence.parquet",
    "evidence/class_evidence.png", "evidence/shortcut.parquet", "trend/nights.parquet", "trend/trend.png",
    "drift/drift.parquet", "drift/pictures/*-*.png", "comparison.parquet", "report.html",
)


def assert_every_file_is_documented(run: Path) -> None:
    """Every file of ``run`` matches the documented layout, which README's layout block spells out."""
    from fnmatch import fnmatchcase

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("RUN_DIR/\n"):]
    block = block[:block.index("```")]
    for pattern in RUN_FOLDER_LAYOUT:  # the README names it: its file name after the last <x> (* here)
        name = pattern.rsplit("/", 1)[-1].rsplit("*", 1)[-1]
        assert name in block, (pattern, name)
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    undocumented = [f for f in files if not any(fnmatchcase(f, p) for p in RUN_FOLDER_LAYOUT)]
    assert not undocumented, undocumented
    assert not [f for f in files if f.endswith(".lock")]  # removed when the run ended
    errors = list((run / "cache").glob("*.errors.json"))
    assert errors and all("\n\n" not in e.read_text() for e in errors)


def assert_one_path_convention(run: Path) -> None:
    """``path`` is absolute in every table of a run but the index; an unknown label is null, never ""."""
    checked = []
    for table_path in sorted(run.rglob("*.parquet")):
        if ".parts" in table_path.parts[-2] or table_path.parent.name == "index":
            continue
        frame = pd.read_parquet(table_path)
        if "path" in frame.columns and len(frame):
            assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"]), table_path
            checked.append(table_path.relative_to(run).as_posix())
        for column in ("label", "true_label"):
            if column in frame.columns and table_path.name != "nights.parquet":
                assert not (frame[column].astype(object) == "").any(), (table_path, column)
    assert {"eval/predictions.parquet", "explain/lime.parquet", "explain/gradcam.parquet"} <= set(checked), checked
    images = pd.read_parquet(run / "index" / "images.parquet")
    assert not any(Path(p).is_absolute() for p in images["path"])  # the index: relative to index.json's root


def test_models_home_is_per_run_folder_unless_shared_and_a_rerun_reuses_the_current_models_evaluation(
        cache, demo_dir, tmp_path, monkeypatch):
    """Two run folders under one parent keep their own current models; sharing a home is explicit. When the
    current model is another run's (kept, as it was better), a rerun reuses its evaluation, the drift and every
    other step: all Cached, and the decision is "kept" again."""
    from flows.nightly import nightly_flow
    from fruitlens import promotion

    runs = tmp_path / "runs"
    a = nightly_flow(str(demo_dir), str(runs / "a"), TINY)
    other = {**TINY, "train": {**TINY["train"], "seed": 7}}  # another model of the same classes
    b = nightly_flow(str(demo_dir), str(runs / "b"), other)
    assert (a["decision"], b["decision"]) == ("promoted", "promoted")  # each the first of its own home
    assert a["models_home"] == str(runs / "models" / "a") and b["models_home"] == str(runs / "models" / "b")
    assert a["model_digest"] != b["model_digest"]
    for name, summary in (("a", a), ("b", b)):
        current = tables.read_json(runs / "models" / name / "current.json")
        assert current["model_digest"] == summary["model_digest"] and current["run_dir"] == str(runs / name)

    shared = str(runs / "models" / "a")  # b deliberately shares a's home: compared with a's model
    real = promotion.compare_models  # whatever the tiny models score, the current one is kept
    monkeypatch.setattr(promotion, "compare_models", lambda *args, **kw: (real(*args, **kw)[0], False))
    since = now()
    first = nightly_flow(str(demo_dir), str(runs / "b"), other, shared)
    states = task_states(since)
    assert first["decision"] == "kept" and not first["promoted"]
    assert states["evaluate-test-eval_current"] == ["Completed"] and states["drift-b"] == ["Completed"]
    assert tables.read_json(runs / "models" / "a" / "current.json")["model_digest"] == a["model_digest"]

    since = now()
    again = nightly_flow(str(demo_dir), str(runs / "b"), other, shared)  # nothing changed
    states = task_states(since)
    assert again["decision"] == "kept"
    steps = ("index", "train", "evaluate", "lime-chunk", "gradcam-chunk", "visualize", "lime-stability",
             "class-evidence", "drift", "report")
    heavy = {k: v for k, v in states.items() if k.startswith(steps)}
    assert {"evaluate-test-eval_current", "drift-b", "lime-stability-b", "report-b"} <= set(heavy)
    assert all(set(v) == {"Cached"} for v in heavy.values()), heavy


def _flip(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path, quality=95)


def test_one_change_reruns_only_what_depends_on_it(cache, demo_dir, tmp_path, monkeypatch):
    from flows.nightly import nightly_flow

    data = shutil.copytree(demo_dir, tmp_path / "data")
    out, home = tmp_path / "runs" / "chg", tmp_path / "models"
    nightly_flow(str(data), str(out), TINY, str(home))
    rows = rows_from_index(out / "index", "test")

    _flip(Path(rows["path"].iloc[-1]))  # one test image of the last chunk changes
    since = now()
    nightly_flow(str(data), str(out), TINY, str(home))
    states = task_states(since)
    assert states["train-chg"] == ["Cached"] and states["visualize-chg"] == ["Cached"]
    assert states["evaluate-test-eval"] == ["Completed"]  # the test set changed
    assert chunk_states(states) == {f"{m}-chunk-{i}": ["Completed" if i == 2 else "Cached"]
                                    for m in ("lime", "gradcam") for i in range(3)}
    lime = tables.read_table(out / "explain" / "lime.parquet")
    assert sorted(set(lime["image_id"])) == sorted(rows["image_id"])
    assert not lime.duplicated(["image_id", "label", "superpixel"]).any()

    changed = copy.deepcopy(TINY)  # one config value: Grad-CAM's faithfulness steps
    changed["explain_options"]["gradcam"]["faithfulness_steps"] = 4
    since = now()
    nightly_flow(str(data), str(out), changed, str(home))
    states = task_states(since)
    assert states["train-chg"] == ["Cached"] and states["evaluate-test-eval"] == ["Cached"]
    assert chunk_states(states) == {f"{m}-chunk-{i}": ["Cached" if m == "lime" else "Completed"]
                                    for m in ("lime", "gradcam") for i in range(3)}
    gradcam = tables.read_table(out / "explain" / "gradcam.parquet")
    assert sorted(gradcam["image_id"]) == sorted(rows["image_id"])  # each image once

    changed["explain_options"]["lime"]["num_samples"] = 48  # LIME's options: LIME only (methods are independent)
    since = now()
    nightly_flow(str(data), str(out), changed, str(home))
    states = task_states(since)
    assert states["train-chg"] == ["Cached"]
    assert chunk_states(states) == {f"{m}-chunk-{i}": ["Completed" if m == "lime" else "Cached"]
                                    for m in ("lime", "gradcam") for i in range(3)}
    lime = tables.read_table(out / "explain" / "lime.parquet")
    assert set(lime["num_samples"]) == {48} and sorted(set(lime["image_id"])) == sorted(rows["image_id"])

    base = dict(digests.import_closure("tasks.explain"))["fruitlens.explain.base"]
    real = digests.read_source  # an edit to the CAM base (imported only indirectly): its chunks run again
    monkeypatch.setattr(digests, "read_source", lambda p: real(p) + ("\n# edited\n" if p == base else ""))
    since = now()
    nightly_flow(str(data), str(out), changed, str(home))
    states = task_states(since)
    assert states["train-chg"] == ["Cached"]
    assert all(v == ["Completed"] for k, v in chunk_states(states).items() if k.startswith("gradcam")), states


FAIL: set[str] = set()
CALLS: list[list[str]] = []


def fake_run(method, model, card, images, rows, options, out):
    """A stand-in method for the crash test: fails on any image id in FAIL."""
    ids = [str(i) for i in rows["image_id"]]
    CALLS.append(ids)
    if FAIL & set(ids):
        raise RuntimeError("simulated crash in one chunk")
    return pd.DataFrame({"image_id": ids, "mean": images.mean(axis=(1, 2, 3))}), engine.no_drawing


def test_crashed_explain_run_resumes_without_losing_or_duplicating_rows(cache, demo_dir, tmp_path, monkeypatch):
    from flows.explain import explain_flow

    monkeypatch.setitem(RUNNERS, "lime", fake_run)
    monkeypatch.setitem(tables.SCHEMAS, "lime", tables.pa.schema([("image_id", tables.pa.string())]))
    run_dir = tiny_run(tmp_path / "run", classes=CLASSES, image_size=(16, 16))
    index_or_load(demo_dir, run_dir / "index")
    ids = list(rows_from_index(run_dir / "index", "test")["image_id"])
    FAIL.clear()
    FAIL.add(ids[9])  # the third of six chunks of 4 fails (and its retry too)
    params = {"model": str(run_dir), "index_dir": str(run_dir / "index"), "out_dir": str(run_dir / "explain"),
              "methods": ["lime"], "chunk_size": 4, "artifact_prefix": "run-"}
    try:
        state = explain_flow(**params, return_state=True)
    finally:
        FAIL.clear()
    assert state.is_failed() and "1 of 6 explanation chunks failed" in state.message
    assert len(list((run_dir / "explain" / "lime.parts").glob("part-*.parquet"))) == 5
    assert not (run_dir / "explain" / "lime.parquet").exists()

    CALLS.clear()
    since = now()
    result = explain_flow(**params)
    assert CALLS == [ids[8:12]]  # only the missing chunk was explained again
    states = chunk_states(task_states(since))
    assert states.pop("lime-chunk-2") == ["Completed"] and all(v == ["Cached"] for v in states.values())
    table = tables.read_table(result["tables"]["lime"])
    assert list(table["image_id"]) == sorted(ids)  # every image exactly once
    assert float(latest_artifacts(["run-explain-progress"])["run-explain-progress"]["data"]) == 100.0


def test_dask_runner_gives_the_same_tables(cache, demo_dir, tmp_path):
    from flows.explain import explain_flow
    from flows.settings import build_task_runner

    run_dir = tiny_run(tmp_path / "run", classes=CLASSES, image_size=(16, 16))
    index_or_load(demo_dir, run_dir / "index")
    params = {"model": str(run_dir), "index_dir": str(run_dir / "index"), "methods": ["lime", "gradcam"],
              "limit": 6, "chunk_size": 2,
              "options": {"lime": {"num_samples": 40, "plots": "none"}, "gradcam": {"faithfulness_steps": 4}}}
    threads = explain_flow(**params, out_dir=str(tmp_path / "threads"))["tables"]
    dask = build_task_runner("dask", cluster_kwargs={"n_workers": 1, "threads_per_worker": 2, "processes": False})
    since = now()
    on_dask = explain_flow.with_options(task_runner=dask)(**params, out_dir=str(tmp_path / "dask"))["tables"]
    assert len(chunk_states(task_states(since))) == 6  # 3 chunks x 2 methods, on Dask
    for method in ("lime", "gradcam"):
        a = tables.read_table(threads[method]).replace(str(tmp_path / "threads"), "OUT", regex=True)
        b = tables.read_table(on_dask[method]).replace(str(tmp_path / "dask"), "OUT", regex=True)
        assert len(a) and set(a["image_id"]) == set(b["image_id"])
        pd.testing.assert_frame_equal(a, b)


async def read_deployment(name: str):
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            return await client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def test_serve_registers_the_cron_schedule(prefect_server, demo_dir, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "FRUITLENS_CACHE": str(tmp_path / "cache")}
    cfg = tmp_path / "nightly.json"
    cfg.write_text('{"chunk_size": 5, "train": {"epochs": 3}}')
    proc = subprocess.Popen([sys.executable, "-m", "fruitlens", "serve", "--cron", "30 3 * * *", "--name", "test",
                             "--data", str(demo_dir), "--out", str(tmp_path / "nightly"), "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deployment = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            deployment = asyncio.run(read_deployment("nightly/test"))
            if deployment is not None and deployment.schedules:
                break
            time.sleep(1)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert deployment is not None and deployment.schedules, output[-2000:]
    assert [s.schedule.cron for s in deployment.schedules] == ["30 3 * * *"]
    assert deployment.parameters["out_dir"] == str((tmp_path / "nightly").resolve())
    config = deployment.parameters["config"]
    assert config["chunk_size"] == 5 and config["train"]["epochs"] == 3


def test_prefect_yaml_deploys_the_nightly_flow():
    import inspect

    import yaml
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    from fruitlens.config import PipelineConfig

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployment = spec["deployments"][0]
    flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
    assert flow.name == "nightly"
    assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    PipelineConfig.from_dict(deployment["parameters"]["config"])  # a valid config
    assert CronSchedule(cron=deployment["schedules"][0]["cron"]).cron == "0 2 * * *"


def test_cli_and_flow_share_one_engine_and_write_identical_tables(cache, demo_dir, tmp_path):
    from flows.explain import explain_flow

    run_dir = tiny_run(tmp_path / "run", classes=CLASSES, image_size=(16, 16))
    index_or_load(demo_dir, run_dir / "index")
    options = {"lime": {"num_samples": 40, "plots": "explanation", "seed": 3, "faithfulness_steps": 4},
               "gradcam": {"faithfulness_steps": 4, "seed": 3}}
    flow_out = tmp_path / "flow"
    explain_flow(model=str(run_dir), index_dir=str(run_dir / "index"), out_dir=str(flow_out),
                 methods=["lime", "gradcam"], limit=None, chunk_size=5, options=options)
    cli_out = tmp_path / "cli"
    assert main(["explain", "--model", str(run_dir), "--data", str(demo_dir), "--out", str(cli_out),
                 "--num-samples", "40", "--plots", "explanation", "--seed", "3", "--faithfulness-steps", "4",
                 "--chunk-size", "7"]) == 0
    for table in ("lime.parquet", "gradcam.parquet", "failed.parquet"):
        a, b = tables.read_table(flow_out / table), tables.read_table(cli_out / table)
        assert len(a) == len(b) and (table == "failed.parquet" or len(a))
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert sorted(p.name for p in (flow_out / "side_by_side").glob("*.png")) == \
        sorted(p.name for p in (cli_out / "side_by_side").glob("*.png"))


def test_pipeline_explains_an_existing_model_without_training(cache, demo_dir, tmp_path):
    from flows.nightly import nightly_flow

    model_dir = tiny_run(tmp_path / "theirs", classes=CLASSES, image_size=(16, 16))
    config = {**TINY, "model": {"spec": str(model_dir / "model.keras"), "classes": list(CLASSES)},
              "explain_limit": 6, "visualize": False}
    out = tmp_path / "runs" / "existing"
    summary = nightly_flow(str(demo_dir), str(out), config, str(tmp_path / "models"))
    assert not (out / "model.keras").exists() and not (out / "checkpoints").exists()  # nothing trained
    assert not summary["promoted"] and not (tmp_path / "models" / "current").exists()
    assert len(tables.read_table(out / "eval" / "predictions.parquet")) == 24
    assert tables.read_table(out / "explain" / "gradcam.parquet")["image_id"].nunique() == 6
    assert "explained the existing model" in summary["note"] and (out / "report.html").is_file()


def test_nightly_trains_the_amortised_explainer_explains_with_it_and_audits_it(cache, demo_dir, tmp_path):
    """amortised_audit on: the explainer is trained beside the (here existing) model, explains with the other
    methods, then the audit writes amortised_audit.parquet over the whole split and the report shows it."""
    from flows.nightly import nightly_flow

    model_dir = tiny_run(tmp_path / "theirs", classes=CLASSES, image_size=(16, 16))
    config = {**TINY, "model": {"spec": str(model_dir / "model.keras"), "classes": list(CLASSES)},
              "methods": ["gradcam"], "explain_limit": 6, "visualize": False, "sanity_images": 0,
              "stability_images": 0, "class_evidence": False, "amortised_audit": 8, "amortised_agreement": 0.0,
              "explain_options": {**TINY["explain_options"],
                                  "amortised": {"grid": 4, "epochs": 2, "masks": 4, "width": 4}}}
    out = tmp_path / "runs" / "amortised"
    summary = nightly_flow(str(demo_dir), str(out), config, str(tmp_path / "models"))
    assert {"amortised_train", "amortised_audit"} <= set(summary["timings"])
    (folder,) = (out / "amortised-explainer").iterdir()
    assert json.loads((folder / "card.json").read_text())["images"] == 72  # the training split
    rows = tables.read_table(out / "explain" / "amortised.parquet")
    assert len(rows) == 6 and set(rows["passes"]) == {3}
    audit = tables.read_table(out / "explain" / "amortised_audit.parquet")
    assert audit["images"].sum() == 24 and audit["audited"].sum() == 8 and set(audit["explained_by"]) == {"amortised"}
    page = (out / "report.html").read_text()
    assert 'id="amortised-audit"' in page and "insertion AUC amortised" in page and "insertion AUC 0." in page


def test_nightly_flags_explanation_drift_when_the_deciding_sticker_moved(cache, tmp_path):
    from flows.nightly import nightly_flow
    from fruitlens.synthetic import write_demo_dataset

    moved = ("blue_dot", "red_dot")
    std = write_demo_dataset(tmp_path / "std", n_train=30, n_test=3)
    shifted = write_demo_dataset(tmp_path / "moved", n_train=30, n_test=3, moved=moved)
    config = {**TINY, "train": {"arch": "fruit_net", "image_size": 32, "epochs": 12, "batch_size": 16},
              "methods": ["gradcam"], "visualize": False, "drift_probe": 18, "max_drift": 0.2}
    home, first = tmp_path / "models", tmp_path / "runs" / "first"
    nightly_flow(str(std), str(first), config, str(home))
    assert not (first / "drift").exists()  # no current model yet: nothing to compare
    again = nightly_flow(str(std), str(first), config, str(home))  # same data: the same model, no drift
    assert again["decision"] == "unchanged" and not again["promoted"] and not (first / "drift").exists()
    second = tmp_path / "runs" / "second"
    summary = nightly_flow(str(shifted), str(second), config, str(home))
    drift = tables.read_table(second / "drift" / "drift.parquet")
    assert len(drift) == 18
    affected = drift["label"].isin(moved)
    assert drift.loc[affected, "moved"].mean() >= 0.5
    assert drift.loc[affected, "moved"].mean() > drift.loc[~affected, "moved"].mean()
    comparison = tables.read_table(second / "comparison.parquet").set_index("metric")
    assert comparison.loc["evidence_moved_share", "new"] == pytest.approx(drift["moved"].mean())
    if drift["moved"].mean() > 0.2:  # max_drift holds the new model back
        assert not summary["promoted"]
    page = (second / "report.html").read_text()
    assert "What changed in what the model looks at" in page and "drift/pictures/" not in page  # embedded

    # every night ran the sanity check on its probe set with the run's Grad-CAM: verdicts in the comparison,
    # the report and the summary; the class evidence has the shortcut shares
    for run in (first, second):
        verdicts = tables.read_json(run / "sanity" / "verdicts.json")["verdicts"]
        assert [v["method"] for v in verdicts] == ["gradcam"] and verdicts[0]["images"] == 4
        assert tables.read_table(run / "sanity" / "sanity.parquet")["image_id"].nunique() == 4
        assert (run / "evidence" / "shortcut.parquet").is_file()
    passed = verdicts[0]["passed"]
    assert comparison.loc["sanity_gradcam", "new"] == (1.0 if passed else 0.0)
    assert "Do the explanations depend on the model?" in page and "sanity.parquet" not in page.split(
        'id="sanity"')[1].split("</section>")[0]  # produced, not "not produced in this run"
    assert ("Grad-CAM <b class=\"good\">passes</b>" if passed else "Grad-CAM <b class=\"bad\">fails</b>") in page
    assert ("⚠ fails the sanity check" in page) is (not passed)  # marked wherever Grad-CAM's pictures appear
    summary_md = latest_artifacts(["second-run-summary"])["second-run-summary"]["data"]
    assert markdown_text("sanity check (randomisation test): Grad-CAM") in summary_md

    # the trend: one row per (run folder, model) in the models home, the rerun of the first night counted on
    # its row instead of added; a trend section with its figure; a table artifact with a stable key
    nights = tables.read_table(home / "nights.parquet").sort_values("date", ignore_index=True)
    assert list(nights["run"]) == ["first", "second"] and list(nights["reruns"]) == [1, 0]
    assert nights["sanity"].str.startswith("gradcam:").all() and nights["drift_share"].iloc[1] == pytest.approx(
        drift["moved"].mean())
    assert (second / "trend" / "trend.png").is_file() and 'id="trend"' in page and "Since the night before" in page
    trend = latest_artifacts(["second-nightly-trend"])["second-nightly-trend"]
    assert trend["type"] == "table" and "first" in str(trend["data"]) and "second" in str(trend["data"])

    # the events arrived at the server, with the figures in their payloads
    got = dict(read_events("second", expect={"fruitlens.run.completed", "fruitlens.explanations.drifted"}))
    completed = got["fruitlens.run.completed"]
    assert completed["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    assert completed["report"].endswith("report.html") and completed["seconds"] > 0
    assert got["fruitlens.explanations.drifted"]["drift_share"] == pytest.approx(drift["moved"].mean())
    verdict = "fruitlens.model.promoted" if summary["promoted"] else "fruitlens.model.rejected"
    assert verdict in got and got[verdict]["metric"] == "accuracy" and got[verdict]["old"] is not None
    assert ("fruitlens.sanity.failed" in got) is (not passed)
    flagged = tables.read_table(second / "evidence" / "shortcut.parquet")["flagged"].any()
    assert ("fruitlens.evidence.shortcut" in got) is bool(flagged)
    names = [name for name, _ in read_events("first", expect={"fruitlens.run.completed"})]
    assert names.count("fruitlens.run.completed") == 2  # the first night and its unchanged rerun
    assert names.count("fruitlens.model.promoted") == 1 and "fruitlens.model.rejected" not in names  # rerun: neither


def test_table_artifacts_escape_class_names_that_hold_markup(monkeypatch):
    """String cells as markdown that shows them as typed (the UI renders cells as markdown; headers as text,
    so they stay raw); what the browser shows is tests/test_ui_artifacts.py."""
    import pandas as pd

    from flows import artifacts

    seen = []
    monkeypatch.setattr(artifacts, "create_table_artifact", lambda rows, **kw: seen.append((rows, kw)))
    hostile = "<img src=x onerror=alert(1)>"
    records = artifacts._records(pd.DataFrame({"class": [hostile, "red_dot", "x*y*"], "f1": [0.5, None, 1.0]}))
    assert records == [{"class": "&lt;img src=x onerror=alert\\(1\\)&gt;", "f1": 0.5},
                       {"class": "red\\_dot", "f1": None}, {"class": "x\\*y\\*", "f1": 1.0}]
    assert artifacts._escaped([{hostile: 1}]) == [{hostile: 1}]  # a header is shown as text
    artifacts.publish_comparison([{"model": hostile, "accuracy": 1.0}], "kept", note=hostile)
    rows, kw = seen[0]
    assert "<" not in str(rows) and "<" not in kw["description"]
