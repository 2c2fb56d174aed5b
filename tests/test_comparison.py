"""synprune compare-pruning: sizing to one budget, bad input, and a tiny run end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synprune_jax import cli
from synprune_jax.comparison import METHODS, compare_pruning, plan_arms
from synprune_jax.config import ConfigError

TINY = [
    "task.name=reach",
    "task.num_joints=2",
    "task.episode_length=10",
    "task.num_episodes=1",
    "task.hidden_sizes=[4]",
    "map_elites.batch_size=8",
    "map_elites.initial_batch_size=8",
    "archive.resolution=[4,4]",
    "es.population_size=4",
    "ppo.num_envs=4",
    "ppo.batch_size=4",
    "ppo.num_minibatches=2",
    "ppo.unroll_length=5",
    "ppo.value_hidden_sizes=[4]",
]


def test_every_method_gets_the_budget_and_its_own_overrides():
    arms = {arm.name: arm for arm in plan_arms(4000, [0.25, 0.5, 1.0], METHODS, TINY)}
    assert list(arms) == ["map-elites", "es", "ppo-pruning", "ppo-dense"]
    # MAP-Elites: 400 evaluations of 10 steps = 8 initial + 49 generations of 8
    assert "run.num_generations=49" in arms["map-elites"].overrides
    assert arms["map-elites"].env_steps == (8 + 49 * 8) * 10
    # ES: 4 samples + the mean per generation, 10 steps each: 80 generations
    assert "run.num_generations=80" in arms["es"].overrides
    assert arms["es"].grid == {"es.target_density": [0.25, 0.5, 1.0]}
    # PPO: 4 x 2 trajectories of 5 steps per iteration: 100 iterations
    ppo = arms["ppo-pruning"]
    assert "run.num_generations=100" in ppo.overrides and ppo.env_steps == 4000
    assert ppo.grid == {"ppo.pruning": ["gmp", "static", "set", "rigl"], "ppo.density": [0.25, 0.5]}
    assert {"ppo.prune_start=20", "ppo.prune_end=80", "ppo.update_end=75"} <= set(ppo.overrides)
    # each experiment gets only the overrides of its sections
    assert not any(item.startswith(("es.", "ppo.")) for item in arms["map-elites"].overrides)
    assert not any(item.startswith(("map_elites.", "archive.")) for item in ppo.overrides)
    for arm in arms.values():
        assert arm.env_steps <= 4000


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(methods=["lottery"]), "unknown methods"),
        (dict(densities=[0.0, 0.5]), "densities must lie in"),
        (dict(budget=100), "too small for map-elites"),
        (dict(overrides=["nsga2.population_size=4"]), "name a section none"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(args, message, tmp_path):
    settings = dict(budget=4000, densities=[0.5], methods=METHODS, overrides=TINY)
    settings.update(args)
    with pytest.raises(ConfigError, match=message):
        compare_pruning(tmp_path / "out", seeds=[0], **settings)
    assert not (tmp_path / "out").exists()


def test_cli_bad_densities_end_in_one_line(capsys, tmp_path):
    status = cli.main(["compare-pruning", "--densities", "0.1,x", "--out", str(tmp_path / "c")])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "synprune: error: --densities must be numbers separated by commas, got '0.1,x'"
    ]


def _check_outputs(out, table, methods, densities, seeds):
    expected = set()
    for method in methods:
        if method == "dense":
            expected |= {("dense", 1.0, seed) for seed in seeds}
        elif method in ("map-elites", "es"):
            expected |= {(method, d, seed) for d in densities for seed in seeds}
        else:
            expected |= {(method, d, seed) for d in densities if d < 1 for seed in seeds}
    assert set(zip(table["method"], table["density"], table["seed"], strict=True)) == expected
    assert np.isfinite(table["return"]).all()
    # MAP-Elites' bound and the ES's floor(d n_l) never exceed the density; the gradient methods'
    # round(d n_l) per layer may exceed it by half a connection per layer (exact counts: test_ppo)
    evolved = table["method"].isin(["map-elites", "es"])
    assert (table.loc[evolved, "actual_density"] <= table.loc[evolved, "density"] + 1e-6).all()
    assert (table["actual_density"] <= table["density"] + 0.05).all()
    assert (table["wall_s"] > 0).all()
    pd.testing.assert_frame_equal(pd.read_csv(out / "comparison.csv"), table)
    assert (out / "return_vs_density.png").stat().st_size > 0
    text = (out / "comparison.md").read_text()
    assert all(method in text for method in methods)
    assert json.loads((out / "comparison.json").read_text())["episodes"] == 4


@pytest.mark.slow
def test_the_comparison_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "compare"
    table = compare_pruning(
        out, budget=4000, seeds=[0, 1], densities=[0.5, 1.0], overrides=TINY, episodes=4
    )
    _check_outputs(out, table, METHODS, [0.5, 1.0], [0, 1])
    # the gradient methods keep their target density exactly (uniform, round(d * n) per layer)
    gradient = table[table["method"].isin(["static", "set", "rigl"])]
    np.testing.assert_allclose(gradient["actual_density"], 0.5, atol=0.02)
    # run again: every sweep is finished, nothing reruns, the same table
    again = compare_pruning(
        out, budget=4000, seeds=[0, 1], densities=[0.5, 1.0], overrides=TINY, episodes=4
    )
    pd.testing.assert_frame_equal(
        again.drop(columns=["wall_s", "compile_s"]), table.drop(columns=["wall_s", "compile_s"])
    )


def test_a_small_comparison_runs_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "compare"
    args = ["compare-pruning", "--budget", "2000", "--seeds", "0", "--densities", "0.5,1"]
    args += ["--methods", "dense", "--episodes", "4", "--out", str(out), "--devices", "1"]
    for item in TINY:
        args += ["--set", item]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "| dense | 1 |" in printed  # every method: the slow test above
    _check_outputs(out, pd.read_csv(out / "comparison.csv"), ["dense"], [0.5, 1.0], [0])
