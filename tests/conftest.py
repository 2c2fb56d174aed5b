"""Test-suite settings: strict JAX flags and a persistent compilation cache; the
``run_report`` fixture (a snippet in a fresh CPU-only Python process)."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

jax.config.update("jax_numpy_rank_promotion", "raise")
# The suite is compile-bound: XLA's cheap compile mode halves it, and XLA:CPU's older fusion code
# generator compiles its programs in about 60 % of the time again (set SYNPRUNE_TEST_OPTIMIZE=1
# to test the fully optimised programs users run). Both reach the tests' subprocesses (XLA_FLAGS
# is read when the backend starts, after this).
TEST_XLA_FLAGS = ""
if os.environ.get("SYNPRUNE_TEST_OPTIMIZE", "0") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)
    TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
# Compiled Brax rollouts are the slow part of the suite; cache them across test processes/runs.
jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get(
        "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
    ),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Start the backend now: the test processes keep one CPU device (or XLA_FLAGS' count) whatever a
# CLI call made in-process asks for (`task.devices=auto` would otherwise claim one device per core
# in a worker whose first test is such a call, and the tests after it would see them).
jax.devices()


def run_report(code: str, *, env: dict | None = None, timeout: int = 600) -> dict:
    """Runs ``code`` in a fresh Python process (repository root, CPU only, the user's
    ``XLA_FLAGS`` dropped for the suite's, then ``env`` applied, its ``XLA_FLAGS`` added to the
    suite's) and returns the JSON object printed on its last ``REPORT `` line; fails with the
    process's stderr when it exits non-zero or prints none."""
    env = dict(env or {})
    environment = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"{TEST_XLA_FLAGS} {env.pop('XLA_FLAGS', '')}".strip(),
    )
    environment.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    environment.update(env)
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("REPORT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT ") :])


def assert_trees_equal(first, second) -> None:
    """The two pytrees have the same structure and, leaf by leaf, the same shape, dtype and
    values (bit for bit; NaN equals NaN)."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(first)
    leaves_b, tree_b = jax.tree_util.tree_flatten(second)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b, strict=True):
        assert np.shape(a) == np.shape(b) and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def exact_jit(fun, **kwargs):
    """``jax.jit`` compiled by XLA:CPU's default code generator (without the suite's legacy fusion
    emitters): for bit-for-bit claims between two formulations of one computation, which hold
    for the programs users run; the older generator may round them apart in the last bit."""
    options = {"xla_cpu_use_fusion_emitters": True} if TEST_XLA_FLAGS else None
    return jax.jit(fun, compiler_options=options, **kwargs)


@contextlib.contextmanager
def optimized_compilation():
    """Programs compiled inside compile fully optimised, as users' do: for bit-for-bit claims
    between two formulations that XLA's optimiser compiles alike (the cheap mode need not)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(name="run_report")
def run_report_fixture():
    """:func:`run_report` for tests."""
    return run_report


def run_tool(name: str, *arguments: str, cwd=ROOT, timeout: int = 600, env=None):
    """Runs the command-line tool ``name`` (ruff, mypy, mkdocs) of this environment (found next
    to the Python running the tests, else on ``PATH``) and returns the completed process; fails
    the test with the install command when it is missing (the ``test`` extra brings them)."""
    binary = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if binary is None:
        pytest.fail(f'{name} is not installed: pip install -e ".[test]"')
    return subprocess.run(
        [binary, *arguments], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(name="run_tool")
def run_tool_fixture():
    """:func:`run_tool` for tests."""
    return run_tool
