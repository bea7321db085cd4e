"""images.py and the index on files as they come: EXIF orientation, huge JPEGs, odd folders and file kinds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruitlens import dataset, images, tables

ROTATIONS = {  # EXIF orientation -> how to store the upright pixels so a viewer shows them upright
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,   # viewer turns it 90 degrees clockwise back
    8: Image.Transpose.ROTATE_270,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
}


def _rotated_copy(src: Path, dst: Path, orientation: int) -> None:
    with Image.open(src) as img:
        stored = img.convert("RGB").transpose(ROTATIONS[orientation])
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = orientation
    stored.save(dst, quality=100, subsampling=0, exif=exif.tobytes())


def _chelsea_jpeg(path: Path) -> Path:
    from skimage.data import chelsea
    Image.fromarray(chelsea()).save(path, quality=100, subsampling=0)  # 451x300: not square
    return path


@pytest.mark.parametrize("orientation", sorted(ROTATIONS))
def test_exif_rotated_photo_reads_upright_everywhere(tmp_path, orientation):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    original = _chelsea_jpeg(tmp_path / "upright.jpg")
    turned = tmp_path / "data" / "cat" / "turned.jpg"
    _rotated_copy(original, turned, orientation)
    want = images.read_rgb(original)
    for got in (images.read_rgb(turned), images.read_uint8(turned) / 255.0,
                images.read_batch([turned], want.shape[:2])[0]):
        assert got.shape == want.shape
        assert np.abs(got - want).mean() < 0.01  # JPEG re-encoding error only; a sideways read is ~0.2
    from fruitlens.inputs import decode_images
    decoded, errors = decode_images([str(turned)], (32, 48), workers=1)
    assert errors == [""] and np.abs(decoded[0] / 255.0 - images.read_rgb(original, (32, 48))).mean() < 0.04
    assert np.array_equal(decoded[0], images.read_uint8(turned, (32, 48)))  # training reads what predict reads
    row = dataset.check_file(str(turned))
    assert (row["status"], row["width"], row["height"]) == ("ok", 451, 300)


def test_broken_exif_orientation_never_crashes(tmp_path):
    path = tmp_path / "odd.jpg"
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = 99  # out of range
    Image.new("RGB", (20, 10), (10, 200, 30)).save(path, exif=exif.tobytes())
    assert images.read_rgb(path).shape == (10, 20, 3)
    garbage = tmp_path / "garbage.jpg"
    Image.new("RGB", (20, 10)).save(garbage, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01")
    assert images.read_rgb(garbage).shape == (10, 20, 3)
    assert dataset.check_file(str(garbage))["status"] == "ok"


def test_large_jpeg_read_small_is_close_to_full_decode_and_resize(tmp_path):
    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(small).resize((1600, 1200), Image.Resampling.BILINEAR).save(path, quality=90)
    fast = images.read_rgb(path, (24, 32))
    with Image.open(path) as img:
        full = np.asarray(img.convert("RGB").resize((32, 24), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    assert np.abs(fast - full).mean() < 0.03


PEAK_RSS = """
import importlib.util, sys
from PIL import Image
spec = importlib.util.spec_from_file_location("images", sys.argv[3])  # not the package: its imports cost more
images = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)
with open("/proc/self/clear_refs", "w") as fh:  # peak RSS starts here: not the imports, not the parent's
    fh.write("5")
if sys.argv[2] == "full":
    with Image.open(sys.argv[1]) as img:
        img.convert("RGB").resize((32, 32))
else:
    images.read_rgb(sys.argv[1], (32, 32))
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
"""


def peak_rss_kib(path: Path, how: str) -> int:
    """Peak resident memory (KiB, VmHWM after imports) of a fresh process reading ``path`` at 32x32.

    ``how``: ``full`` (decode everything, then resize) or ``fast`` (``read_rgb``). ru_maxrss would not do: on
    Linux a child started from pytest inherits the parent's high-water mark across exec.
    """
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path), how, images.__file__], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.split()[-1])


def test_huge_jpeg_read_small_does_not_hold_full_pixels(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (4000, 4000), (90, 160, 30)).save(path, quality=50)  # 48 MB decoded
    assert peak_rss_kib(path, "full") - peak_rss_kib(path, "fast") > 30_000


def test_split_folder_aliases_are_read_and_reported(tmp_path):
    for split in ("training_set", "Test_Set"):
        for label in ("apple", "pear"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / label / "a.png")
    index = dataset.index_dataset(tmp_path, workers=1)
    assert sorted(index.classes) == ["apple", "pear"]
    assert set(index.table["split"]) == {"train", "test"}
    assert "splits from folders: Test_Set -> test, training_set -> train" in dataset.format_summary(index)
    dataset.write_index(index, tmp_path / "out")
    assert dict(dataset.load_index(tmp_path / "out").split_folders) == {"Test_Set": "test", "training_set": "train"}


@pytest.mark.parametrize("name", ["train", "Training", "VALID", "val", "validation", "test", "TEST_SET"])
def test_every_split_alias_is_a_split(name):
    assert name.lower() in dataset.SPLIT_ALIASES


def test_list_images_and_unlabelled_rows(tmp_path):
    for rel in ("d1/a.jpg", "d2/a.jpg", "b.PNG", "d1/.hidden.jpg", ".cache/c.jpg", "d1/a.mask.png", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / rel, format="PNG") if rel != "notes.txt" else \
            (tmp_path / rel).write_text("x")
    found = images.list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["b.PNG", "d1/a.jpg", "d2/a.jpg"]
    from fruitlens.batch.rows import rows_from_inputs  # the rows explain and predict take from a folder

    rows = rows_from_inputs([tmp_path])
    assert rows["label"].isna().all() and rows["image_id"].is_unique and len(rows) == 3
    with pytest.raises(ValueError, match="not a directory"):
        images.list_images(tmp_path / "b.PNG")


def _same_name_dataset(root: Path) -> None:
    for rel in ("apple/d1/a.jpg", "apple/d2/a.jpg", "pear/a.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(rel), 0, 0)).save(root / rel)


def test_same_file_name_in_two_folders_gets_two_ids(tmp_path):
    _same_name_dataset(tmp_path)
    index = dataset.index_dataset(tmp_path, workers=1)
    assert len(index.table) == 3 and index.table["image_id"].is_unique


@pytest.fixture
def odd_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    _same_name_dataset(root)
    apple = root / "apple"
    os.mkfifo(apple / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(apple / "sock.jpg"))
    (apple / "passwd.jpg").symlink_to("/etc/passwd")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "o.jpg")
    (root / "linked").symlink_to(outside)  # a class folder linked from outside the root
    Image.new("RGB", (8, 8)).save(root / "pear" / "inside.jpg")
    (apple / "inside_link.jpg").symlink_to(root / "pear" / "inside.jpg")
    bad = os.fsdecode(b"caf\xff.jpg")
    Image.new("RGB", (8, 8)).save(os.path.join(apple, bad))
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 0), (255, 255, 255))]
    frames[0].save(apple / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.zeros((8, 8), dtype=np.float32), mode="F").save(apple / "float.tif")
    yield root
    sock.close()


EXPECTED = {
    "apple/fifo.jpg": "not_a_file", "apple/sock.jpg": "not_a_file", "apple/passwd.jpg": "outside_root",
    "linked/o.jpg": "outside_root", "apple/inside_link.jpg": "ok", "apple/caf\\xff.jpg": "bad_name",
    "apple/anim.gif": "animated", "apple/float.tif": "unsupported_mode", "apple/d1/a.jpg": "ok",
}


def test_odd_files_get_a_status_and_index_goes_on(odd_dir, monkeypatch, tmp_path):
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    index = dataset.index_dataset(odd_dir, workers=1)
    status = index.table.set_index("path")["status"]
    assert {p: status[p] for p in EXPECTED} == EXPECTED
    assert not [f for f in opened if "passwd" in f or "fifo" in f or "sock" in f]
    assert (index.table.loc[index.table["status"] == "outside_root", "sha256"] == "").all()
    assert "caf\\xff.jpg: bad_name" in dataset.format_summary(index)
    dataset.write_index(index, tmp_path / "out")  # parquet takes the escaped name
    assert dataset.index_dataset(odd_dir, workers=1, follow_external_links=True).table.set_index("path").loc[
        "linked/o.jpg", "status"] == "ok"


def test_index_command_reads_links_out_of_the_root_only_when_asked(odd_dir, tmp_path, capsys):
    from fruitlens.cli import main

    assert main(["index", str(odd_dir), "--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    refused = tables.read_table(tmp_path / "a" / "images.parquet").set_index("path")
    assert refused.loc["linked/o.jpg", "status"] == "outside_root"
    assert "--follow-external-links" in refused.loc["linked/o.jpg", "error"]
    assert main(["index", str(odd_dir), "--out", str(tmp_path / "b"), "--workers", "1",
                 "--follow-external-links"]) == 0
    assert tables.read_table(tmp_path / "b" / "images.parquet").set_index("path").loc["linked/o.jpg", "status"] == "ok"


@pytest.mark.parametrize(("name", "status"), [("fifo.jpg", "not_a_file"), ("sock.jpg", "not_a_file"),
                                              ("anim.gif", "animated"), ("float.tif", "unsupported_mode")])
def test_every_reader_refuses_what_index_refuses(odd_dir, name, status):
    path = odd_dir / "apple" / name
    assert dataset.check_file(str(path))["status"] == status
    with pytest.raises(images.ImageRefused, match=name) as info:
        images.read_rgb(path, (8, 8))
    assert info.value.status == status
    with pytest.raises(ValueError):
        images.open_image(path)


@pytest.mark.parametrize("name", ["../../../etc/cron.d/x.jpg", "/abs/olute.png", "..jpg", ".hidden.jpg",
                                  "a/../../b.jpg", "con\x00trol\n.jpg", "ünï çødé ✓.jpg", "x" * 300 + ".jpg"])
def test_picture_names_never_leave_their_folder(name, tmp_path):
    from fruitlens.layout import ExplainLayout, picture_stem

    stem = picture_stem(name, "1c5939efdeadbeef")
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and stem.endswith("-1c5939ef")
    assert len(stem) <= 50 and stem.isprintable()
    out = ExplainLayout(tmp_path)
    for picture in (out.picture("lime", stem, "outline"), out.side_by_side(stem)):
        assert picture.resolve().is_relative_to(tmp_path.resolve())


# ---------------------------------------------------------------- decoded pixels bounded per image and picture

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_an_annotated_copy_is_drawn_at_a_bounded_size():
    from fruitlens.overlays import ANNOTATED_MAX_SIDE, annotate

    strip = annotate(np.zeros((1, 65535, 3), np.uint8), "a 99%")  # a 65535x1 PNG: not enlarged to 10.5 M x 160
    assert strip.shape[1] == 65535 and strip.shape[0] == 160
    small = annotate(np.zeros((1, 700, 3), np.uint8), "a 99%")
    assert max(small.shape[:2]) <= ANNOTATED_MAX_SIDE and small.shape[0] >= 160
    assert annotate(np.zeros((20, 20, 3), np.uint8), "a").shape == (160, 160, 3)  # small photos still enlarged


@pytest.mark.slow
def test_predict_of_a_65535x1_png_stays_in_bounded_memory(tmp_path):
    """270 bytes of PNG once took predict to 16.7 GB (its annotated copy enlarged to 10.5 M x 160 pixels)."""
    from tests.helpers import run_measured, tiny_run

    run = tiny_run(tmp_path / "run")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (65535, 1), (200, 40, 40)).save(photos / "strip.png")
    Image.new("RGB", (30, 20), (40, 200, 40)).save(photos / "ok.png")
    assert (photos / "strip.png").stat().st_size < 1000
    rc, out, peak = run_measured([sys.executable, "-m", "fruitlens", "predict", str(photos), "--model", str(run),
                                  "--out", str(tmp_path / "out")], env=_env(), timeout=300)
    assert rc == 0, out
    assert peak < 1500 << 20, f"peak RSS {peak / 2**20:.0f} MiB"  # TensorFlow itself takes ~500-700 MiB
    copies = sorted((tmp_path / "out" / "annotated").glob("*.png"))
    assert len(copies) == 2
    for copy in copies:
        with Image.open(copy) as img:
            assert img.width * img.height <= 65535 * 160


@pytest.mark.slow
def test_superpixels_of_an_8000x7999_jpeg_work_at_a_bounded_resolution(tmp_path):
    """Once >5.1 GB (segmented at full resolution); now under a 2 GiB address-space limit set here."""
    from tests.helpers import run_measured

    big = tmp_path / "big.jpg"
    code = ("import sys; from PIL import Image; import numpy as np\n"
            "row = (np.arange(8000) % 256).astype('uint8')\n"
            "img = Image.fromarray(np.broadcast_to(row[None, :, None], (7999, 8000, 3)).copy())\n"
            "img.save(sys.argv[1], quality=80)\n")
    subprocess.run([sys.executable, "-c", code, str(big)], check=True)
    rc, out, peak = run_measured([sys.executable, "-m", "fruitlens", "superpixels", str(big), "--out",
                                  str(tmp_path / "out")], memory_limit=2 << 30, env=_env(), timeout=300)
    assert rc == 0 and "wrote 1 images" in out, out
    assert peak < 1 << 30, f"peak RSS {peak / 2**20:.0f} MiB"
    with Image.open(tmp_path / "out" / "big_superpixels.png") as img:
        assert max(img.size) <= 2048


def _hostile_photo_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of photos with a good photo, a link leading outside, a link loop, a broken link and a file
    whose name is not UTF-8; and the outside file."""
    folder, outside = tmp_path / "photos", tmp_path / "private" / "secret.png"
    folder.mkdir()
    outside.parent.mkdir()
    Image.new("RGB", (12, 10), (200, 30, 30)).save(folder / "good.png")
    Image.new("RGB", (12, 10), (30, 200, 30)).save(outside)
    (folder / "out.png").symlink_to(outside)
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "broken.png").symlink_to(folder / "gone.png")
    Image.new("RGB", (12, 10), (30, 30, 200)).save(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    return folder, outside


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_links_loops_and_bad_names_in_a_photo_folder_are_per_file_statuses(command, tmp_path, capsys):
    from fruitlens.cli import main
    from tests.helpers import tiny_run

    folder, outside = _hostile_photo_folder(tmp_path)
    run = tiny_run(tmp_path / "run")
    out = tmp_path / "out"
    args = {"predict": ["predict", str(folder), "--model", str(run), "--out", str(out)],
            "explain": ["explain", "--model", str(run), "--data", str(folder), "--out", str(out),
                        "--method", "gradcam"]}[command]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "out.png: links to" in err and "outside the dataset root; not read (outside_root)" in err
    assert "loop.png: a link loop" in err and "broken.png: a broken link" in err
    assert "caf\\xe9.png: file name is not valid UTF-8" in err and "Traceback" not in err
    table = tables.read_table(out / ("predictions.parquet" if command == "predict" else "gradcam.parquet"))
    assert list(table["path"].map(lambda p: Path(p).name)) == ["good.png"]  # only it was read
    assert not any(str(outside) in str(p) for p in table["path"])
