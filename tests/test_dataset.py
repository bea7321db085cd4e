import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruitlens import dataset, tables
from fruitlens.dataset import DatasetError, index_dataset, index_or_load, load_index, write_index
from fruitlens.images import read_rgb


def _jpeg(path: Path, colour=(200, 40, 40), size=(40, 30), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format="JPEG", quality=90)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A valid-looking PNG whose header declares width x height pixels (with correct CRCs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


@pytest.fixture()
def bad_dir(tmp_path) -> Path:
    """A Training/Test dataset holding every kind of bad input the foundation issue lists."""
    root = tmp_path / "bad"
    good = root / "Training" / "apple"
    for i in range(3):
        _jpeg(good / f"{i}.jpg")
    _jpeg(root / "Test" / "apple" / "0.jpg")
    odd = root / "Training" / "Pomme rouge é"  # spaces and non-ASCII in the class name
    _jpeg(odd / "ok.jpg", colour=(30, 200, 30))
    (odd / "empty.jpg").write_bytes(b"")
    full = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, "JPEG")
    (odd / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) * 2 // 3])
    (odd / "text.jpg").write_text("this is not a picture\n")
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(odd / "alpha.png")
    _jpeg(odd / "gray.jpg", mode="L")
    _jpeg(odd / "cmyk.jpg", mode="CMYK")
    Image.fromarray(np.arange(400, dtype=np.uint16).reshape(20, 20) * 160).save(odd / "deep16.png")
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]
    frames[0].save(odd / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    _bomb_png(odd / "bomb.png", 30000, 30000)
    (odd / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (odd / "readme.txt").write_text("notes")
    os.symlink(good / "0.jpg", odd / "link.jpg")
    os.symlink(odd / "does-not-exist.jpg", odd / "dangling.jpg")
    locked = _jpeg(odd / "locked.jpg")
    locked.chmod(0)
    (root / "Training" / "Empty Class").mkdir()
    return root


EXPECTED_STATUS = {
    "empty.jpg": "empty",
    "truncated.jpg": "truncated",
    "text.jpg": "not_image",
    "alpha.png": "ok",
    "gray.jpg": "ok",
    "cmyk.jpg": "ok",
    "deep16.png": "ok",
    "anim.gif": "animated",
    "bomb.png": "too_large",
    ".DS_Store": "hidden",
    "readme.txt": "not_image",
    "link.jpg": "ok",
    "dangling.jpg": "broken_symlink",
    "locked.jpg": "unreadable",
    "ok.jpg": "ok",
}


@pytest.fixture()
def unreadable_locked(monkeypatch):
    """chmod 0 does not stop root from reading, so as root make the read itself fail the same way."""
    if os.geteuid() == 0:
        real = dataset._read_bytes

        def read(path):
            if Path(path).name == "locked.jpg":
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(dataset, "_read_bytes", read)


def test_every_bad_file_gets_a_status_and_the_run_goes_on(bad_dir, unreadable_locked, capsys):
    index = index_dataset(bad_dir, workers=1)
    odd = index.table[index.table["label"] == "Pomme rouge é"].set_index(
        index.table.loc[index.table["label"] == "Pomme rouge é", "path"].map(lambda p: p.rsplit("/", 1)[1]))
    assert odd["status"].to_dict() == EXPECTED_STATUS
    bad = odd[odd["status"] != "ok"]
    assert (bad["error"].str.len() > 5).all() and not bad["error"].str.contains("\n").any()
    assert (odd.loc[odd["status"] == "ok", "error"] == "").all()
    assert odd.loc["gray.jpg", "mode"] == "L" and odd.loc["cmyk.jpg", "mode"] == "CMYK"
    assert odd.loc["alpha.png", "mode"] == "RGBA" and odd.loc["deep16.png", "mode"].startswith("I")
    assert index.classes == {"Pomme rouge é": 0, "apple": 1}  # sorted by code point
    assert any("Empty Class" in w for w in index.warnings)
    summary = dataset.format_summary(index)
    for name, status in EXPECTED_STATUS.items():
        if status != "ok":
            assert f"{name}: {status}" in summary


def test_usable_odd_modes_convert_to_rgb(bad_dir):
    odd = bad_dir / "Training" / "Pomme rouge é"
    for name in ("alpha.png", "gray.jpg", "cmyk.jpg", "deep16.png", "link.jpg"):
        arr = read_rgb(odd / name, size=(8, 12))
        assert arr.shape == (8, 12, 3) and arr.dtype == np.float32
        assert 0.0 <= arr.min() and arr.max() <= 1.0
    # alpha composited over white: half-transparent red -> pinkish
    alpha = read_rgb(odd / "alpha.png")
    assert alpha[0, 0, 0] == pytest.approx(1.0) and 0.4 < alpha[0, 0, 1] < 0.6
    # 16-bit values are scaled, not clipped: the gradient survives
    deep = read_rgb(odd / "deep16.png")
    assert deep[0, 0, 0] < 0.05 and deep[-1, -1, 0] > 0.9


@pytest.mark.parametrize("name", ["text.jpg", "truncated.jpg", "empty.jpg"])
def test_reading_a_bad_file_names_it(bad_dir, name):
    with pytest.raises(ValueError, match=name):
        read_rgb(bad_dir / "Training" / "Pomme rouge é" / name)


def test_truncated_jpeg_caught_by_draft_decode_where_header_is_fine(tmp_path):
    full = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(full, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    with Image.open(cut) as img:  # the header alone looks fine
        assert img.size == (200, 200)
    row = dataset.check_file(str(cut))
    assert row["status"] == "truncated"
    assert dataset.check_file(str(cut), verify=True)["status"] == "truncated"


def test_splits_layout_maps_folder_names(tmp_path):
    for folder in ("train", "validation", "test"):
        for cls in ("a", "b"):
            _jpeg(tmp_path / folder / cls / "x.jpg")
    index = index_dataset(tmp_path)
    assert index.layout == "splits"
    assert sorted(set(index.table["split"])) == ["test", "train", "val"]
    assert index.counts().to_numpy().tolist() == [[1, 1, 1], [1, 1, 1]]


def test_single_folder_layout_gets_seeded_stratified_holdout(tmp_path):
    for cls, n in (("a", 40), ("b", 20)):
        for i in range(n):
            _jpeg(tmp_path / cls / f"{i}.jpg", size=(8, 8))
    one = index_dataset(tmp_path, seed=1, val_fraction=0.25, test_fraction=0.25)
    again = index_dataset(tmp_path, seed=1, val_fraction=0.25, test_fraction=0.25)
    other = index_dataset(tmp_path, seed=2, val_fraction=0.25, test_fraction=0.25)
    assert one.layout == "classes"
    assert one.counts().to_dict() == {"train": {"a": 20, "b": 10}, "val": {"a": 10, "b": 5}, "test": {"a": 10, "b": 5}}
    pd.testing.assert_frame_equal(one.table, again.table)
    test_paths = lambda idx: set(idx.table.loc[idx.table["split"] == "test", "path"])  # noqa: E731
    assert test_paths(one) != test_paths(other)
    assert one.fingerprint == again.fingerprint != other.fingerprint


@pytest.mark.parametrize("layout", ["classes", "splits"])
def test_an_image_in_no_class_folder_is_listed_as_bad_not_skipped(layout, tmp_path, capsys):
    from fruitlens.cli import main

    top = tmp_path / "data"
    base = top / "Training" if layout == "splits" else top
    for cls in ("a", "b"):
        for i in range(4):
            _jpeg(base / cls / f"{i}.jpg", size=(8, 8))
    _jpeg(top / "stray.jpg", size=(8, 8))
    (top / "notes.txt").write_text("not an image: no row")
    strays = ["stray.jpg"]
    if layout == "splits":
        _jpeg(base / "loose.jpg", size=(8, 8))
        strays.append("Training/loose.jpg")
    index = index_dataset(top)
    assert index.layout == layout and index.classes == {"a": 0, "b": 1}
    bad = index.table[index.table["status"] != "ok"]
    assert sorted(bad["path"]) == sorted(strays)
    assert set(bad["status"]) == {"no_class"} and bad["label"].isna().all() and (bad["label_index"] == -1).all()
    assert all("outside any class folder" in e for e in bad["error"])
    assert len(index.usable) == 8 and not any("None" in w for w in index.warnings)
    out = tmp_path / "index"
    write_index(index, out)
    assert tables.read_json(out / "index.json")["bad_by_status"] == {"no_class": len(strays)}
    back = load_index(out).table
    assert back[back["status"] == "no_class"]["label"].isna().all()
    assert main(["index", str(top), "--out", str(tmp_path / "cli")]) == 0
    assert "stray.jpg" in capsys.readouterr().out  # the command names it


def test_classes_filter_and_unknown_class(tmp_path):
    for cls in ("Apple Red 1", "Apricot", "Kiwi"):
        _jpeg(tmp_path / "Training" / cls / "0.jpg")
    index = index_dataset(tmp_path, classes=["Kiwi", "Apricot"])
    assert index.classes == {"Apricot": 0, "Kiwi": 1}
    with pytest.raises(DatasetError, match=r"no class named 'Apple Red'.*closest: Apple Red 1"):
        index_dataset(tmp_path, classes=["Apple Red"])


def test_missing_dir_and_no_class_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        index_dataset(tmp_path / "nope")
    (tmp_path / "flat.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no class folders"):
        index_dataset(tmp_path)


def test_write_load_roundtrip_and_schema(demo_dir, tmp_path):
    index = index_dataset(demo_dir)
    write_index(index, tmp_path)
    back = load_index(tmp_path)
    assert back.fingerprint == index.fingerprint and back.classes == index.classes
    pd.testing.assert_frame_equal(back.table, index.table, check_dtype=False)
    schema = __import__("pyarrow.parquet", fromlist=["x"]).read_schema(tmp_path / "images.parquet")
    assert schema.names[: len(tables.IMAGES_SCHEMA)] == tables.IMAGES_SCHEMA.names
    assert tables.read_json(tmp_path / "classes.json") == index.classes
    assert not list(tmp_path.glob(".*tmp*")), "temp files left behind"


def test_demo_masks_are_attached_not_indexed(demo_dir):
    index = index_dataset(demo_dir)
    assert not index.table["path"].str.endswith(".mask.png").any()
    assert index.table["mask_path"].notna().all()
    assert (index.table["status"] == "ok").all()


def test_reindex_reuses_unchanged_rows_and_sees_changes(demo_dir, tmp_path):
    first = index_or_load(demo_dir, tmp_path)
    second = index_or_load(demo_dir, tmp_path)
    assert second.reused == len(first.table)
    assert second.fingerprint == first.fingerprint
    target = demo_dir / first.table.iloc[0]["path"]
    original = target.read_bytes()
    try:
        _jpeg(target, colour=(10, 10, 250), size=(100, 100))
        third = index_or_load(demo_dir, tmp_path)
        assert third.reused == len(first.table) - 1
        assert third.fingerprint != first.fingerprint
    finally:
        target.write_bytes(original)


def test_parallel_check_equals_serial(demo_dir):
    paths = sorted(str(p) for p in demo_dir.rglob("*.jpg")) * 3
    assert len(paths) >= 256  # big enough to take the process-pool path
    assert dataset.check_files(paths, workers=2) == dataset.check_files(paths, workers=1)


@pytest.mark.fruits360
def test_index_fruits360(fruits360_dir, tmp_path):
    index = index_or_load(fruits360_dir, tmp_path)
    assert len(index.table) == 20701
    assert len(index.classes) == 33
    assert (index.table["status"] == "ok").all()
    assert index.counts().sum().to_dict() == {"train": 15506, "test": 5195}


def test_index_works_from_code_piped_to_python(demo_dir):
    """Worker processes cannot import a __main__ read from stdin; indexing falls back to one process."""
    import subprocess
    import sys

    code = (f"from fruitlens.dataset import check_files\nimport glob\n"
            f"paths = sorted(glob.glob({str(demo_dir)!r} + '/*/*/*.jpg')) * 3\n"
            f"rows = check_files(paths, workers=2)\nprint(len(rows), all(r['status'] == 'ok' for r in rows))\n")
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["288", "True"]
