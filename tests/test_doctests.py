"""The examples in the package's docstrings run (doctest), under the suite's settings.

Every module of ``synprune_jax`` is imported and its docstring examples executed with
:func:`doctest.testmod`; an example marked ``# doctest: +SKIP`` needs what the suite does not
have (a Brax rollout, a dataset, a file). A failing example fails its module's test.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synprune_jax

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(synprune_jax.__path__, prefix="synprune_jax.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    globs = {"jax": jax, "jnp": jnp, "np": np, **vars(module)}
    result = doctest.testmod(
        module,
        globs=globs,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=False,
        verbose=False,
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
