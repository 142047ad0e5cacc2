"""A mutation run over the security modules: does the suite notice a one-line bug?

    .venv/bin/python tools/mutation.py                 # every module in MODULES, 12 mutants each
    .venv/bin/python tools/mutation.py --per-module 30 ory_wsgi/paths.py
    .venv/bin/python tools/mutation.py --only ory_wsgi/paths.py:120   # every mutant of a line

Each mutant changes one operator or constant in a copy of the checkout (`==`
to `!=`, `and` to `or`, `not x` to `x`, `<` to `<=`, `True` to `False`, a
call statement to `pass`), then runs the tests that guard that module. A
mutant is *killed* when they fail. Survivors are printed with their line: each
is either a missing test or an equivalent mutant. Mutants are drawn with a
fixed seed, so two runs of one tree draw the same ones. Logging calls (and
anything inside their arguments) are not mutated: no test should pin a log
line's wording. Not part of `bin/test` (it takes minutes); docs/security.md
reports the last kill ratio.

Before any mutant, the run proves it tests the copy and not the checkout: the
copy's `ory_wsgi` must be the one imported, in pytest and in the gunicorn
processes tests/servers.py starts (PYTHONPATH = the tree root), and a mutant
that breaks the module outright must be killed; and each module's tests must
pass on the unmutated copy (else every mutant would count as killed).
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


@dataclass(frozen=True)
class Guard:
    """The test files that guard a module, fastest first; `within`: only these top-level names."""

    tests: tuple[str, ...]
    within: tuple[str, ...] = ()


# Module -> the fastest test files that guard it (in-process, or one shared server).
MODULES: dict[str, Guard] = {
    "ory_wsgi/paths.py": Guard(("tests/test_paths.py",)),
    "ory_wsgi/pipeline/decision.py": Guard(
        ("tests/test_pipeline_decision.py", "tests/test_pipeline_shorthand.py")
    ),
    "ory_wsgi/pipeline/layer.py": Guard(("tests/test_embedding_wsgi.py",)),
    "ory_wsgi/pipeline/request.py": Guard(
        ("tests/test_pipeline_shorthand.py", "tests/test_embedding_wsgi.py")
    ),
    "ory_wsgi/pipeline/shorthand.py": Guard(
        ("tests/test_pipeline_shorthand.py", "tests/test_pipeline_decision.py")
    ),
    "ory_wsgi/pipeline/authenticators/session.py": Guard(
        ("tests/test_pipeline_authenticators.py", "tests/test_session_gate.py")
    ),
    "ory_wsgi/headers.py": Guard(("tests/test_headers.py",)),
    "ory_wsgi/identity_headers.py": Guard(("tests/test_headers.py",)),
    "ory_wsgi/ory/cookies.py": Guard(("tests/test_ory_client.py",)),
    "ory_wsgi/wrappers/cors.py": Guard(("tests/test_cors.py",)),
    "ory_wsgi/decisions.py": Guard(("tests/test_decisions.py",)),
    "ory_wsgi/wrappers/ory_route.py": Guard(
        ("tests/test_security.py", "tests/test_ory_rewrite.py")
    ),
    "ory_wsgi/middleware.py": Guard(
        ("tests/test_embedding_wsgi.py",), within=("SpoofGuard", "PreflightAnswer", "AppHandoff")
    ),
}
LOGGERS = frozenset({"log", "logger", "errors", "logging", "warnings"})
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


# Operator nodes (ast.Eq(), ast.And(), ...) are shared singletons in a parsed tree: a site is
# the Compare or BoolOp that holds one (and which of its operators), never the operator itself.
def _sites(tree: ast.AST) -> Iterator[tuple[ast.AST, int, str]]:
    """Every place one mutation can be made: (node, operator position, description)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for position, op in enumerate(node.ops):
                if type(op) in SWAPS:
                    yield node, position, f"{type(op).__name__} -> {SWAPS[type(op)].__name__}"
        elif isinstance(node, ast.BoolOp):
            yield node, 0, f"{type(node.op).__name__} -> {SWAPS[type(node.op)].__name__}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, 0, "drop `not`"
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, 0, f"{node.value} -> {not node.value}"
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield node, 0, "call -> pass"
        elif isinstance(node, ast.Assign) and all(
            isinstance(target, ast.Subscript) for target in node.targets
        ):
            yield node, 0, "item store -> pass"


def _is_log_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in LOGGERS
    )


def _skip(node: ast.AST, parents: dict[ast.AST, ast.AST], within: tuple[str, ...]) -> bool:
    """Log calls (and what is in them) change nothing a test should pin; `within` scopes."""
    top = node
    while top in parents:
        if _is_log_call(top) or (isinstance(top, ast.Expr) and _is_log_call(top.value)):
            return True
        if isinstance(parents[top], ast.Module):
            break
        top = parents[top]
    if within:
        return getattr(top, "name", None) not in within
    return False


def mutants_of(module: str, seed: int) -> list[Mutant]:
    """Every mutant of the module (in its `within` scope), in the seed's shuffled order."""
    tree = ast.parse((ROOT / module).read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = [
        Mutant(module, index, node.lineno, what)  # type: ignore[attr-defined]
        for index, (node, _, what) in enumerate(_sites(tree))
        if not _skip(node, parents, MODULES[module].within)
    ]
    random.Random(f"{seed}:{module}").shuffle(found)  # noqa: S311 - a reproducible draw, not a secret
    return found


def mutated_source(module_text: str, mutant: Mutant) -> str:
    tree = ast.parse(module_text)
    for index, (node, position, _) in enumerate(_sites(tree)):
        if index == mutant.index:
            _mutate(tree, node, position)
            return ast.unparse(tree)
    raise LookupError(mutant)


def _mutate(tree: ast.AST, node: ast.AST, position: int) -> None:
    if isinstance(node, ast.Compare):
        node.ops[position] = SWAPS[type(node.ops[position])]()
    elif isinstance(node, ast.BoolOp):
        node.op = SWAPS[type(node.op)]()
    else:
        for parent in ast.walk(tree):
            for field, value in ast.iter_fields(parent):
                if isinstance(value, list) and any(item is node for item in value):
                    value[[id(item) for item in value].index(id(node))] = _replacement(node)
                    return
                if value is node:
                    setattr(parent, field, _replacement(node))
                    return


def _replacement(node: ast.AST) -> ast.AST:
    if isinstance(node, ast.UnaryOp):
        return node.operand
    if isinstance(node, ast.Constant):
        return ast.Constant(not node.value)
    return ast.Pass()


def run_tests(module: str, copy: Path, source: str, timeout: float) -> tuple[str, float]:
    """The module's tests on `source` in the copy: killed, SURVIVED or timeout (a kill)."""
    path = copy / module
    original = path.read_text()
    path.write_text(source)
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        *MODULES[module].tests,
    ]
    try:
        result = subprocess.run(
            command,
            cwd=copy,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            env=_env(copy),
            check=False,
        )
        verdict = "killed" if result.returncode != 0 else "SURVIVED"
    except subprocess.TimeoutExpired:
        verdict = "timeout"
    finally:
        path.write_text(original)
    return verdict, time.monotonic() - started


def _env(copy: Path) -> dict[str, str]:
    # The editable install points at the checkout: the copy must come first on the path.
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}


def check_copy_is_tested(copy: Path, module: str, timeout: float) -> None:
    """Refuse to run when the tests would import the checkout instead of the mutated copy."""
    # The environment tests/servers.py gives its gunicorn processes, read from the copy itself.
    probe = (
        "import os, subprocess, sys, ory_wsgi, servers; print(ory_wsgi.__file__); "
        "env = {**os.environ, 'PYTHONPATH': f'{servers.ROOT}:{servers.ROOT / \"tests\"}'}; "
        "print(subprocess.run([sys.executable, '-c', 'import ory_wsgi; print(ory_wsgi.__file__)'],"
        " env=env, cwd='/', capture_output=True, text=True, check=True).stdout.strip())"
    )
    env = {**_env(copy), "PYTHONPATH": f"{copy}:{copy / 'tests'}"}
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=copy, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = [path for path in found if not Path(path).is_relative_to(copy)]
    if outside or len(found) != 2:
        raise SystemExit(f"the tests would not import the mutated copy: {found}")
    broken = (copy / module).read_text() + "\nraise RuntimeError('mutation sanity check')\n"
    verdict, _ = run_tests(module, copy, broken, timeout)
    if verdict != "killed":
        raise SystemExit(f"{module}: a module that cannot be imported was not killed ({verdict})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all in MODULES)")
    parser.add_argument("--per-module", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--only", metavar="MODULE:LINE", help="every mutant of one line")
    args = parser.parse_args()
    if args.only:
        module, _, line = args.only.rpartition(":")
        modules = [module]
    else:
        modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"no tests are mapped for {', '.join(unknown)} (see MODULES)")
    killed_total = count = 0
    with tempfile.TemporaryDirectory(prefix="ory-wsgi-mutants-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(
            ROOT,
            copy,
            ignore=shutil.ignore_patterns(
                ".git",
                ".venv",
                "__pycache__",
                ".mypy_cache",
                ".ruff_cache",
                ".hypothesis",
                ".pytest_cache",
                ".ory-wsgi",
                "*.egg-info",
            ),
        )
        check_copy_is_tested(copy, modules[0], args.timeout)
        for module in modules:
            original = (copy / module).read_text()
            lines = original.splitlines()
            killed_here = 0
            mutants = mutants_of(module, args.seed)
            if args.only:
                mutants = [m for m in mutants if m.line == int(line)]
            else:
                mutants = sorted(mutants[: args.per_module], key=lambda m: m.line)
            # A test that fails (or flakes) on the unmutated tree would "kill" every mutant.
            baseline, _ = run_tests(module, copy, original, args.timeout)
            if baseline != "SURVIVED":
                print(f"== {module}: its tests fail without a mutant ({baseline}); skipped")
                continue
            for mutant in mutants:
                source = mutated_source(original, mutant)
                verdict, seconds = run_tests(module, copy, source, args.timeout)
                killed_here += verdict != "SURVIVED"
                code = lines[mutant.line - 1].strip()
                print(
                    f"{verdict:8} {module}:{mutant.line} {mutant.what} ({seconds:.0f}s)  {code}",
                    flush=True,
                )
            print(f"== {module}: {killed_here}/{len(mutants)} killed", flush=True)
            killed_total += killed_here
            count += len(mutants)
    ratio = killed_total / count if count else 0.0
    print(f"== total: {killed_total}/{count} killed ({ratio:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
