"""The import structure: no circle, and imports only point down the layers listed in ``LAYERS`` (read with ast,
imports inside functions included, so lazy imports count as much as top-level ones)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom up (the project's design notes, "Layers"): a module may import its own layer or a lower one, never a higher one
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors and typed helpers", ("fruitlens", "fruitlens.errors", "fruitlens.typed", "fruitlens.tables",
                                  "fruitlens.pngs", "fruitlens.images", "fruitlens.sizes")),
    ("value objects", ("fruitlens.layout", "fruitlens.modelspec", "fruitlens.card", "fruitlens.augment",
                       "fruitlens.archs",
                       "fruitlens.keras_apps", "fruitlens.segmenter_params")),
    ("config and the method registry", ("fruitlens.method_options", "fruitlens.lime_options", "fruitlens.registry",
                                        "fruitlens.config")),
    ("Keras-facing library", ("fruitlens.*",)),
    ("explain", ("fruitlens.explain", "fruitlens.explain.*")),
    ("batch and run-level summaries", ("fruitlens.batch", "fruitlens.batch.*", "fruitlens.summary", "fruitlens.nights",
                                       "fruitlens.alerts", "fruitlens.promotion")),
    ("report and cli", ("fruitlens.report", "fruitlens.report.*", "fruitlens.cli", "fruitlens.cli.*",
                        "fruitlens.__main__")),
    ("tasks", ("tasks", "tasks.*")),
    ("flows", ("flows", "flows.*")),
]
BELOW_KERAS = 3  # the layers under "Keras-facing library" import neither keras nor tensorflow


def module_files() -> dict[str, Path]:
    out = {}
    for top in ("fruitlens", "tasks", "flows"):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every module name ``path`` imports, anywhere in the file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def layer_of(name: str) -> int:
    exact = [i for i, (_, patterns) in enumerate(LAYERS) if name in patterns]
    if exact:
        return exact[0]
    prefixed = [(len(p), i) for i, (_, patterns) in enumerate(LAYERS) for p in patterns
                if p.endswith(".*") and name.startswith(p[:-1])]
    return max(prefixed)[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: {m for m in imports_of(name, path) if m in files and m != name and not name.startswith(m + ".")}
            for name, path in files.items()}


def test_every_module_has_a_layer(graph):
    assert all(0 <= layer_of(m) < len(LAYERS) for m in graph)
    assert layer_of("fruitlens.config") == 2 and layer_of("fruitlens.explain.lime") == 4
    assert layer_of("fruitlens.modelio") == 3 and layer_of("fruitlens.batch.engine") == 5


def test_no_import_points_up(graph):
    upward = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                    for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a))
    assert not upward, "\n".join(upward)


def test_no_import_circle(graph):
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_nothing_below_the_keras_layer_imports_keras():
    files = module_files()
    heavy = sorted(f"{name} imports {m}" for name, path in files.items() if layer_of(name) < BELOW_KERAS
                   for m in imports_of(name, path) if m.split(".")[0] in ("keras", "tensorflow"))
    assert not heavy, heavy


def test_options_and_the_registry_import_no_algorithm(graph):
    """The registry names its explainers as "module:Class" strings and imports them only when one is built."""
    from fruitlens.registry import METHODS

    for name in ("fruitlens.registry", "fruitlens.lime_options", "fruitlens.method_options", "fruitlens.config"):
        assert not {m for m in graph[name] if m.startswith("fruitlens.explain")}, name
    assert {spec.explainer.split(":")[0] for spec in METHODS.values()} <= set(graph)


def test_the_evaluate_task_code_digest_leaves_lime_out():
    """Editing LIME (its algorithm, its options, its superpixels) leaves cached evaluations valid, and editing an
    explainer leaves cached training valid; the explain task's digest follows every registered explainer."""
    from fruitlens.digests import import_closure
    from fruitlens.registry import METHODS

    lime = {"fruitlens.explain.lime", "fruitlens.explain.lime_fit", "fruitlens.explain.segmentation",
            "fruitlens.lime_options", "fruitlens.segmenter_params"}
    evaluate = dict(import_closure("tasks.evaluate"))
    assert "fruitlens.inference" in evaluate and not lime & set(evaluate), sorted(lime & set(evaluate))
    assert lime <= set(dict(import_closure("tasks.explain")))
    batch = set(dict(import_closure("fruitlens.batch.methods")))
    assert {spec.explainer.split(":")[0] for spec in METHODS.values()} <= batch  # batch.methods._explainer_code
    assert not {m for m in dict(import_closure("tasks.train")) if m.startswith("fruitlens.explain")}


def test_one_table_of_keras_applications():
    """``imagenet:<app>`` and ``transfer:<backbone>`` read the one table in fruitlens.keras_apps: no other module
    names a ``keras.applications`` constructor (``"VGG16"``, ``applications.VGG16``) or one of its weight files
    (a second table would)."""
    from fruitlens import archs, models
    from fruitlens.keras_apps import KERAS_APPS

    assert archs.BACKBONE_NAMES == tuple(KERAS_APPS) and not hasattr(models, "BACKBONES")
    constructors = {app.constructor for app in KERAS_APPS.values()}
    copies = []
    for name, path in module_files().items():
        if name == "fruitlens.keras_apps":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
            if (isinstance(node, ast.Attribute) and node.attr in constructors or text in constructors
                    or text and ("weights_tf_dim_ordering" in text or text.endswith("_notop.h5"))):
                copies.append(f"{name}:{node.lineno}")
    assert not copies, copies


# one module's own list per module by design: each command module's commands, each page's sections
PER_MODULE_NAMES = {"COMMANDS", "SECTIONS"}


def test_a_constant_name_means_one_thing():
    """No two modules define the same upper-case name (``METHODS`` once meant the method registry, the method
    names and the superpixel methods; ``MODES`` training modes and preprocessing modes)."""
    homes: dict[str, list[str]] = {}
    for name, path in module_files().items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            body = node.body if isinstance(node, ast.ClassDef) else [node]
            for item in body:
                targets = (item.targets if isinstance(item, ast.Assign)
                           else [item.target] if isinstance(item, ast.AnnAssign) else [])
                for target in targets:
                    if isinstance(target, ast.Name) and target.id.isupper() and len(target.id) > 2:
                        homes.setdefault(target.id, []).append(name)
    twice = {k: v for k, v in homes.items() if len(v) > 1 and k not in PER_MODULE_NAMES}
    assert not twice, twice


# a facade by design, to be split by the pictures' owner: the picture API (captions, overlays) lives in plots
FACADES = {"fruitlens.plots"}


def test_names_are_imported_from_their_home():
    """A module does not re-export another fruitlens module's names (an import it does not use), and nobody
    imports a name from a module that only imported it: each name has one home, and everyone imports it there."""
    files = module_files()
    for top in ("tests", "benchmarks", "scripts"):
        files.update({f"{top}.{p.stem}": p for p in (ROOT / top).glob("*.py")})
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in files.items()}
    defined: dict[str, set[str]] = {}
    for name, tree in trees.items():
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node in tree.body:
                found.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found.update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found.add(node.name)
        defined[name] = found
    reexports, elsewhere = [], []
    for name, tree in trees.items():
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in defined
                    and node.module.startswith("fruitlens")):
                continue
            for alias in node.names:
                if f"{node.module}.{alias.name}" in files:
                    continue  # a submodule
                if alias.name not in defined[node.module] and node.module not in FACADES:
                    elsewhere.append(f"{name}:{node.lineno} imports {alias.name} from {node.module}, not its home")
                if (name.startswith("fruitlens") and node in tree.body and (alias.asname or alias.name) not in used
                        and name not in FACADES):
                    reexports.append(f"{name}:{node.lineno} re-exports {alias.name} of {node.module}")
    assert not reexports, reexports
    assert not elsewhere, elsewhere
