"""Content digests: of files, folder trees, dataset rows, run folders, and of code.

The code version of a step is the digest of its *import closure*: the source of the module that runs it and of
every project module it imports, directly or indirectly, at the top or inside a function (found by reading the
source with ``ast``, nothing is imported). A cache key built from it changes whenever any code the step can run
changes; nobody keeps a list of modules by hand.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import cache, lru_cache
from pathlib import Path

import pandas as pd

PROJECT_PACKAGES = ("fruitlens", "tasks", "flows")


# ------------------------------------------------------------------------------------ files and data


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest_cached(path: str | os.PathLike) -> str:
    """``file_digest``, remembered per (path, size, mtime) in this process (models are hashed once, not per chunk)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = file_digest(path)
    return _FILE_DIGESTS[key]


def text_digest(*parts: object) -> str:
    """sha256 of the parts' ``str`` joined by newlines (short, stable keys from plain values)."""
    return hashlib.sha256("\n".join(map(str, parts)).encode("utf-8", "surrogateescape")).hexdigest()


def tree_digest(data_dir: str | os.PathLike) -> str:
    """Cheap digest of a folder tree: relative path, size and mtime of every file (no file is read).

    A cache key for indexing: any added, removed, rewritten or touched file changes it.
    """
    root = Path(data_dir).expanduser().resolve()
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = os.path.relpath(dirpath, root)  # once per folder: relpath per file cost most of the time
        prefix = "" if folder == "." else folder + os.sep
        for name in filenames:
            try:
                st = os.stat(os.path.join(dirpath, name))
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = -1, -1
            entries.append(f"{prefix}{name}\t{size}\t{mtime}")
    h = hashlib.sha256(str(root).encode("utf-8", "surrogateescape"))
    for entry in sorted(entries):
        h.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def rows_digest(rows: pd.DataFrame) -> str:
    """Digest of (path, split, label, sha256) of ``rows`` in path order."""
    h = hashlib.sha256()
    for row in rows.sort_values("path")[["path", "split", "label", "sha256"]].itertuples(index=False):
        h.update("\t".join(map(str, row)).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def split_digests(index_dir: str | os.PathLike) -> dict[str, str]:
    """Content digests of an index folder: ``fit`` (train and val rows), ``all``, and one per split.

    Training depends only on ``fit``; evaluation and explanation only on their split, so changing a test
    image leaves the model alone.
    """
    from fruitlens.dataset import load_index

    index = load_index(index_dir)
    ok = index.usable
    out = {"fit": rows_digest(ok[ok["split"].isin(["train", "val"])]), "all": index.fingerprint}
    for split in sorted(set(ok["split"])):
        out[split] = rows_digest(ok[ok["split"] == split])
    return out


def run_digest(run_dir: str | os.PathLike, skip: Sequence[str] | None = None) -> str:
    """Digest of every file of a run folder that a report shows.

    Leaves out the top-level names in ``skip`` (default ``layout.NOT_REPORTED``: the report, checkpoints,
    ...), hidden files and the ``*.parts`` folders; of run.json, the keys that describe one invocation
    (``layout.PER_INVOCATION_KEYS``: timings, the decision), so an unchanged rerun gives the same digest.
    """
    from fruitlens.layout import NOT_REPORTED, PER_INVOCATION_KEYS, RUN_RECORD_FILE

    skip = NOT_REPORTED if skip is None else skip
    root = Path(run_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.parts[0] in skip or any(part.endswith(".parts") or part.startswith(".") for part in rel.parts):
            continue
        if rel.as_posix() == RUN_RECORD_FILE:
            digest = text_digest(_without_keys(path, PER_INVOCATION_KEYS))
        else:
            digest = file_digest(path)
        h.update(f"{rel.as_posix()}\t{digest}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _without_keys(json_path: Path, keys: Sequence[str]) -> str:
    """A JSON object file's text without ``keys`` (sorted keys); the file's text when it is not an object."""
    import json

    text = json_path.read_text(encoding="utf-8", errors="surrogateescape")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict):
        return text
    return json.dumps({k: v for k, v in data.items() if k not in keys}, sort_keys=True, default=str)


# ------------------------------------------------------------------------------------ code


@cache
def _roots() -> tuple[Path, ...]:
    """The folders holding the project's packages (the checkout's root in a development install)."""
    found = []
    for package in PROJECT_PACKAGES:
        spec = importlib.util.find_spec(package)  # top-level packages only: importing them is cheap
        if spec is not None and spec.submodule_search_locations:
            found += [Path(p).parent for p in spec.submodule_search_locations]
    return tuple(dict.fromkeys(found))


@cache
def _module_file(name: str) -> Path | None:
    """The source file of a project module, found on disk without importing anything, or None.

    (``importlib.util.find_spec("a.b.c")`` would import ``a.b``, and with it TensorFlow for some modules.)
    """
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    for root in _roots():
        base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _import_statements(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at the top or nested in functions, classes, if/try/with/loops.

    Only statement bodies are visited (imports are statements), not the expressions of a whole ``ast.walk``,
    which costs more (benchmarks/README.md, "Figures once kept in the code").
    """
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                todo.extend(children)


@lru_cache(maxsize=4096)
def _imported_names(source: str, module: str, is_package: bool) -> frozenset[str]:
    """Module names a source file imports anywhere (top level or in functions), relative imports resolved.

    ``from pkg import x`` adds both ``pkg`` and ``pkg.x`` (x may be a submodule); names that are not
    modules are dropped later, when no file is found for them. Remembered per source text: the closures of
    the pipeline's tasks share most of their files, each is parsed once.
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_statements(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


_CLOSURE_LOCK = threading.Lock()  # CPython 3.11's ast.parse is not safe in concurrent threads


def import_closure(module: str) -> tuple[tuple[str, Path], ...]:
    """Every project module ``module`` can run: itself, its imports, theirs, ... with their files, sorted.

    Parent packages (their ``__init__``) are included, as importing a submodule runs them. Computed once per
    process and module (task threads share it).
    """
    with _CLOSURE_LOCK:
        return _closure(module)


@cache
def _closure(module: str) -> tuple[tuple[str, Path], ...]:
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(parents)
        todo.extend(_imported_names(read_source(path), name, path.name == "__init__.py"))
    return tuple(sorted(seen.items()))


def read_source(path: Path) -> str:
    """A module's source text (one place to read it, so a test can stand in an edited file)."""
    return path.read_text(encoding="utf-8")


def code_digest(modules: str | Iterable[str]) -> str:
    """Digest of the sources of the import closures of ``modules`` and the package version.

    Any edit to a module they import, directly or indirectly, changes it.
    """
    from fruitlens import __version__

    names = [modules] if isinstance(modules, str) else sorted(modules)
    files = sorted({item for name in names for item in import_closure(name)})
    h = hashlib.sha256(__version__.encode())
    for name, path in files:
        h.update(f"{name}\n".encode())
        h.update(read_source(path).encode("utf-8"))
    return h.hexdigest()[:16]
