"""The run report: content from a fabricated complete run, robustness to missing parts, the command, and a
real headless Chromium rendering (sections present, no broken image, no console error, sortable tables)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fruitlens import tables
from fruitlens.cli import main
from fruitlens.report import SECTIONS, build_report
from fruitlens.runs import ModelCard, RunError, write_card
from fruitlens.selection import images_to_explain
from tests.report_fixture import CONFUSIONS, N_TEST, make_run

ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = ROOT / "scripts" / "install-chromium.sh"


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("report")
    run = make_run(base / "run", base / "data")
    build_report(run)
    return run


def _html(run: Path) -> str:
    return (run / "report.html").read_text(encoding="utf-8")


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_every_section_is_present_in_order_with_a_table_of_contents(fabricated):
    page = _html(fabricated)
    positions = [page.index(f'<section id="{sid}">') for sid, _ in SECTIONS]
    assert positions == sorted(positions)
    toc = re.search(r'<nav class="toc".*?</nav>', page, re.S).group(0)
    for sid, title in SECTIONS:
        assert f'href="#{sid}"' in toc and html.escape(title) in toc
    assert "not produced in this run" not in page  # the fabricated run is complete


def test_confused_pairs_are_said_in_words_and_explained(fabricated):
    page = _html(fabricated)
    confusion, why = _section(page, "confusion"), _section(page, "why")
    for true, pred, n in CONFUSIONS:
        sentence = f"<b>{true}</b> is taken for <b>{pred}</b> in {n} case{'s' if n > 1 else ''}"
        assert sentence in confusion and sentence in why
    # the worst pair comes first and is named in the header's summary
    first = f"<b>{CONFUSIONS[0][0]}</b> is taken for <b>{CONFUSIONS[0][1]}</b>"
    assert confusion.index(first) < confusion.index(f"<b>{CONFUSIONS[1][0]}</b> is taken")
    assert first in page[:page.index("<main>")]
    # each mistake card of the first pair shows photo, LIME and Grad-CAM, and the faithfulness scores
    pair_block = why.split("<h3>")[1]
    cards = re.findall(r'<div class="card".*?<p class="scores">.*?</p></div>', pair_block, re.S)
    assert len(cards) == 3  # 2 mistakes (per_pair) + 1 right prediction of the other class
    for card in cards:
        assert card.count("<img ") == 3  # photo, LIME outline, Grad-CAM
        assert "LIME · green for, red against" in card and "Grad-CAM · conv2d_1" in card
        assert "LIME fit R²" in card and "deletion AUC" in card and "insertion AUC" in card
    # where the explanations looked: the fixture's mistakes look beside the sticker, right predictions on it
    n = CONFUSIONS[0][2]
    assert (f"Grad-CAM's peak lies on the annotated evidence in 0 of {n} of these mistakes (against {N_TEST} of "
            f"{N_TEST} images of {CONFUSIONS[0][1]} it got right)") in pair_block
    assert f"LIME's strongest superpixel lies on the annotated evidence in 0 of {n}" in pair_block
    assert "When it errs, the model looks away from the evidence it uses when it is right." in pair_block


def test_numbers_match_the_predictions(fabricated):
    pred = tables.read_table(fabricated / "eval" / "predictions.parquet")
    acc = (pred["label"] == pred["pred_label"]).mean()
    page = _html(fabricated)
    assert f'<div class="big">{100 * acc:.1f}%</div>' in page
    metrics = _section(page, "metrics")
    # red_dot: 3 of 6 taken for purple_triangle -> recall 0.5; purple_triangle: 6 right + 4 wrong -> precision 0.6
    assert re.search(r"<td>red_dot</td><td[^>]*>1\.000</td><td[^>]*>0\.500</td>", metrics)
    assert re.search(r"<td>purple_triangle</td><td[^>]*>0\.600</td><td[^>]*>1\.000</td>", metrics)
    heat = re.search(r'<table class="heat">.*?</table>', _section(page, "confusion"), re.S).group(0)
    assert 'title="red_dot predicted as purple_triangle: 3 (50.0% of red_dot)"' in heat
    mistakes = _section(page, "mistakes")
    wrong = pred[~pred["correct"]]
    for row in wrong.itertuples():  # each mistake says how much the true class got
        said = (f"{row.label} had p {row.topk_probs[list(row.topk_labels).index(row.label)]:.3f}"
                if row.label in list(row.topk_labels) else f"{row.label} not in the top 2")
        assert said in mistakes
    dataset = _section(page, "dataset")
    assert "Bad files (2)" in dataset and "zero-byte file" in dataset and "not_image" in dataset
    assert f"<td>red_dot</td><td data-v=\"8.0\" class=\"num\">8</td><td data-v=\"{float(N_TEST)}\"" in dataset


def test_labels_outside_the_model_are_left_out_and_photos_found_without_index(fabricated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)
    pred = tables.read_table(run / "eval" / "predictions.parquet")
    extra = pred.head(2).assign(label="kiwi", image_id=["x1", "x2"], correct=False)
    tables.write_table(pd.concat([pred, extra], ignore_index=True), run / "eval" / "predictions.parquet", "predictions")
    metrics = tables.read_json(run / "eval" / "metrics.json")
    tables.write_json(run / "eval" / "metrics.json", metrics | {"top3_accuracy": 0.97,
                                                                "data": str(tables.read_json(
                                                                    run / "index" / "index.json")["root"])})
    shutil.rmtree(run / "index")  # photos are then found from metrics.json's "data"
    page = _html(run) if build_report(run) else ""
    acc = (pred["label"] == pred["pred_label"]).mean()
    assert f'<div class="big">{100 * acc:.1f}%</div>' in page and "kiwi" not in _section(page, "confusion")
    assert "2 evaluated images have a label that is not one of the model's classes" in page
    assert '<div class="big">97.0%</div><div class="small">top3 accuracy</div>' in page
    assert 'class="noimg"' not in _section(page, "mistakes")


def test_report_needs_no_network_and_embeds_every_image(fabricated):
    page = _html(fabricated)
    assert not re.search(r"<(link|iframe)\b", page)
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    srcs = re.findall(r'<img src="([^"]*)"', page)
    assert len(srcs) > 50
    assert all(s.startswith("data:image/") for s in srcs)
    assert 'class="noimg"' not in page  # every picture was found


def test_without_embedding_images_are_referenced_beside_the_report(fabricated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)
    build_report(run, embed=False)
    srcs = re.findall(r'<img src="([^"]*)"', _html(run))
    relative = [s for s in srcs if not s.startswith("data:")]
    assert relative and all(not s.startswith(("/", "file:", "http")) for s in relative)
    assert all((run / s).is_file() for s in relative)
    photos = [s for s in srcs if s.startswith("data:")]  # dataset photos live outside the run: embedded
    assert photos


def test_shortcut_alert_and_trend_across_nights(fabricated):
    page = _html(fabricated)
    evidence, trend = _section(page, "evidence"), _section(page, "trend")
    assert "Shortcut alert: 1 of 2 classes" in evidence and "y: 80% of the heat on the border" in evidence
    assert "2 nights of the models home" in trend and "accuracy 0.700 → <b>0.800</b>" in trend
    assert "data:image/png;base64," in trend and "gradcam:pass" in trend


def test_a_method_failing_the_sanity_check_is_marked_wherever_its_pictures_appear(fabricated, tmp_path):
    from fruitlens.layout import RunLayout

    assert "fails the sanity check" not in _html(fabricated)  # Grad-CAM passes in the fixture
    run = Path(shutil.copytree(fabricated, tmp_path / "run"))
    path = RunLayout(run).sanity.table
    sanity = tables.read_table(path)
    same = sanity["method"] == "gradcam"
    sanity.loc[same, ["spearman", "ssim"]] = 0.95  # Grad-CAM now barely changes with the model: it fails
    tables.write_table(sanity, path, "sanity")
    page = _html(run) if build_report(run) else ""
    assert 'Grad-CAM <b class="bad">fails</b>' in _section(page, "sanity")
    mark = "⚠ fails the sanity check"
    for sid in ("why", "explanations"):  # the fixture draws no evidence or drift pictures
        assert mark in _section(page, sid), sid
    explanations = _section(page, "explanations")
    assert explanations.count(mark) == explanations.count("<figcaption>Grad-CAM")  # every Grad-CAM picture
    marked = re.findall(r'<figcaption>([^<]*)(?:<[^a][^>]*>[^<]*</[^a]>)*[^<]*<a class="sanity-fail"', explanations)
    assert marked and all(caption.startswith("Grad-CAM") for caption in marked)  # LIME passes: not marked


def test_missing_parts_say_not_produced(tmp_path):
    write_card(tmp_path, ModelCard(classes=("a", "b"), image_size=(8, 8), arch="tiny"))
    page = _html(tmp_path) if build_report(tmp_path) else ""
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in page
    for sid in ("dataset", "training", "metrics", "confusion", "mistakes", "why", "explanations", "visualize",
                "comparison"):
        assert "not produced in this run" in _section(page, sid), sid
    assert "<code>comparison.parquet</code> is absent" in _section(page, "comparison")
    assert "arch" in _section(page, "run") and "tiny" in _section(page, "run")


def test_curves_are_drawn_from_the_history_when_the_png_is_missing(fabricated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)
    (run / "curves.png").unlink()
    training = _section(_html(run) if build_report(run) else "", "training")
    assert re.search(r'<img src="data:image/png;base64,[^"]+"[^>]*><figcaption>loss and accuracy per epoch '
                     r'\(drawn from history.parquet\)', training)
    assert "the model kept is the one of epoch 4 of 6 (validation accuracy 93.0%, validation loss 0.250)" in training


def test_unreadable_table_is_reported_not_fatal(fabricated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)
    (run / "eval" / "predictions.parquet").write_bytes(b"not parquet at all")
    page = _html(run) if build_report(run) else ""
    assert "eval/predictions.parquet: unreadable" in page
    assert "not produced in this run" in _section(page, "confusion")
    assert "<img " in _section(page, "explanations") or "not produced" in _section(page, "explanations")


def test_mistakes_without_explanations_are_said_so(tmp_path):
    run = make_run(tmp_path / "run", tmp_path / "data", explain="few")
    why = _section(_html(run) if build_report(run) else "", "why")
    blocks = why.split("<h3>")[1:]
    assert "None of these mistakes was explained" not in blocks[0]  # the first pair was explained
    assert "None of these mistakes was explained" in blocks[1]


def test_explaining_images_to_explain_fills_the_why_and_every_class(tmp_path):
    run = make_run(tmp_path / "run", tmp_path / "data", explain=images_to_explain)
    pred = tables.read_table(run / "eval" / "predictions.parquet")
    chosen = images_to_explain(pred)
    assert chosen == images_to_explain(pred.sample(frac=1.0, random_state=1).sort_index())  # deterministic
    n_classes = pred["label"].nunique()
    assert len(chosen) == len(set(chosen)) <= 5 * 3 + 2 * n_classes
    assert len(tables.read_table(run / "explain" / "gradcam.parquet")) == len(chosen) < len(pred)
    page = _html(run) if build_report(run) else ""
    assert "None of these mistakes was explained" not in page and "No image of this class was explained" not in page
    why = _section(page, "why")
    blocks = why.split("<h3>")[1:]
    assert len(blocks) == len(CONFUSIONS)
    for block, (_, _, n) in zip(blocks, CONFUSIONS, strict=True):  # every card shown is explained
        cards = block.count('<div class="card"')
        assert cards == min(n, 2) + 1 and block.count("Grad-CAM · ") == cards
    explanations = _section(page, "explanations")
    assert explanations.count('<div class="card"') == 2 * n_classes
    assert explanations.count("not explained in this run") == 0
    with pytest.raises(ValueError, match="pred_label"):
        images_to_explain(pred.drop(columns="pred_label"))


def test_same_run_same_report_except_the_build_time(fabricated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)
    strip = re.compile(r"built \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    build_report(run)
    first = strip.sub("", _html(run))
    build_report(run)
    assert strip.sub("", _html(run)) == first


def test_dataset_and_training_sections_count_the_validation_images_the_same_way(fabricated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)
    images = tables.read_table(run / "index" / "images.parquet")
    n_train = int(((images["split"] == "train") & (images["status"] == "ok")).sum())
    held = n_train // 5
    card = json.loads((run / "model.json").read_text())
    card["config"]["validation"] = {"held_out": held, "trained_on": n_train - held, "keep": "best",
                                    "source": "15% of the training images, stratified by class (val_fraction)",
                                    "why": "picks the best epoch by val_accuracy", "warning": ""}
    (run / "model.json").write_text(json.dumps(card))
    build_report(run)
    page = _html(run)
    words = f"{n_train - held:,} trained on"
    assert f"{n_train:,} train ({words}, {held:,} held out for validation)" in _section(page, "dataset")
    training = _section(page, "training")
    assert f"{held:,} images held out for validation" in training and words in training


def test_report_command(fabricated, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out and (run / "report.html").is_file()


@pytest.mark.parametrize("make, reason", [
    (lambda p: p / "missing", "no such run folder"),
    (lambda p: p, "not a run folder"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is a file"),
])
def test_report_command_bad_run_dir(tmp_path, capsys, make, reason):
    assert main(["report", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(RunError, match="no such run folder"):
        build_report(tmp_path / "nope")
    write_card(tmp_path, ModelCard(classes=("a",), image_size=(4, 4), arch="tiny"))
    with pytest.raises(ValueError, match="samples_per_class=0"):
        build_report(tmp_path, samples_per_class=0)


MANY = 33  # classes of the Fruits-360 copy in shared/datasets


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory) -> Path:
    """A 33-class run whose explanations are the pipeline's default budget of images_to_explain."""
    base = tmp_path_factory.mktemp("many")
    run = make_run(base / "run", base / "data", n_classes=MANY,
                   explain=lambda pred: images_to_explain(pred, limit=MANY))
    build_report(run)
    return run


def test_many_classes_every_class_has_an_explained_example(many_classes):
    page = _html(many_classes)
    explanations = _section(page, "explanations")
    blocks = re.findall(r'<div class="class-block" data-class="([^"]*)">(.*?)(?=<div class="class-block"|$)',
                        explanations, re.S)
    assert len(blocks) == MANY
    assert all('<div class="card"' in body for _, body in blocks), [c for c, b in blocks if "card" not in b]
    assert "No image of this class was explained" not in explanations
    assert len(tables.read_table(many_classes / "explain" / "gradcam.parquet")) == MANY


def test_many_classes_confusions_stay_readable(many_classes):
    confusion = _section(_html(many_classes), "confusion")
    # the classes involved in a mistake as a small matrix, the full one folded, both in scrolling boxes
    heats = re.findall(r'<div class="heat-box"><table class="heat">.*?</table></div>', confusion, re.S)
    assert len(heats) == 2
    involved = {c for pair in CONFUSIONS for c in pair[:2]}
    assert heats[0].count('<th scope="row">') == len(involved) and heats[1].count('<th scope="row">') == MANY
    assert re.search(r"<details><summary>The full 33 × 33 matrix</summary><div class=\"heat-box\">", confusion)
    assert confusion.index("is taken for") < confusion.index('<div class="heat-box">')  # words before the matrix


def test_tied_confusions_are_not_called_the_most_frequent(tmp_path):
    run = make_run(tmp_path / "run", tmp_path / "data", explain="few")
    pred = tables.read_table(run / "eval" / "predictions.parquet")
    tie = (pred["label"] == "blue_dot") & (pred["pred_label"] == "blue_dot")
    pred.loc[pred.index[tie][:1], ["pred_label", "correct"]] = ["cyan_ring", False]  # blue_dot -> cyan_ring: 3
    tables.write_table(pred, run / "eval" / "predictions.parquet", "predictions")
    head = _html(run) if build_report(run) else ""
    head = head[:head.index("<main>")]
    assert "most frequent confusion" not in head
    assert ("2 confusions tie at 3 cases each: <b>blue_dot</b> → <b>cyan_ring</b>, <b>red_dot</b> → "
            "<b>purple_triangle</b>") in head


def test_numbers_are_formatted_for_people_and_options_that_apply(fabricated):
    page = _html(fabricated)
    comparison, run = _section(page, "comparison"), _section(page, "run")
    assert re.search(r"<td>n</td><td[^>]*>\d+</td><td[^>]*>\d+</td><td[^>]*>0</td>", comparison)
    assert not re.search(r">[^<]*\d\.\d{4}", comparison)  # shown text, not the data-v sort values
    assert "seed_cnn" in run and not re.search(r"<th scope=\"row\">(train\.)?(weights|mode|alpha)</th>", run)
    assert "47.0 s in all (<code>total_seconds</code>)" in run  # the fixture's total
    assert not re.search(r"seconds_per_epoch|s in all\.", _section(page, "training") + run)


# ------------------------------------------------------------------------------------ headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]

# Injected first into <head> of a copy of the report: records script errors, failed resource loads and
# console.error calls; after load, checks every image, the sections, and that clicking a header sorts.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  if (t && t !== window && t.tagName) { window.__errors.push('failed to load ' + t.tagName + ' ' + (t.alt || '')); }
  else { window.__errors.push('script error: ' + e.message); }
}, true);
(function () { var orig = console.error; console.error = function () {
  window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); orig.apply(console, arguments);
}; })();
window.addEventListener('load', function () { setTimeout(function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.alt || i.src.slice(0, 60); });
  var sections = Array.prototype.slice.call(document.querySelectorAll('main section[id]'))
                   .filter(function (s) { return s.offsetHeight > 0 && s.querySelector('h2'); })
                   .map(function (s) { return s.id; });
  var sort = null, table = document.querySelector('#metrics table.sortable');
  if (table) {
    var th = Array.prototype.find.call(table.tHead.rows[0].cells, function (c) { return c.textContent === 'F1'; });
    var col = th.cellIndex, read = function () { return Array.prototype.map.call(table.tBodies[0].rows,
      function (r) { return parseFloat(r.cells[col].getAttribute('data-v')); }); };
    th.click(); var up = read(); th.click(); var down = read();
    sort = {up: up, down: down, foot: table.tFoot ? table.tFoot.rows.length : 0};
  }
  var width = document.documentElement.scrollWidth, zoom = null;
  var thumb = document.querySelector('#mistakes .gallery figure img') || document.querySelector('main figure img');
  if (thumb) {  // click a thumbnail: the lightbox shows the same picture, larger
    var small = thumb.getBoundingClientRect().width; thumb.click();
    var box = document.getElementById('lightbox'), big = box && box.querySelector('img');
    zoom = {shown: !!box && !box.hidden && getComputedStyle(box).display !== 'none',
            same: !!big && big.src === thumb.src, small: small, large: big ? big.getBoundingClientRect().width : 0};
    if (box) { box.click(); zoom.closed = box.hidden; }
  }
  // tables wider than their box (the confusion heat table scrolls in its own box by design)
  var cut = Array.prototype.slice.call(document.querySelectorAll('.table-wrap'))
              .filter(function (w) { var t = w.querySelector('table');
                                     return t && !t.classList.contains('heat') && t.scrollWidth > w.clientWidth + 1; })
              .map(function (w) { var s = w.closest('section'); return s ? s.id : ''; });
  // per explanation card: each picture's aspect (width / height) as the browser got it
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card .figs')).slice(0, 20).map(function (f) {
    return Array.prototype.map.call(f.querySelectorAll('img'), function (i) {
      return i.naturalHeight ? i.naturalWidth / i.naturalHeight : 0; }); });
  // gallery thumbnails the browser would have to enlarge (a small image scaled up looks blocky)
  var enlarged = Array.prototype.filter.call(document.querySelectorAll('#mistakes .gallery img'), function (i) {
    var r = i.getBoundingClientRect();
    return i.naturalWidth < Math.round(r.width) && i.naturalHeight < Math.round(r.height);
  }).length;
  var out = document.createElement('pre'); out.id = 'probe-result';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__errors,
                                    sections: sections, sort: sort, title: document.title,
                                    scroll_width: width, viewport: window.innerWidth, zoom: zoom,
                                    cut: cut, cards: cards, enlarged: enlarged});
  document.body.appendChild(out);
}, 0); });
</script>"""


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by scripts/install-chromium.sh when absent; skips only if that fails."""
    exe = _find_chromium()
    if exe is None:
        proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        exe = _find_chromium()
        if exe is None:
            why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no reason given"]
            pytest.skip(f"chromium unavailable: {why[0]}")
    return exe


def _chromium(exe: str, profile: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def _probe(exe: str, report: Path, tmp: Path, width: int = 1400) -> tuple[dict, str]:
    """Open a probed copy of ``report`` (same folder, so relative images resolve) in a window ``width``
    pixels wide; returns (result, stderr)."""
    probed = report.with_name("report.probe.html")
    page = report.read_text(encoding="utf-8")
    probed.write_text(page.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    try:
        proc = _chromium(exe, tmp / "profile-dom", f"--window-size={width},1000", "--virtual-time-budget=10000",
                         "--dump-dom", probed.as_uri())
    finally:
        probed.unlink()
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the probe did not run; chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1))), proc.stderr


def _console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _check_rendering(exe: str, run: Path, tmp: Path) -> dict:
    result, stderr = _probe(exe, run / "report.html", tmp)
    assert result["errors"] == [] and _console_problems(stderr) == [], (result["errors"], _console_problems(stderr))
    assert result["broken"] == [], f"broken images: {result['broken'][:5]}"
    assert result["sections"] == [sid for sid, _ in SECTIONS]
    assert result["title"].startswith("fruitlens report")
    assert result["viewport"] == 1400 and result["scroll_width"] <= 1400  # the page never scrolls sideways
    assert result["cut"] == [], f"tables wider than their box in sections {result['cut']}"
    assert result["enlarged"] == 0  # thumbnails drawn at the size they are shown
    return result


@pytest.mark.slow
def test_report_renders_in_chromium(chromium, fabricated, tmp_path):
    result = _check_rendering(chromium, fabricated, tmp_path)
    assert result["images"] > 50
    up, down = result["sort"]["up"], result["sort"]["down"]
    assert up == sorted(up) and down == sorted(up, reverse=True) and up != down
    assert result["sort"]["foot"] == 2  # the averages stay in the footer
    zoom = result["zoom"]  # clicking a thumbnail shows it large; clicking again closes it
    assert zoom["shown"] and zoom["same"] and zoom["large"] >= 3 * zoom["small"] and zoom["closed"], zoom
    shot = tmp_path / "report.png"
    proc = _chromium(chromium, tmp_path / "profile-shot", "--window-size=1280,2400", "--virtual-time-budget=10000",
                     f"--screenshot={shot}", (fabricated / "report.html").as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert img.shape[:2] == (2400, 1280)
    assert img[40, 40].mean() < 80  # the dark header rendered (CSS applied)
    assert img[:, :, :].std() > 30  # not a blank page
    print(f"screenshot kept at {shot}")


@pytest.mark.slow
def test_chromium_probe_catches_broken_images_and_script_errors(chromium, fabricated, tmp_path):
    """The rendering check can fail: a missing picture and a thrown error are both caught."""
    run = tmp_path / "run"
    run.mkdir()
    page = _html(fabricated).replace("<main>", '<main><img src="gone.png" alt="gone"><script>noSuchFn();</script>', 1)
    (run / "report.html").write_text(page, encoding="utf-8")
    result, stderr = _probe(chromium, run / "report.html", tmp_path)
    assert result["broken"] == ["gone"]
    assert any("failed to load IMG gone" in e for e in result["errors"])
    assert any("noSuchFn" in e for e in result["errors"]) and any("Uncaught" in x for x in _console_problems(stderr))


@pytest.mark.slow
def test_report_of_a_real_tiny_run(chromium, demo_dir, tmp_path):
    """Train, evaluate, explain and visualize for real (tiny), then the report renders with every picture."""
    from fruitlens import inference, training
    from fruitlens.batch.engine import explain_images
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.config import ExplainOptions, LimeOptions
    from fruitlens.dataset import index_or_load
    from fruitlens.explain import activations
    from fruitlens.runs import load_run, model_digest

    run = tmp_path / "run"
    index_or_load(demo_dir, run / "index")
    training.train_model(demo_dir, run, training.TrainConfig(epochs=2, image_size=20, seed=0))
    inference.evaluate_run(run, demo_dir, run / "eval")
    rows = rows_from_inputs([demo_dir], split="test")
    model, card = load_run(run)
    explain_images(model, card, model_digest(run), rows, run / "explain", ["lime", "gradcam"],
                   ExplainOptions(lime=LimeOptions(num_samples=100)), chunk_size=16)
    first = rows["path"].iloc[0]
    activations.visualize_run(run, first, run / "visualize")
    build_report(run)
    page = _html(run)
    for sid in ("dataset", "training", "metrics", "confusion", "explanations", "visualize"):
        assert "not produced in this run" not in _section(page, sid), sid
    pred = pd.read_parquet(run / "eval" / "predictions.parquet")
    assert f"{100 * (pred['label'] == pred['pred_label']).mean():.1f}%" in page
    result = _check_rendering(chromium, run, tmp_path)
    # the explanations are shown without their caption band: the photo's shape, so as large as the photo
    assert result["cards"] and all(len(c) == 3 for c in result["cards"]), result["cards"]
    assert all(max(c) - min(c) < 0.03 * max(c) for c in result["cards"]), result["cards"]


@pytest.mark.slow
def test_many_classes_render_without_sideways_scrolling(chromium, many_classes, tmp_path):
    result = _check_rendering(chromium, many_classes, tmp_path)  # scroll width <= 1400 px, no broken image
    assert result["zoom"]["shown"] and result["zoom"]["same"]


@pytest.mark.parametrize("arch, kept, dropped", [
    ("fruit_net", {"epochs"}, {"weights", "mode", "alpha"}),
    ("transfer:vgg16", {"weights", "mode"}, {"alpha"}),
    ("transfer:mobilenet_v2", {"weights", "mode", "alpha"}, set()),
])
def test_configuration_shows_the_options_that_apply(arch, kept, dropped):
    from fruitlens.report.record import applicable_options

    shown = applicable_options({"arch": arch, "epochs": 3, "weights": "none", "mode": "frozen", "alpha": 1.0,
                                "augment": False, "augment_options": {"zoom": 0.1}})
    assert kept <= set(shown) and not dropped & set(shown) and "augment_options" not in shown


def test_class_names_with_markup_are_escaped_everywhere(fabricated, tmp_path):
    """A class folder named like an HTML tag shows as text: the page gets no new element from it."""
    evil = "<img src=x onerror=alert(1)>"
    run = tmp_path / "run"
    shutil.copytree(fabricated, run)

    def rename(value):
        if isinstance(value, str):
            return value.replace("red_dot", evil)
        if isinstance(value, list | tuple | np.ndarray):
            return [rename(v) for v in value]
        if isinstance(value, dict):
            return {rename(k): rename(v) for k, v in value.items()}
        return value

    for path in run.rglob("*.parquet"):
        table = tables.read_table(path)
        for column in table.select_dtypes(include="object").columns:
            table[column] = table[column].map(rename)
        tables.write_table(table, path)
    for path in run.rglob("*.json"):
        tables.write_json(path, rename(tables.read_json(path)))
    build_report(run)
    page = _html(run)
    assert html.escape(evil) in page and "onerror=alert(1)>" not in page
    assert page.count("<img src=x") == 0
