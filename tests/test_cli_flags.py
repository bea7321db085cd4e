"""The command line's flags are consistent: one meaning per name across commands, `--data` everywhere data is
read (index, predict, superpixels also positionally), `--verbose` anywhere, `--version`, train's defaults are
the pipeline's, every option has help and shows its default, and an option pair that cannot work is refused in
one line (issue 27, item 8)."""

import argparse

import pytest

from fruitlens import __version__
from fruitlens.cli import DefaultsFormatter, all_commands, build_parser, main, not_shown
from fruitlens.config import DEMO_TRAIN, PipelineConfig
from fruitlens.errors import OptionError
from fruitlens.lime_options import LimeOptions
from fruitlens.method_options import OcclusionOptions


def _parse(*argv):
    return build_parser(all_commands()).parse_args(list(argv))


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(all_commands())
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


EXPLAIN = ["explain", "--model", "m", "--data", "d", "--out", "o"]


def test_renamed_flags_carry_their_one_meaning():
    from fruitlens.cli.explain import explain_options
    from fruitlens.cli.model import _train_config

    options = explain_options(_parse(*EXPLAIN, "--opacity", "0.3", "--model-batch", "7"))
    assert options.gradcam.alpha == 0.3 and options.lime.batch_size == 7 and options.gradcam.batch_size == 7
    assert _train_config(_parse("train", "--data", "d", "--out", "o", "--width-multiplier", "0.5")).alpha == 0.5
    assert _parse("superpixels", "a.png", "--out", "o", "--segmenter", "quickshift").segmenter == "quickshift"
    assert _parse("superpixels", "a.png", "--out", "o", "--image-size", "20x30").size == "20x30"
    assert _parse("superpixels", "a.png", "--out", "o", "--size", "20x30").size == "20x30"  # the old name, same meaning


@pytest.mark.parametrize("command", ["explain", "sanity"])
def test_method_is_one_spelling_with_the_old_one_as_its_alias(command):
    base = [command, "--model", "m", "--data", "d", "--out", "o"]
    assert _parse(*base, "--method", "gradcam").method == "gradcam"
    assert _parse(*base, "--methods", "gradcam,lime").method == "gradcam,lime"


@pytest.mark.parametrize("argv, new", [
    ([*EXPLAIN, "--alpha", "0.3"], "--opacity"),
    ([*EXPLAIN, "--batch-size", "8"], "--model-batch"),
    (["train", "--data", "d", "--out", "o", "--alpha", "0.5"], "--width-multiplier"),
    (["superpixels", "a.png", "--out", "o", "--method", "slic"], "--segmenter"),
])
def test_an_old_spelling_that_now_means_something_else_is_refused_in_one_line(argv, new, tmp_path, capsys):
    argv = [str(tmp_path / v) if v in ("d", "o", "m", "a.png") else v for v in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"renamed; expected {new}" in err and err.startswith(f"fruitlens {argv[0]}: error")
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"fruitlens {__version__}"


def _required(parser) -> list[str]:
    """The smallest argument list the command's parser accepts (each required option and argument once)."""
    argv = []
    for action in parser._actions:
        value = str(action.choices[0]) if action.choices else "x"
        if action.option_strings and action.required:
            argv += [action.option_strings[0], value]
        elif not action.option_strings and action.nargs in (None, "+"):
            argv.append(value)
    return argv


@pytest.mark.parametrize("command", sorted(all_commands()))
def test_verbose_before_or_after_the_command(command):
    sub = _subparsers()[command]
    args = _required(sub)
    assert _parse("--verbose", command, *args).verbose is True
    assert _parse(command, *args, "--verbose").verbose is True
    assert _parse(command, *args, "-v").verbose is True
    assert _parse(command, *args).verbose is False


def test_index_and_predict_take_data_as_flag_or_argument(demo_dir, tmp_path, capsys):
    assert main(["index", "--data", str(demo_dir), "--out", str(tmp_path / "a")]) == 0
    assert main(["index", str(demo_dir), "--out", str(tmp_path / "b")]) == 0  # the contract's spelling
    assert (tmp_path / "a" / "images.parquet").read_bytes() == (tmp_path / "b" / "images.parquet").read_bytes()
    capsys.readouterr()
    photo = str(demo_dir / "Test" / "red_dot" / "0000.jpg")
    for argv, words in ((["index", str(demo_dir), "--data", str(demo_dir)], "the data given twice"),
                        (["index"], "no data given; expected DATA_DIR or --data"),
                        (["predict", photo, "--data", photo, "--model", "m"], "the data given twice"),
                        (["predict", "--model", "m"], "no data given; expected FILES or --data")):
        assert main([*argv, "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "c").exists()


def test_superpixels_takes_data_as_flag_or_argument(demo_dir, tmp_path, capsys):
    photo = str(demo_dir / "Test" / "red_dot" / "0000.jpg")
    assert main(["superpixels", "--data", photo, "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "0000_superpixels.png").is_file()
    assert main(["superpixels", photo, "--data", photo, "--out", str(tmp_path / "b")]) == 2
    assert "IMAGE " in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_predict_reads_data_given_as_a_flag(monkeypatch, demo_dir, tmp_path):
    import fruitlens.batch.rows as rows

    seen = []

    def stop(paths, read_as):
        seen.append(list(paths))
        return [], []

    monkeypatch.setattr(rows, "files_and_labels", stop)
    photo = demo_dir / "Test" / "red_dot" / "0000.jpg"
    assert main(["predict", "--data", str(photo), "--model", str(tmp_path / "m.keras"), "--classes", "a",
                 "--image-size", "8", "--out", str(tmp_path / "o")]) == 2  # no files found: after the data was read
    assert seen == [[photo]]


def test_train_defaults_are_the_pipelines():
    from fruitlens.cli.model import _train_config

    assert _train_config(_parse("train", "--data", "d", "--out", "o")) == PipelineConfig().train
    train = PipelineConfig().train
    assert (train.arch, train.image_size, train.epochs) == (DEMO_TRAIN["arch"], DEMO_TRAIN["image_size"],
                                                            DEMO_TRAIN["epochs"])
    assert _train_config(_parse("train", "--data", "d", "--out", "o", "--arch", "seed_cnn", "--image-size", "20",
                                "--epochs", "10")).arch == "seed_cnn"  # the contract's flags


def _expanded_help(parser, action) -> str:
    formatter = DefaultsFormatter(parser.prog)
    return formatter._expand_help(action) if action.help else ""


@pytest.mark.parametrize("command", sorted(all_commands()))
def test_every_option_has_help_and_shows_its_default(command):
    parser = _subparsers()[command]
    missing, hidden_default = [], []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = _expanded_help(parser, action)
        if not text.strip():
            missing.append(name)
            continue
        default = action.default
        if not_shown(default) or action.nargs == "+":
            continue
        shown = {str(default), f"{default:g}" if isinstance(default, float) else str(default)}
        if not any(s in text for s in shown) or "default" not in text.lower():
            hidden_default.append(f"{name} ({default!r}): {text}")
    assert missing == [] and hidden_default == []


def test_image_size_reads_as_pixels_in_every_help():
    for command, parser in _subparsers().items():
        for action in parser._actions:
            if "--image-size" in action.option_strings:
                assert action.metavar == "PX", command
                assert "PX" in parser.format_help() and "MODEL_IMAGE_SIZE" not in parser.format_help()


def test_lime_min_samples_above_num_samples_is_refused():
    with pytest.raises(OptionError, match=r"min_samples 256: expected at most num_samples 200"):
        LimeOptions(num_samples=200, min_samples=256)
    assert LimeOptions(num_samples=200, min_samples=256, adaptive=False).num_samples == 200  # no floor to reach
    assert LimeOptions(num_samples=200).min_samples == 200 and LimeOptions().min_samples == 256  # the default follows
    assert LimeOptions(**{f: getattr(LimeOptions(num_samples=64), f) for f in ("num_samples", "min_samples")}) \
        == LimeOptions(num_samples=64)  # the resolved floor survives a round trip
    partial = PipelineConfig.from_dict({"explain_options": {"lime": {"num_samples": 50}}})  # a budget alone: fine
    assert partial.explain_options.lime.min_samples == 50
    assert PipelineConfig.from_dict(partial.to_dict()) == partial
    with pytest.raises(OptionError, match=r"explain_options.lime.min_samples 300: expected at most num_samples 100"):
        PipelineConfig.from_dict({"explain_options": {"lime": {"num_samples": 100, "min_samples": 300}}})
    with pytest.raises(OptionError, match=r"stride 9: expected at most window 8"):
        OcclusionOptions(window=8, stride=9)


def test_lime_min_samples_above_num_samples_is_one_line_on_the_command_line(demo_dir, tmp_path, capsys):
    base = ["explain", "--model", str(tmp_path / "m"), "--data", str(demo_dir), "--out", str(tmp_path / "o")]
    for extra, words in ((["--num-samples", "100", "--min-samples", "300"],
                          "--min-samples 300: expected at most num_samples 100"),
                         (["--num-samples", "100", "--set", "lime.min_samples=300"],
                          "lime.min_samples 300: expected at most num_samples 100")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err


def test_counts_agree_with_their_number():
    from fruitlens.cli.common import count

    assert (count(1, "image"), count(0, "image"), count(1200, "layer")) == ("1 image", "0 images", "1,200 layers")
