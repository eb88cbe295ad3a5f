"""The package's layers, read from its imports: the one table of which part of ``bpm`` may use which.

Every import of a ``bpm`` module counts: at module level, inside functions and methods, and under
``if TYPE_CHECKING`` (a type is a dependency too). A module may import its own layer and the layers
below it, never one above, and no two modules may import each other in a ring (a cycle), however
the imports are spread over function bodies. A new module must be placed in :data:`LAYERS` (the test
says so when it is not), which is where a reader learns where it belongs.

The scan is :mod:`ast` over the source, so it needs no import of ``bpm`` and sees function-local
imports that an import-time check would miss; the last tests plant a violation in a copy of a tiny
package to show that the scan does fail on one.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first: (layer, module prefixes, why it stands here). A module belongs to the layer of its
# longest matching prefix (``bpm`` itself matches only the package's ``__init__``).
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    ("ground", ("bpm", "bpm.errors", "bpm.files", "bpm.registry", "bpm.machine", "bpm.threads"),
     "what every layer may use and that uses nothing of bpm: the error type, atomic file writes, the "
     "name registry, the machine line, thread limits; `bpm` itself only holds __version__ and re-exports "
     "the public API lazily, by name"),
    ("device", ("bpm.precision", "bpm.distributed"),
     "where tensors live and how many processes share the work: needed by data loading, feature "
     "extraction and training alike, and needing nothing but torch"),
    ("models", ("bpm.models",),
     "networks, their input spec and the one loader (exported ONNX graphs included, run as a module)"),
    ("data", ("bpm.data",),
     "datasets, image decoding and transforms; transforms follow a model's InputSpec, hence above models"),
    ("settings", ("bpm.settings",), "the frozen groups run settings are composed of (data, model, precision ...)"),
    ("losses", ("bpm.losses",), "loss terms on embeddings and logits; no data or model code needed"),
    ("evaluation", ("bpm.evaluation",),
     "feature extraction (the one extraction path) and metrics: runs models over data"),
    ("export", ("bpm.export",),
     "ONNX export, FP16/INT8, verification: measures exported graphs with evaluation's extraction"),
    ("inference", ("bpm.inference",),
     "FeatureExtractor, the deployment API: the loader plus the extraction path, warning on unverified exports"),
    ("distill", ("bpm.distill",),
     "teachers for knowledge distillation run through FeatureExtractor (any exported format), hence above it"),
    ("engine", ("bpm.engine",),
     "training: the trainer, checkpoints, run folders; uses models, data, losses, evaluation and distillation"),
    ("vis", ("bpm.vis",), "plots and rank-list pages of evaluated features"),
    ("stream", ("bpm.stream",), "video re-ID: detectors and trackers around FeatureExtractor"),
    ("cli", ("bpm.recipes", "bpm.cli.switches", "bpm.cli.checks", "bpm.cli.run_config", "bpm.cli.helpformat"),
     "the command line's switches, their checks, recipes and --config files: built from the library's "
     "choices, given to nothing below"),
    ("commands", ("bpm.commands",), "one thin module per subcommand: parse, check, call the library"),
    ("entry", ("bpm.cli", "bpm.__main__"), "the `bpm` program: dispatches to the commands"),
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def bpm_imports(path: Path, root: Path, modules: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of a bpm module in the file, wherever it stands."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from bpm.models import backbones` imports a module
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in modules else target, node.lineno))
    return [(target, line) for target, line in found if target == "bpm" or target.startswith("bpm.")]


def layer_of(module: str) -> int | None:
    best, level = -1, None
    for index, (_name, prefixes, _why) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "bpm" and module.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, level = len(prefix), index
    return level


def scan(root: Path) -> tuple[list[str], list[str], list[list[str]]]:
    """(modules not in the table, upward imports, import cycles) of the ``bpm`` package under ``root``."""
    files = {module_name(p, root): p for p in sorted((root / "bpm").rglob("*.py"))}
    modules = set(files)
    graph = {m: {} for m in modules}
    for module, path in files.items():
        for target, line in bpm_imports(path, root, modules):
            while target not in modules and "." in target:  # `from bpm.x import name` of a non-module name
                target = target.rpartition(".")[0]
            if target != module:
                graph[module].setdefault(target, line)
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    upward = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                upward.append(f"{files[module].relative_to(root)}:{line}: {module} ({LAYERS[low][0]}) imports "
                              f"{target} ({LAYERS[high][0]})")
    return unplaced, upward, cycles(graph)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_every_module_has_a_layer():
    unplaced, _upward, _cycles = scan(ROOT)
    assert not unplaced, f"place these modules in LAYERS ({__file__}): {unplaced}"


def test_no_upward_imports():
    _unplaced, upward, _cycles = scan(ROOT)
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    _unplaced, _upward, found = scan(ROOT)
    assert not found, f"import cycles: {found}"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize("statement", ["from bpm.commands.train import main", "import bpm.cli",
                                       "from .engine import trainer"])
def test_scan_finds_a_planted_function_local_upward_import(tmp_path, statement):
    root = _tree(tmp_path, {
        "bpm/__init__.py": "",
        "bpm/errors.py": f"def f():\n    {statement}\n",
        "bpm/cli/__init__.py": "", "bpm/commands/__init__.py": "", "bpm/commands/train.py": "",
        "bpm/engine/__init__.py": "", "bpm/engine/trainer.py": "",
    })
    unplaced, upward, found = scan(root)
    assert not unplaced and not found
    assert len(upward) == 1 and upward[0].startswith("bpm/errors.py:2: bpm.errors (ground) imports")


def test_scan_finds_a_planted_cycle_and_an_unplaced_module(tmp_path):
    root = _tree(tmp_path, {
        "bpm/__init__.py": "",
        "bpm/models/__init__.py": "",
        "bpm/models/a.py": "from bpm.models.b import x\n",
        "bpm/models/b.py": "def g():\n    from bpm.models import a\n",
        "bpm/newpart.py": "",
    })
    unplaced, upward, found = scan(root)
    assert unplaced == ["bpm.newpart"] and not upward
    assert found == [["bpm.models.a", "bpm.models.b"]]


def test_the_real_package_is_scanned():
    """The scan reads the checkout's package (not an empty folder): it sees known modules and imports."""
    files = {module_name(p, ROOT) for p in (ROOT / "bpm").rglob("*.py")}
    assert {"bpm.cli", "bpm.errors", "bpm.models.loading"} <= files
    imports = bpm_imports(ROOT / "bpm" / "cli" / "__init__.py", ROOT, files)
    assert any(target == "bpm.errors" for target, _line in imports)
