import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FRUITS360 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fruits360"


@pytest.fixture(scope="session")
def fruits360_dir() -> Path:
    """The shared Fruits-360 copy; tests that need it skip cleanly where it is absent."""
    if not (FRUITS360 / "Training").is_dir():
        pytest.skip(f"Fruits-360 not present at {FRUITS360}")
    return FRUITS360


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small generated demo dataset (6 classes, 12 train + 4 test per class), shared by the session."""
    from fruitlens.synthetic import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=12, n_test=4)
