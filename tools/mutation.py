"""A mutation run over the security modules: does the suite notice a one-line bug?

    .venv/bin/python tools/mutation.py                 # every module in MODULES, 12 mutants each
    .venv/bin/python tools/mutation.py --per-module 30 ory_wsgi/paths.py

Each mutant changes one operator or constant in a copy of the checkout (`==`
to `!=`, `and` to `or`, `not x` to `x`, `<` to `<=`, `True` to `False`, a
call statement to `pass`), then runs the tests that guard that module. A
mutant is *killed* when they fail. Survivors are printed with their line: each
is either a missing test or an equivalent mutant. Mutants are drawn with a
fixed seed, so two runs of one tree draw the same ones. Not part of `bin/test`
(it takes minutes); docs/security.md reports the last kill ratio.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Module -> the test files that guard it (kept fast: in-process or one shared server).
MODULES: dict[str, tuple[str, ...]] = {
    "ory_wsgi/paths.py": ("tests/test_paths.py", "tests/test_security.py"),
    "ory_wsgi/wrappers/path_check.py": ("tests/test_protection.py", "tests/test_security.py"),
    "ory_wsgi/wrappers/protect.py": ("tests/test_protection.py",),
    "ory_wsgi/headers.py": ("tests/test_headers.py", "tests/test_forwarder.py"),
    "ory_wsgi/wrappers/cors.py": ("tests/test_cors.py",),
    "ory_wsgi/decisions.py": ("tests/test_decisions.py",),
    "ory_wsgi/wrappers/ory_route.py": ("tests/test_ory_integration.py", "tests/test_security.py"),
}
SWAPS: dict[type, type] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.And: ast.Or,
    ast.Or: ast.And,
}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # which mutable site, in ast.walk order
    line: int
    what: str


def _sites(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """Every place one mutation can be made, with a description of it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) in SWAPS:
                    yield op, f"{type(op).__name__} -> {SWAPS[type(op)].__name__}"
        elif isinstance(node, ast.BoolOp):
            yield node.op, f"{type(node.op).__name__} -> {SWAPS[type(node.op)].__name__}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "drop `not`"
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, f"{node.value} -> {not node.value}"
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield node, "call -> pass"


def _line(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> int:
    while not hasattr(node, "lineno"):
        node = parents[node]
    return int(node.lineno)  # type: ignore[attr-defined]


def _skip(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Logging calls and docstrings change nothing a test can see."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (
            func.value.id == "log"
        )
    return False


def mutants_of(module: str, per_module: int, seed: int) -> list[Mutant]:
    tree = ast.parse((ROOT / module).read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = [
        Mutant(module, index, _line(node, parents), what)
        for index, (node, what) in enumerate(_sites(tree))
        if not _skip(node, parents)
    ]
    random.Random(f"{seed}:{module}").shuffle(found)
    return sorted(found[:per_module], key=lambda m: m.line)


def mutated_source(module_text: str, mutant: Mutant) -> str:
    tree = ast.parse(module_text)
    for index, (node, _) in enumerate(_sites(tree)):
        if index != mutant.index:
            continue
        _apply(tree, node)
        return ast.unparse(tree)
    raise LookupError(mutant)


def _apply(tree: ast.AST, target: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if isinstance(value, list):
                for position, item in enumerate(value):
                    if item is target:
                        value[position] = _replacement(item)
                        return
            elif value is target:
                setattr(parent, field, _replacement(value))
                return


def _replacement(node: ast.AST) -> ast.AST:
    if type(node) in SWAPS:
        return SWAPS[type(node)]()
    if isinstance(node, ast.UnaryOp):
        return node.operand
    if isinstance(node, ast.Constant):
        return ast.Constant(not node.value)
    return ast.Pass()


def run(mutant: Mutant, copy: Path, original: str, timeout: float) -> tuple[bool, float]:
    """Whether the module's tests fail on this mutant (a timeout counts as killed)."""
    path = copy / mutant.module
    path.write_text(mutated_source(original, mutant))
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o",
               "addopts=", *MODULES[mutant.module]]
    try:
        result = subprocess.run(
            command, cwd=copy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, check=False,
        )
        killed = result.returncode != 0
    except subprocess.TimeoutExpired:
        killed = True
    finally:
        path.write_text(original)
    return killed, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all in MODULES)")
    parser.add_argument("--per-module", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"no tests are mapped for {', '.join(unknown)} (see MODULES)")
    killed_total = count = 0
    with tempfile.TemporaryDirectory(prefix="ory-wsgi-mutants-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".hypothesis",
            ".pytest_cache", ".ory-wsgi", "*.egg-info"))
        for module in modules:
            original = (copy / module).read_text()
            killed_here = 0
            mutants = mutants_of(module, args.per_module, args.seed)
            for mutant in mutants:
                killed, seconds = run(mutant, copy, original, args.timeout)
                killed_here += killed
                mark = "killed " if killed else "SURVIVED"
                print(f"{mark} {module}:{mutant.line} {mutant.what} ({seconds:.0f}s)", flush=True)
            print(f"== {module}: {killed_here}/{len(mutants)} killed", flush=True)
            killed_total += killed_here
            count += len(mutants)
    ratio = killed_total / count if count else 0.0
    print(f"== total: {killed_total}/{count} killed ({ratio:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
