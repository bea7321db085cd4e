"""The commands that run Prefect flows: `fruitlens run`, `demo`, `serve` and `cache`.

They plug into the `fruitlens` command through the ``fruitlens.commands`` entry point group (pyproject.toml),
so the library in ``fruitlens/`` never imports Prefect or these flows. Options are validated (the pipeline
config built) before Prefect starts; a failure inside a flow run ends the command with one line and exit 1.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from fruitlens.cli.common import DEFAULT_DEMO_DIR, DEFAULT_DEMO_OUT, CommandError, count


class FlowFailed(Exception):
    """A flow run that failed: its one-line reason."""


def _add_pipeline_options(p) -> None:
    p.add_argument("--config", type=Path, default=None, help="pipeline config (YAML or JSON; PipelineConfig fields)")
    p.add_argument("--task-runner", choices=("thread", "dask"), default=None,
                   help="where explanation chunks run: a thread pool (default) or Dask (prefect-dask)")
    p.add_argument("--dask-address", default=None, help="Dask scheduler address (default: start a local cluster)")
    p.add_argument("--models-home", type=Path, default=None,
                   help="where the current model lives (default: <out>/../models/<out's name>, one per run folder; "
                        "name one folder to share it between run folders)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="task cache and results (default: $FRUITLENS_CACHE or $FRUITLENS_HOME/cache)")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline as one Prefect flow run")
    p.add_argument("--data", type=Path, required=True, help="dataset root")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    _add_pipeline_options(p)


def _pipeline_config(args, base=None):
    from fruitlens.config import PipelineConfig, load_config

    try:
        cfg = load_config(args.config) if args.config is not None else (base or PipelineConfig())
        changes = {k: v for k, v in (("task_runner", args.task_runner), ("dask_address", args.dask_address))
                   if v is not None}
        return cfg.replace(**changes) if changes else cfg
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _own_logging(args) -> None:
    """Configure Prefect's logging now, then put fruitlens' handler back on top of it.

    Prefect configures logging (a root console handler with its own format and full tracebacks) when it is
    first imported, which is after the CLI set up its own; without this, task lines do not name their task and
    a failure prints Prefect's traceback.
    """
    from prefect.logging.configuration import ensure_logging_setup

    from fruitlens.cli import setup_logging

    ensure_logging_setup()
    setup_logging(args.verbose)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _run_pipeline(args, data: Path, out: Path, cfg) -> int:
    """Run nightly_flow once (index, train, evaluate, explain, visualize, compare, report) and summarise."""
    if not data.is_dir():
        raise CommandError(f"--data {data}: no such folder; expected a dataset root")
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: is a file; expected a run folder")
    from prefect.settings import PREFECT_API_URL

    from flows.nightly import nightly_flow
    from flows.server import temporary_server
    from flows.settings import pipeline_settings
    from fruitlens.promotion import decision_line

    _own_logging(args)
    if not PREFECT_API_URL.value():
        print("note: PREFECT_API_URL is not set, so the runs go to a temporary Prefect server; start one with "
              "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api to watch them in the UI")
    from contextlib import ExitStack

    from fruitlens.locks import FolderBusy, folder_lock

    start = time.perf_counter()
    with ExitStack() as held:
        try:  # one `run` per run folder: a second one is refused before the server starts
            held.enter_context(folder_lock(out))
        except FolderBusy as exc:
            raise CommandError(str(exc)) from exc
        try:
            with temporary_server(), pipeline_settings(args.cache_dir):
                summary = nightly_flow(str(data), str(out), cfg.to_dict(),
                                       str(args.models_home) if args.models_home else None)
        except Exception as exc:  # noqa: BLE001 - whatever failed inside the flow run: one line, not a traceback
            print(f"fruitlens {args.command}: failed: {_one_line(exc)} (details in the Prefect UI and log above)",
                  file=sys.stderr)
            return 1
    seconds = time.perf_counter() - start
    timings = summary["timings"]
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    m = summary["metrics"]
    print(f"pipeline steps took {sum(timings.values()):.1f}s ({steps}); the command {seconds:.1f}s with Prefect")
    print(f"test accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} on {count(m['n'], 'image')}; "
          f"{decision_line(summary['decision'], summary['models_home'])}")
    if summary.get("note"):
        print(f"note: {summary['note']}")
    print(f"wrote {out} (run.json" + (", report.html)" if summary.get("report") else ")"))
    return 0


def check_dask_address(cfg, timeout: float = 5.0) -> None:
    """Refuse, before any step runs, a Dask scheduler that cannot be reached (not only after index and train)."""
    import socket
    from urllib.parse import urlsplit

    if cfg.task_runner != "dask" or not cfg.dask_address:
        return
    address = cfg.dask_address if "://" in cfg.dask_address else f"tcp://{cfg.dask_address}"
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port or 8786
    except ValueError:
        host = port = None
    if not host:
        raise CommandError(f"--dask-address {cfg.dask_address}: expected tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise CommandError(f"--dask-address {cfg.dask_address}: cannot connect ({exc.strerror or exc}); expected "
                           "a running Dask scheduler") from exc


def _cmd_run(args) -> int:
    cfg = _pipeline_config(args)
    check_dask_address(cfg)
    return _run_pipeline(args, args.data, args.out, cfg)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="generate the demo dataset and run the whole pipeline on it")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_DEMO_OUT),
                   help=f"run folder (default: {DEFAULT_DEMO_OUT})")
    p.add_argument("--data", type=Path, default=Path(DEFAULT_DEMO_DIR), help="where the demo dataset is written")
    p.add_argument("--train-per-class", type=int, default=200, help="demo images per class (training)")
    p.add_argument("--test-per-class", type=int, default=50, help="demo images per class (test)")
    _add_pipeline_options(p)


def _cmd_demo(args) -> int:
    """Generate the demo data (if absent) and run the whole pipeline on it, report included."""
    from fruitlens.synthetic import write_demo_dataset

    if not (args.data / "Training").is_dir():
        write_demo_dataset(args.data, n_train=args.train_per_class, n_test=args.test_per_class)
        print(f"wrote demo dataset to {args.data}")
    return _run_pipeline(args, args.data, args.out, _pipeline_config(args))


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve the nightly deployment (cron schedule); starts a Prefect server if none "
                                     "is configured")
    p.add_argument("--data", type=Path, default=Path(DEFAULT_DEMO_DIR), help="dataset root the nightly run reads")
    p.add_argument("--out", type=Path, default=Path("artifacts/nightly"), help="run folder the nightly run writes")
    p.add_argument("--cron", default="0 2 * * *", help='cron schedule (default "0 2 * * *": 02:00 every night)')
    p.add_argument("--timezone", default=None, help="time zone of the schedule (default: UTC)")
    p.add_argument("--name", default="nightly", help="deployment name")
    p.add_argument("--notify", default=None, metavar="BLOCK_TYPE/NAME",
                   help="a Prefect notification block the alert automations send through (e.g. slack-webhook/ops)")
    _add_pipeline_options(p)


def _configured_server() -> str | None:
    """``PREFECT_API_URL`` when set (a CommandError when nothing answers there), else None."""
    from prefect.settings import PREFECT_API_URL

    from flows.server import server_answers

    url = PREFECT_API_URL.value()
    if url and not server_answers(url):
        raise CommandError(f"PREFECT_API_URL {url}: no Prefect server answers there; start it (`prefect server "
                           "start`) or unset PREFECT_API_URL and fruitlens serve starts one of its own")
    return url or None


def _cmd_serve(args) -> int:
    """Register the nightly deployment with its schedule and run its flow runs as they come (blocks).

    Uses the server ``PREFECT_API_URL`` names; without one, starts a local ``prefect server start`` (database
    under ``$FRUITLENS_HOME/prefect``) for as long as it serves. Installs the alert automations first.
    """
    from contextlib import nullcontext

    url = _configured_server()
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron

    from fruitlens.config import fruitlens_home

    try:
        CronSchedule(cron=args.cron, timezone=args.timezone or "UTC")  # validates the expression and zone
        schedule = Cron(args.cron, timezone=args.timezone or "UTC")
    except ValueError as exc:
        raise CommandError(f"--cron {args.cron!r} --timezone {args.timezone}: expected a cron expression like "
                           "'0 2 * * *' and an IANA time zone") from exc
    if not args.data.is_dir():
        raise CommandError(f"--data {args.data}: no such folder; expected a dataset root (the demo's: "
                           f"`fruitlens demo-data {args.data}`)")
    cfg = _pipeline_config(args)
    params = {"data_dir": str(args.data.resolve()), "out_dir": str(args.out.resolve()), "config": cfg.to_dict(),
              "models_home": str(args.models_home.resolve()) if args.models_home else None}
    from flows.automations import AutomationError, install_automations
    from flows.nightly import nightly_flow
    from flows.server import local_server
    from flows.settings import pipeline_settings

    _own_logging(args)
    server = nullcontext() if url else local_server(fruitlens_home() / "prefect")
    with server as started:
        if started is not None:
            print(f"started a Prefect server for this serve: UI at {started.ui_url} (database {started.database}, "
                  f"log {started.log_path}); it stops when serve stops")
        try:
            installed = install_automations(args.notify)
        except AutomationError as exc:
            raise CommandError(str(exc)) from None
        print(f"alert automations: {len(installed.created)} created, {len(installed.updated)} updated"
              + (f", notifying through {args.notify}" if args.notify else " (no --notify block)"))
        print(f"serving nightly_flow as deployment nightly/{args.name} on cron {args.cron!r}: "
              f"{params['data_dir']} -> {params['out_dir']}")
        # served runs inherit the cache location through the environment
        with pipeline_settings(args.cache_dir), _sigterm_stops_like_ctrl_c():
            nightly_flow.serve(name=args.name, schedules=[schedule], parameters=params,
                               description="Nightly retraining: index, train, evaluate, explain, compare, report",
                               tags=["fruitlens", "nightly"])
    return 0


SIGTERM_GRACE = 60.0  # seconds serve may take to shut down after SIGTERM before it exits regardless


def _exit_after_grace() -> None:
    print(f"serve: still shutting down {SIGTERM_GRACE:.0f} s after SIGTERM; exiting now", file=sys.stderr, flush=True)
    os._exit(1)


@contextmanager
def _sigterm_stops_like_ctrl_c():
    """SIGTERM takes serve's Ctrl-C path. Prefect's runner stops itself from its SIGTERM handler through its loop
    thread (``Runner.stop``), which can deadlock: seen once in five suite runs, serve still there 120 s after a
    SIGTERM with "coroutine 'Runner.astop' was never awaited". A KeyboardInterrupt is handled by ``serve`` in the
    main thread, where a service manager's stop then ends the process as a Ctrl-C in a terminal does."""
    import threading

    from prefect.runner import Runner

    original = Runner.handle_sigterm

    def handle_sigterm(self, *args, **kwargs):
        self._logger.info("SIGTERM received, shutting down")
        # a service manager's stop must end the process: if Prefect's shutdown still hangs (seen once in six suite
        # runs after this path too: serve there 120 s on, the flow run finished, its log client retrying a server
        # already gone), go after SIGTERM_GRACE seconds; our server goes with us (parent-death signal)
        watchdog = threading.Timer(SIGTERM_GRACE, _exit_after_grace)
        watchdog.daemon = True
        watchdog.start()
        raise KeyboardInterrupt

    Runner.handle_sigterm = handle_sigterm
    try:
        yield
    finally:
        Runner.handle_sigterm = original


def _add_automations(sub) -> None:
    p = sub.add_parser("automations", help="install the alert automations on the Prefect server (PREFECT_API_URL)")
    p.add_argument("action", choices=("install",), help="install: create or update them by name")
    p.add_argument("--notify", default=None, metavar="BLOCK_TYPE/NAME",
                   help="a Prefect notification block they send through (e.g. slack-webhook/ops)")


def _cmd_automations(args) -> int:
    """Create or update the alert automations on the configured server (for prefect.yaml users)."""
    if _configured_server() is None:
        raise CommandError("PREFECT_API_URL is not set: expected the address of the Prefect server the nightly "
                           "deployment runs on, e.g. http://127.0.0.1:4200/api")
    from flows.automations import AutomationError, install_automations

    try:
        installed = install_automations(args.notify)
    except AutomationError as exc:
        raise CommandError(str(exc)) from None
    for name in installed.created:
        print(f"created automation {name!r}")
    for name in installed.updated:
        print(f"updated automation {name!r}")
    return 0


def _add_cache(sub) -> None:
    p = sub.add_parser("cache", help="show or clear the pipeline's task cache")
    p.add_argument("action", choices=("path", "clear"), help="path: print where it is; clear: delete it")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $FRUITLENS_CACHE or $FRUITLENS_HOME/cache")


def _cmd_cache(args) -> int:
    import shutil

    from fruitlens.config import CACHE_MARKER, cache_dir, is_marked_cache

    path = args.cache_dir or cache_dir()
    if args.action == "path":
        print(path)
        return 0
    if not path.exists() and not path.is_symlink():
        print(f"no task cache at {path}")
        return 0
    if not is_marked_cache(path):  # $FRUITLENS_CACHE=$HOME must never empty the home folder
        raise CommandError(f"--cache-dir {path}: not a fruitlens task cache (no {CACHE_MARKER} file that "
                           "fruitlens writes into the caches it creates); nothing deleted. Expected the folder "
                           "a run used as its cache")
    shutil.rmtree(path)
    print(f"cleared the task cache {path}")
    return 0


COMMANDS = {
    "run": (_add_run, _cmd_run),
    "demo": (_add_demo, _cmd_demo),
    "serve": (_add_serve, _cmd_serve),
    "automations": (_add_automations, _cmd_automations),
    "cache": (_add_cache, _cmd_cache),
}


def main(argv=None) -> int:
    """`python -m flows.commands ...`: the same as `fruitlens ...`."""
    from fruitlens.cli import main as fruitlens_main

    return fruitlens_main(argv)


if __name__ == "__main__":
    sys.exit(main())
