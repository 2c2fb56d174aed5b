"""Test-suite settings: strict JAX flags and a persistent compilation cache; the
``run_report`` fixture (a snippet in a fresh CPU-only Python process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

jax.config.update("jax_numpy_rank_promotion", "raise")
# The suite is compile-bound: XLA's cheap compile mode halves it (set SYNPRUNE_TEST_OPTIMIZE=1 to
# test the fully optimised programs users run). The variable reaches the tests' subprocesses.
if os.environ.get("SYNPRUNE_TEST_OPTIMIZE", "0") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)
# Compiled Brax rollouts are the slow part of the suite; cache them across test processes/runs.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("JAX_COMPILATION_CACHE_DIR",
                                 os.path.join(os.path.dirname(__file__), "..", ".jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run_report(code: str, *, env: dict | None = None, timeout: int = 600) -> dict:
    """Runs ``code`` in a fresh Python process (repository root, CPU only, the user's
    ``XLA_FLAGS`` dropped, then ``env`` applied) and returns the JSON object printed on its last
    ``REPORT `` line; fails with the process's stderr when it exits non-zero or prints none."""
    environment = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    environment["JAX_PLATFORMS"] = "cpu"
    environment.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    environment.update(env or {})
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment,
                               capture_output=True, text=True, timeout=timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("REPORT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


def assert_trees_equal(first, second) -> None:
    """The two pytrees have the same structure and, leaf by leaf, the same shape, dtype and
    values (bit for bit; NaN equals NaN)."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(first)
    leaves_b, tree_b = jax.tree_util.tree_flatten(second)
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b):
        assert np.shape(a) == np.shape(b) and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture
def optimized():
    """The test's programs compile fully optimised, as users' do: for bit-for-bit claims between
    two formulations that XLA's optimiser compiles alike (the cheap mode need not)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(name="run_report")
def run_report_fixture():
    """:func:`run_report` for tests."""
    return run_report
