"""`fruitlens report <explain folder>`: a page of your own photos' explanations, in the run report's look."""

from __future__ import annotations

import re

import keras
import pytest
from PIL import Image
from skimage import data as skdata

from fruitlens.cli import main
from fruitlens.report.html import asset
from fruitlens.runs import RunError


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    photos = root / "photos"
    (photos / "2024" / "june").mkdir(parents=True)
    Image.fromarray(skdata.chelsea()).save(photos / "2024" / "june" / "chelsea.jpg")
    Image.fromarray(skdata.coffee()).save(photos / "coffee.jpg")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 24, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.save(root / "m.keras")
    out = root / "ex"
    assert main(["explain", "--data", str(photos), "--model", str(root / "m.keras"), "--classes", "cat,cup",
                 "--method", "lime,gradcam,saliency", "--num-samples", "64", "--faithfulness-steps", "3",
                 "--out", str(out)]) == 0
    return out


def test_report_of_an_explain_folder_shows_every_photo_and_method(explained, capsys):
    assert main(["report", str(explained)]) == 0
    page = (explained / "report.html").read_text()
    assert "fruitlens explanations" in page and asset("report.css")[:200] in page  # the run report's look
    assert "not produced in this run" not in page.split('id="ranking"')[0]
    cards = page.split('class="card photo-card"')[1:]
    assert len(cards) == 2
    for card, name in zip(sorted(cards, key=lambda c: "coffee" in c), ("chelsea.jpg", "coffee.jpg"), strict=True):
        assert name in card and "predicted <b>" in card and "(p 0." in card
        captions = re.findall(r"<figcaption>([^<]*)</figcaption>", card)
        assert captions[0] == "photo" and "Gradients" in captions
        assert any(c.startswith("LIME · green for ") and c.endswith(", red against") for c in captions)  # legend
        assert any(c.startswith("Grad-CAM") for c in captions)
        assert card.count('src="data:image/png;base64,') == 4 and "no image" not in card  # photo + 3 methods
        assert "fit R²" in card and "deletion ↓" in card and "insertion ↑" in card
    assert "ranked by faithfulness" in page and "most faithful is" in page


def test_report_of_a_folder_without_tables_is_one_line(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["report", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run folder" in err
    from fruitlens.report.photos import build_photos_report

    with pytest.raises(RunError, match="no explanation table"):
        build_photos_report(tmp_path / "x")
