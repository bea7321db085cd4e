"""The `fruitlens` command.

Each subcommand has an ``_add_<name>`` (its arguments) and a ``_cmd_<name>`` (what it runs), in the module of
its concern (``data``, ``model``, ``explain``). Commands that run Prefect flows (``run``, ``demo``, ``serve``,
``cache``) live with the flows and plug in through the ``fruitlens.commands`` entry point group, so this
library never imports Prefect. Handlers import what they need lazily, so ``fruitlens --help`` starts fast.
Bad input ends in one line on stderr, ``fruitlens <cmd>: error: <reason>``, and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Sequence

from fruitlens.cli import data, explain, model, sanity
from fruitlens.cli.common import CommandError, check_renamed, check_shared_flags
from fruitlens.cli.quiet import quiet_tensorflow_import

__all__ = ["COMMANDS", "CommandError", "build_parser", "main"]

ENTRY_POINTS = "fruitlens.commands"


def _plugin_commands() -> dict[str, tuple[Callable, Callable]]:
    """Commands other packages add (the pipeline's run, demo, serve, cache)."""
    found: dict[str, tuple[Callable, Callable]] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        found.update(entry.load())
    return found


COMMANDS: dict[str, tuple[Callable, Callable]] = {**data.COMMANDS, **model.COMMANDS, **explain.COMMANDS,
                                                  **sanity.COMMANDS}


def all_commands() -> dict[str, tuple[Callable, Callable]]:
    return {**COMMANDS, **_plugin_commands()}


def not_shown(default) -> bool:
    """A default with nothing to say: none, an off switch, an empty list (0 and 0.0 are said)."""
    return default is None or default is False or default is argparse.SUPPRESS or default == []


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's default in its help, unless the help already says it (or there is nothing to say:
    no default, an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or not_shown(action.default):
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return f"{text} (default: %(default)s)".strip()


VERBOSE_HELP = "log more (and TensorFlow's own messages); before or after the command"


def build_parser(commands: dict[str, tuple[Callable, Callable]] | None = None) -> argparse.ArgumentParser:
    from fruitlens import __version__

    parser = argparse.ArgumentParser(prog="fruitlens", description="Train image classifiers and explain them.")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"fruitlens {__version__}",
                        help="print the version of fruitlens and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def add_with_defaults(name, **kwargs):  # every command's --help shows its defaults
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        p = add_parser(name, **kwargs)
        # --verbose after the command too; SUPPRESS: left out there, the value given before the command stays
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        return p

    sub.add_parser = add_with_defaults
    for add, _ in (commands or all_commands()).values():
        add(sub)
    return parser


def quiet_libraries(verbose: bool) -> None:
    """TensorFlow's start-up lines and Prefect's telemetry stay out of the way unless asked for."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    # no telemetry from the temporary Prefect server: these machines have no network (one error line per run)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's temporary server waits 20 s for itself by default: too little on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        quiet_tensorflow_import()  # the lines no log level silences (oneDNN's, on Intel CPUs)
        # Keras' "N out of the last M calls triggered tf.function retracing" advice is for developers
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


class RunFormatter(logging.Formatter):
    """Log lines that name the flow or task run they come from (orchestrators attach the run's name)."""

    def format(self, record: logging.LogRecord) -> str:
        who = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        text = super().format(record)
        return f"{who}: {text}" if who else text


def _first_line(record: logging.LogRecord) -> bool:
    """Keep an orchestrator's error lines to their first line (the traceback is for ``--verbose``)."""
    text = record.getMessage()
    if "\n" in text or record.exc_info:
        record.msg, record.args, record.exc_info, record.exc_text = text.splitlines()[0], (), None, None
    return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes, not the one it was created with: a caller that
    swaps stderr and closes its replacement (pytest's capture, a notebook) leaves no handler on a closed file."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(RunFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    if not verbose:
        handler.addFilter(_first_line)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in ("prefect.flow_runs", "prefect.task_runs"):  # the progress lines of flow and task runs
        logging.getLogger(name).setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    commands = all_commands()
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    quiet_libraries(args.verbose)
    from fruitlens.cli.common import is_ours, one_line

    try:
        check_renamed(args)
        check_shared_flags(args)
        return commands[args.command][1](args)
    except (CommandError, ValueError) as exc:  # bad input, ours or a library's: one line (--verbose: a bug's trace)
        if args.verbose and not is_ours(exc):
            raise
        print(f"fruitlens {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a vanished folder mid-run: one line, nothing half-written
        if args.verbose:
            raise
        print(f"fruitlens {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fruitlens {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
