"""The house rules of the layout: one import namespace, every package folder installed, dependencies
that point down (core < generation < model, judges < tasks, training, results < CLI, demo, plugin), and
no import cycles between files (function-local and type-checking imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]

# Layer of each top-level part of the namespace; a module may import its own part or lower layers.
LAYERS = {
    "llamavid_eval": 0,  # the namespace's __init__: a docstring and the version
    "llamavid_eval.core": 0,
    "llamavid_eval.generation": 1,
    "llamavid_eval.model": 2,
    "llamavid_eval.judges": 2,
    "llamavid_eval.tasks": 3,
    "llamavid_eval.training": 3,
    "llamavid_eval.results": 3,
    "llamavid_eval.cli": 4,
    "llamavid_eval.demo": 4,
    "llamavid_eval.lmms_plugin": 4,
    # ``llamavid judge`` (its own command line; the one __main__ above its package's layer): ``judge swap``
    # lays its report out with llamavid_eval.results.swap_report
    "llamavid_eval.judges.__main__": 4,
}
TOP = 4


def part_of(module: str) -> str:
    """The LAYERS key a dotted module name belongs to (longest matching prefix)."""
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    if not matches:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/test_layout.py")
    return max(matches, key=len)


def source_modules() -> list[tuple[str, Path]]:
    """(dotted name, file) of every module installed under the namespace, found via package-dir."""
    found = []
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "llamavid_eval" and parts and f"llamavid_eval.{parts[0]}" in PACKAGE_DIRS:
                continue
            found.append((name, path))
    return found


def imported_modules(path: Path, module: str) -> list[str]:
    """Our modules that ``path`` imports (absolute and relative imports, at any depth); ``from package import
    name`` also lists ``package.name`` (a submodule, when it is one)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return [n for n in names if n == "llamavid_eval" or n.startswith("llamavid_eval.")]


def layer(module: str, path: Path) -> int:
    return LAYERS[part_of(module)]


def test_every_package_folder_is_installed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    packages = {name for name, path in source_modules() if path.name == "__init__.py"}
    assert packages == listed, f"pyproject.toml [tool.setuptools] packages differs: {packages ^ listed}"


def test_no_generic_top_level_imports():
    """Nothing of ours is imported under the folder names (``import tasks`` would be a user's tasks/)."""
    generic = {"tasks", "judges", "training", "results", "llamavid_model"}
    offenders = []
    for folder in ["llamavid_eval", "llamavid_model", "tasks", "judges", "training", "results", "tests", "benchmarks"]:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else ([node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                )
                offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in generic]
    assert not offenders, offenders


@pytest.mark.parametrize(("module", "path"), source_modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_dependencies_point_down(module: str, path: Path):
    own_part, own_layer = part_of(module), layer(module, path)
    upward = []
    for target in imported_modules(path, module):
        target_part = part_of(target)
        if target_part == own_part:
            continue
        if LAYERS[target_part] >= own_layer:
            upward.append(f"{target} (layer {LAYERS[target_part]})")
    assert not upward, f"{module} (layer {own_layer}) imports sideways or upwards: {upward}"


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or round a circle (strongly connected
    components of more than one module, or a module importing itself), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_import_cycles_are_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_files():
    modules = dict(source_modules())
    graph = {
        name: {target for target in imported_modules(path, name) if target in modules and target != name}
        for name, path in modules.items()
    }
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    for name in graph:  # importing a module runs its packages' __init__ first: that edge is not a choice
        graph[name] -= {p for p in packages if name.startswith(p + ".")}
    assert not import_cycles(graph), import_cycles(graph)


def test_golden_fixture_is_found_from_the_repository_root(tmp_path):
    from conftest import find_golden

    repo = tmp_path / "checkout"
    beside = tmp_path / "shared" / "fixtures" / "llamavid-golden"
    beside.mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as missing:
        find_golden(repo, {"LLAMAVID_GOLDEN": str(tmp_path / "elsewhere")})
    for place in (repo / "shared", beside, tmp_path / "elsewhere"):
        assert str(place) in str(missing.value)
    (beside / "reference.safetensors").write_bytes(b"")
    assert find_golden(repo, {}) == beside
    inside = repo / "shared" / "fixtures" / "llamavid-golden"
    inside.mkdir(parents=True)
    (inside / "reference.safetensors").write_bytes(b"")
    assert find_golden(repo, {}) == inside


def test_core_imports_no_heavy_libraries():
    """The bottom layer stays pure Python/numpy/scipy: the CLI, the training config and the judges load it fast."""
    heavy = {"torch", "torchvision", "transformers", "accelerate", "peft", "datasets", "lmms_eval", "decord", "av"}
    offenders = []
    for path in sorted((REPO / "llamavid_eval" / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in heavy]
    assert not offenders, offenders
