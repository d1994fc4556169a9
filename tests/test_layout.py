"""The package's layout: stages in one order, each importing only the stages below it; no import cycles between
files (type-only imports included); few modules directly under ``lucid_app/``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lucid_app"
# Bottom to top: a module may import its own stage and the stages before it in this list (README, "Layout").
STAGES = ("io", "config", "render", "scene", "priors", "guidance", "mesh", "avatar", "lab", "train",
          "learned_prior", "bench", "batch", "app", "cli", "ui")
MAX_TOP_LEVEL_MODULES = 12


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """{module: the lucid_app modules it imports}, from every import statement (in functions and under
    TYPE_CHECKING too); ``from lucid_app.x import y`` counts as importing ``lucid_app.x.y`` when that is a module."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lucid_app"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("lucid_app."))
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) else None


def test_every_folder_of_the_package_has_a_stage() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert folders == set(STAGES)


def test_stages_import_only_what_sits_below_them() -> None:
    order = {stage: i for i, stage in enumerate(STAGES)}
    upward = []
    for module, targets in _imports().items():
        stage = _stage(module)
        for target in targets:
            other = _stage(target)
            if stage is not None and other is not None and order[other] > order[stage]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a lower stage back up:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    graph = _imports()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_few_modules_at_the_top_level() -> None:
    flat = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_TOP_LEVEL_MODULES, flat


def test_no_test_file_imports_another() -> None:
    """Shared helpers live in tests/helpers.py (and the harness modules), never in a test file."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in tests.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(tests)} imports {name}" for name in names
                          if name.rsplit(".", 1)[-1].startswith("test_")]
    assert not offenders, "\n".join(offenders)


def test_every_name_the_scripts_import_from_the_package_exists() -> None:
    """The benchmarks (``bench/``) and ``app.py`` import the package inside their functions, so a moved or renamed
    name would only fail when someone runs them: every ``from lucid_app.x import y`` there must resolve."""
    import importlib
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    missing = []
    for path in sorted([*(repo / "bench").glob("*.py"), repo / "app.py"]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lucid_app"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                    missing.append(f"{path.name}: from {node.module} import {alias.name}")
    assert not missing, "\n".join(missing)
