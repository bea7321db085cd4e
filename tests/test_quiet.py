"""TensorFlow's start-up lines stay out of the CLI's stderr, and nothing else written then is lost."""

import os
import subprocess
import sys

from fruitlens.cli.quiet import stderr_filtered


def test_the_filter_drops_only_the_start_up_lines(capfd):
    with stderr_filtered():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"a real problem\n")
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "a real problem\n" in err and "from python\n" in err
    assert "oneDNN" not in err and "absl" not in err


def test_importing_tensorflow_after_quiet_libraries_prints_no_start_up_lines():
    code = ("import sys; from fruitlens.cli import quiet_libraries; quiet_libraries(False); "
            "import keras, tensorflow as tf; print('after', file=sys.stderr); "
            "assert type(tf.__loader__).__name__ == 'SourceFileLoader', tf.__loader__; "
            "assert float(tf.constant(1.0) + 1) == 2.0")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "after", proc.stderr
