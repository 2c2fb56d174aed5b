"""The repository passes its own lint, format and type checks (ruff and mypy, configured in
pyproject.toml).

These run in the default suite so that ``.ci/run`` (the README's test command) enforces them;
ruff and mypy come with the ``test`` extra. Fix a lint or format failure with
``ruff check --fix . && ruff format .`` (README, "Tests").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*arguments: str) -> subprocess.CompletedProcess:
    binary = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if binary is None:
        pytest.fail('ruff is not installed: pip install -e ".[test]"')
    return subprocess.run([binary, *arguments], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint():
    done = _ruff("check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_format():
    done = _ruff("format", "--check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy():
    """The package type-checks at the strictness stated in pyproject.toml ([tool.mypy])."""
    binary = shutil.which("mypy", path=os.path.dirname(sys.executable)) or shutil.which("mypy")
    if binary is None:
        pytest.fail('mypy is not installed: pip install -e ".[test]"')
    done = subprocess.run(
        [binary, "--no-incremental"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
