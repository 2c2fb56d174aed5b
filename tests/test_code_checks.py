"""The repository passes its own lint, format and type checks (ruff and mypy, configured in
pyproject.toml).

These run in the default suite so that ``.ci/run`` (the README's test command) enforces them;
ruff and mypy come with the ``test`` extra. Fix a lint or format failure with
``ruff check --fix . && ruff format .`` (README, "Tests").
"""

from __future__ import annotations


def test_ruff_lint(run_tool):
    done = run_tool("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_format(run_tool):
    done = run_tool("ruff", "format", "--check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy(run_tool):
    """The package type-checks at the strictness stated in pyproject.toml ([tool.mypy])."""
    done = run_tool("mypy", "--no-incremental")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
