"""The package's import direction, read from the source with ``ast`` (no import is executed).

Allowed direction (a module may import modules of its own package and of lower ranks only,
never of a higher rank or of another package of the same rank)::

    cli, synth (programs)  ->  run  ->  participant, group  ->  engines, reports
      ->  bids, templates  ->  image, morphometrics  ->  runtime, geometry
      ->  config  ->  errors

``group`` may import ``participant.units`` (unit planning, a leaf of the participant level) and
no other part of the participant level; ``engines`` import no level.
Every import counts, at the top of a file or inside a function, so a lazy import cannot hide a
wrong direction or a cycle. And the package's own modules are imported at the top of a file,
where a reader sees them (:data:`DEFERRED_IMPORTS` lists the exceptions); only optional or heavy
third-party packages (antspyx, matplotlib, scoop) are imported inside functions.

The levels never branch on an engine's name: no comparison with ``"sct"``, ``"builtin"`` or
``"minc"`` in ``participant`` or ``group`` (the pipeline asks the engine object what it can do;
``engines`` decides names, once).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spinal_bidsapp"

RANKS = {
    "": 0, "errors": 0,  # "" is the package itself (__version__)
    "config": 1,
    "runtime": 2, "geometry": 2,
    "image": 3, "morphometrics": 3,
    "bids": 5, "templates": 5,
    "engines": 6, "reports": 6,
    "participant": 7, "group": 7,
    "run": 8,
    "cli": 9, "synth": 9,
    "__main__": 10,
}
"""Rank of each top-level module or package under ``spinal_bidsapp``."""

ALLOWED_ACROSS = {
    # plan_units: the group level selects the same units (participant.units only, a leaf)
    ("group", "spinal_bidsapp.participant.units"),
}
"""Imports against the direction that exist today, each with its reason (a new one fails): a
(package, package) pair, or a (package, module) pair that allows that one module only."""

DEFERRED_IMPORTS = {
    # the group level imports participant.units, and this package's __init__ runs first: it must
    # not load the participant pipeline and every engine with it
    ("spinal_bidsapp.participant", "spinal_bidsapp.participant.unit_run"),
    # --help, --version and --bids-exec-spec must stay fast: run imports every level, engine
    # and pybids (about 1.5 s measured; the parser and config alone about 0.3 s).
    ("spinal_bidsapp.cli.main", "spinal_bidsapp.run"),
    # spinal_bidsapp-straighten --help likewise: its run() needs scipy and nibabel
    *(("spinal_bidsapp.cli.straighten", f"spinal_bidsapp.{module}")
      for module in ("geometry.centerline", "geometry.discs", "geometry.fields",
                     "geometry.metrics", "geometry.straighten", "image")),
}
"""(module, imported module) pairs allowed inside a function body, each with its reason."""

def _imports_of(tree: ast.AST, modules: dict[str, Path]) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == PACKAGE.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == PACKAGE.name:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in modules else node.module


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package's modules ``path`` imports (``from pkg import mod`` names the module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import; use absolute imports")
    yield from _imports_of(tree, modules)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(path, modules)) & set(modules) for name, path in modules.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_rank() -> None:
    missing = sorted({_top(m) for m in _modules()} - set(RANKS))
    assert not missing, f"give these a rank in RANKS: {missing}"


def test_imports_follow_the_allowed_direction() -> None:
    wrong = []
    for module, targets in _graph().items():
        src = _top(module)
        for target in targets:
            dst = _top(target)
            if src == dst or (src, dst) in ALLOWED_ACROSS or (src, target) in ALLOWED_ACROSS:
                continue
            if RANKS[dst] >= RANKS[src]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the direction:\n" + "\n".join(sorted(wrong))


def test_participant_units_is_a_leaf() -> None:
    """The group level may import it: it must not pull in the rest of the participant level."""
    level = {m for m in _graph()["spinal_bidsapp.participant.units"] if _top(m) == "participant"}
    assert not level, f"participant.units imports the participant level: {sorted(level)}"


LEVELS = ("participant", "group", "run", "cli")
ENGINE_NAMES = frozenset({"sct", "builtin", "minc"})


def test_engines_import_no_level() -> None:
    wrong = sorted(f"{module} -> {target}" for module, targets in _graph().items()
                   if _top(module) == "engines" for target in targets if _top(target) in LEVELS)
    assert not wrong, "engines import a level:\n" + "\n".join(wrong)


def _engine_name_comparisons(source: str) -> list[int]:
    """Lines comparing something with an engine name (``==``, ``!=``, ``in`` a literal of
    names, or a ``match`` case)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                literal = isinstance(operand, (ast.Tuple, ast.List, ast.Set))
                strings = ([operand] if isinstance(operand, ast.Constant) else
                           list(operand.elts) if literal else [])
                if any(isinstance(s, ast.Constant) and s.value in ENGINE_NAMES for s in strings):
                    lines.append(node.lineno)
                    break
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) \
                and node.value.value in ENGINE_NAMES:
            lines.append(node.lineno)
    return lines


def test_levels_do_not_compare_engine_names() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}"
             for level in ("participant", "group")
             for path in sorted((PACKAGE / level).rglob("*.py"))
             for line in _engine_name_comparisons(path.read_text(encoding="utf-8"))]
    assert not found, "engine-name branching in a level (ask the engine object):\n" + \
        "\n".join(found)


def test_the_engine_name_check_finds_comparisons() -> None:
    source = ("if engine.name == 'sct': pass\n"
              "ok = kind != 'auto'\n"
              "x = name in ('builtin', 'other')\n"
              "match name:\n    case 'minc': pass\n")
    assert _engine_name_comparisons(source) == [1, 3, 5]


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_cycle() -> None:
    cycles = [sorted(c) for c in _cycles(_graph())]
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]


def _function_body_imports(path: Path, modules: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of the package inside a function of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = ast.Module(body=[node], type_ignores=[])
                for target in _imports_of(module, modules):
                    yield node.lineno, target


def test_the_package_is_imported_at_the_top_of_files() -> None:
    modules = _modules()
    lazy = [f"{path.relative_to(PACKAGE.parent)}:{line}: {target}"
            for module, path in modules.items()
            for line, target in _function_body_imports(path, modules)
            if (module, target) not in DEFERRED_IMPORTS]
    assert not lazy, "imports of the package inside functions:\n" + "\n".join(lazy)


def test_the_function_body_import_check_finds_one(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from spinal_bidsapp.image import Volume\n    return Volume\n")
    assert list(_function_body_imports(source, _modules())) == [(2, "spinal_bidsapp.image")]
