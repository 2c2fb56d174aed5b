"""Tests for the host runner and orbax checkpoints, with a toy random-walk algorithm."""

import json

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import assert_trees_equal  # noqa: E402
from flax import struct  # noqa: E402

from synprune_jax import checkpoint, runner  # noqa: E402
from synprune_jax.runner import RunConfig, read_metrics, run  # noqa: E402


@struct.dataclass
class ToyState:
    generation: jax.Array  # int32 []
    position: jax.Array  # float32 [4]
    steps_taken: jax.Array  # int32 []


class ToyAlgorithm:
    """Random walk with step size ``hyper``; counts how often `step` is traced."""

    default_hyper = 0.1

    def __init__(self):
        self.traces = 0

    def init(self, key, hyper):
        return ToyState(
            generation=jnp.int32(0),
            position=jax.random.normal(key, (4,)),
            steps_taken=jnp.int32(0),
        )

    def step(self, key, state, hyper):
        self.traces += 1
        position = state.position + hyper * jax.random.normal(key, (4,))
        new_state = state.replace(position=position, steps_taken=state.steps_taken + 1)
        metrics = {
            "norm": jnp.linalg.norm(position),
            "max_fitness": jnp.max(position),
            "generation_seen": state.generation,
            "positive": jnp.all(position > 0),
        }
        return new_state, metrics


def _config(**overrides):
    values = dict(num_generations=12, seed=3, chunk_size=3, checkpoint_every=6, progress=False)
    values.update(overrides)
    return RunConfig(**values)


@pytest.mark.parametrize("metrics_format", ["csv", "jsonl"])
def test_metrics_rows_and_files(tmp_path, metrics_format):
    algorithm = ToyAlgorithm()
    config = _config(num_generations=7, metrics_format=metrics_format)
    state, history = run(algorithm, tmp_path, config)
    assert int(state.generation) == 7 and int(state.steps_taken) == 7
    assert (tmp_path / f"metrics.{metrics_format}").exists()
    # rows are numbered by completed generations, 1..N; the step that produced row g saw g - 1
    np.testing.assert_array_equal(history["generation"], np.arange(1, 8))
    np.testing.assert_array_equal(history["generation_seen"], np.arange(0, 7))
    assert set(history) == {"generation", "norm", "max_fitness", "generation_seen", "positive"}
    assert history["norm"].dtype == np.float64 and history["positive"].dtype == np.int64
    # the last row is the final state's metric, exactly (float32 -> text -> float64 round trip)
    assert np.float32(history["norm"][-1]) == np.linalg.norm(np.asarray(state.position))
    on_file = read_metrics(tmp_path)
    for name in history:
        np.testing.assert_array_equal(on_file[name], history[name])
    # checkpoints at 6 (interval) and 7 (end); only the last two are kept
    assert checkpoint.all_steps(tmp_path / "checkpoints") == [6, 7]
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["init_compile_s"] > 0
    assert set(timing["chunk_compile_s"]) == {"3", "1"}
    assert timing["seconds_per_generation"] > 0 and timing["end_generation"] == 7
    assert json.loads((tmp_path / "run_config.json").read_text())["seed"] == 3


def test_resume_after_kill_is_identical(tmp_path):
    config = _config()
    state_a, history_a = run(ToyAlgorithm(), tmp_path / "a", config)

    class Killed(Exception):
        pass

    def kill_after_nine(state, rows):
        assert rows["generation"][-1] == int(state.generation)
        if int(state.generation) == 9:  # checkpoint at 6, metrics written up to 9
            raise Killed

    with pytest.raises(Killed):
        run(ToyAlgorithm(), tmp_path / "b", config, on_chunk=kill_after_nine)
    assert checkpoint.latest_step(tmp_path / "b" / "checkpoints") == 6
    assert read_metrics(tmp_path / "b")["generation"][-1] == 9
    state_b, history_b = run(ToyAlgorithm(), tmp_path / "b", config, resume=True)

    assert_trees_equal(state_a, state_b)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (
        tmp_path / "b" / "metrics.csv"
    ).read_bytes()
    for name in history_a:
        np.testing.assert_array_equal(history_a[name], history_b[name])


def test_resume_from_shorter_run_and_finished_run(tmp_path):
    state_a, _ = run(ToyAlgorithm(), tmp_path / "a", _config(metrics_format="jsonl"))
    run(ToyAlgorithm(), tmp_path / "b", _config(num_generations=5, metrics_format="jsonl"))
    state_b, _ = run(ToyAlgorithm(), tmp_path / "b", _config(metrics_format="jsonl"), resume=True)
    assert_trees_equal(state_a, state_b)
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (
        tmp_path / "b" / "metrics.jsonl"
    ).read_bytes()

    # resuming a finished run: no work, same state, files untouched
    before = (tmp_path / "b" / "metrics.jsonl").read_bytes()
    algorithm = ToyAlgorithm()
    state_c, history_c = run(
        algorithm, tmp_path / "b", _config(metrics_format="jsonl"), resume=True
    )
    assert algorithm.traces == 0
    assert_trees_equal(state_a, state_c)
    assert (tmp_path / "b" / "metrics.jsonl").read_bytes() == before
    assert len(history_c["generation"]) == 12


def test_chunk_size_does_not_change_results(tmp_path):
    state_3, history_3 = run(ToyAlgorithm(), tmp_path / "c3", _config(num_generations=11))
    state_5, history_5 = run(
        ToyAlgorithm(), tmp_path / "c5", _config(num_generations=11, chunk_size=5)
    )
    assert_trees_equal(state_3, state_5)
    assert (tmp_path / "c3" / "metrics.csv").read_bytes() == (
        tmp_path / "c5" / "metrics.csv"
    ).read_bytes()


@pytest.mark.parametrize("num_generations, expected_traces", [(9, 1), (10, 2)])
def test_chunk_compiles_once(tmp_path, num_generations, expected_traces):
    # 3 full chunks of 3 -> one compile; 3 chunks of 3 + a remainder of 1 -> one more
    algorithm = ToyAlgorithm()
    run(algorithm, tmp_path, _config(num_generations=num_generations))
    assert algorithm.traces == expected_traces


def test_refuses_to_overwrite_an_existing_run(tmp_path):
    run(ToyAlgorithm(), tmp_path, _config(num_generations=3))
    before = (tmp_path / "metrics.csv").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True"):
        run(ToyAlgorithm(), tmp_path, _config(num_generations=3))
    assert (tmp_path / "metrics.csv").read_bytes() == before
    with pytest.raises(ValueError, match="seed"):
        run(ToyAlgorithm(), tmp_path, _config(num_generations=6, seed=4), resume=True)


def test_resume_without_checkpoint_starts_afresh(tmp_path):
    def kill(state, rows):
        raise RuntimeError("killed")

    config = _config(checkpoint_every=6)
    with pytest.raises(RuntimeError):
        run(ToyAlgorithm(), tmp_path / "b", config, on_chunk=kill)  # dies at 3, no checkpoint
    state_b, _ = run(ToyAlgorithm(), tmp_path / "b", config, resume=True)
    state_a, _ = run(ToyAlgorithm(), tmp_path / "a", config)
    assert_trees_equal(state_a, state_b)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (
        tmp_path / "b" / "metrics.csv"
    ).read_bytes()


def test_run_config_validation_and_checkpoint_rounding():
    assert RunConfig(num_generations=5, chunk_size=4, checkpoint_every=10).checkpoint_interval == 12
    assert RunConfig(num_generations=5, chunk_size=5, checkpoint_every=5).checkpoint_interval == 5
    for bad in (
        dict(num_generations=0),
        dict(num_generations=5, chunk_size=0),
        dict(num_generations=5, checkpoint_every=-1),
        dict(num_generations=2.5),
        dict(num_generations=5, seed=-1),
        dict(num_generations=5, metrics_format="parquet"),
    ):
        with pytest.raises(ValueError):
            RunConfig(**bad)


def test_keys_do_not_depend_on_chunking():
    key = runner.generation_key(3, jnp.int32(5))
    expected = jax.random.fold_in(jax.random.key(3), 5)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(expected))


@struct.dataclass
class Inner:
    mask: jax.Array
    weights: jax.Array


@struct.dataclass
class NestedState:
    generation: jax.Array
    inner: Inner
    extras: dict


def test_checkpoint_round_trip_nested_state(tmp_path):
    state = NestedState(
        generation=jnp.int32(7),
        inner=Inner(
            mask=jnp.array([[True, False], [False, True]]),
            weights=jnp.array([[1.5, -jnp.inf], [jnp.nan, 0.25]], dtype=jnp.float32),
        ),
        extras={
            "count": jnp.arange(3, dtype=jnp.int32),
            "sigma": jnp.float32(0.5),
            # zero-size leaves (MJX's `act` without actuator states): orbax cannot save them
            "empty": jnp.zeros((4, 0), jnp.float32),
        },
    )
    directory = tmp_path / "checkpoints"
    assert checkpoint.latest_step(directory) is None
    for step in (5, 6, 7):
        checkpoint.save(directory, step, state)
    assert checkpoint.latest_step(directory) == 7
    assert checkpoint.all_steps(directory) == [6, 7]  # max_to_keep=2
    with pytest.raises(FileExistsError):
        checkpoint.save(directory, 7, state)

    abstract = jax.eval_shape(lambda: state)
    restored = checkpoint.restore(directory, 7, abstract)
    assert isinstance(restored, NestedState) and isinstance(restored.inner, Inner)
    assert_trees_equal(state, restored)
    assert restored.inner.mask.dtype == jnp.bool_
    assert restored.extras["empty"].shape == (4, 0)
    with pytest.raises(FileNotFoundError):
        checkpoint.restore(directory, 5, abstract)


def test_an_older_checkpoint_restores_added_fields_as_unknown(tmp_path):
    """A checkpoint written before ``evaluated_at`` existed restores it as -1; any other
    difference of structure is still refused."""
    old = NestedState(
        generation=jnp.int32(7),
        inner=Inner(mask=jnp.array([True, False]), weights=jnp.array([1.5, 2.0])),
        extras={"count": jnp.arange(3, dtype=jnp.int32)},
    )
    checkpoint.save(tmp_path, 7, old)
    added = {**old.extras, "evaluated_at": jnp.zeros(3, jnp.int32)}
    restored = checkpoint.restore(tmp_path, 7, old.replace(extras=added))
    assert restored.extras["evaluated_at"].tolist() == [-1, -1, -1]
    assert restored.extras["count"].tolist() == [0, 1, 2]
    assert_trees_equal(restored.inner, old.inner)
    unknown = {**old.extras, "something_else": jnp.zeros(3, jnp.int32)}
    with pytest.raises(ValueError, match="structures do not match"):
        checkpoint.restore(tmp_path, 7, old.replace(extras=unknown))
    with pytest.raises(ValueError, match="structures do not match"):  # a field removed
        checkpoint.restore(tmp_path, 7, old.replace(extras={}))


def test_reruns_in_one_process_reuse_the_compiled_programs(tmp_path, monkeypatch):
    """Runs of an equal algorithm (another seed, other hyper-parameter values, a resume) trace
    and compile nothing again: seed and hyper-parameters are arguments of the programs."""
    algorithm = ToyAlgorithm()
    first, _ = run(algorithm, tmp_path / "a", _config())
    traces = algorithm.traces
    assert traces > 0
    other_seed, _ = run(algorithm, tmp_path / "b", _config(seed=4))
    again, _ = run(algorithm, tmp_path / "c", _config())
    run(algorithm, tmp_path / "d", _config(num_generations=6))
    resumed, _ = run(algorithm, tmp_path / "d", _config(), resume=True)
    bigger, _ = run(algorithm, tmp_path / "e", _config(), hyper=0.2)
    assert algorithm.traces == traces
    assert_trees_equal(first, again)
    assert_trees_equal(first, resumed)
    assert not np.array_equal(first.position, other_seed.position)
    # the value counts: 0.2 moves twice as far from the same start as the default 0.1
    start = ToyAlgorithm().init(runner.init_key(_config().seed), 0.1)
    np.testing.assert_allclose(
        np.asarray(bigger.position) - np.asarray(start.position),
        2 * (np.asarray(first.position) - np.asarray(start.position)),
        rtol=1e-5,
        atol=1e-6,
    )
    # a Python float and a float32 of equal value are one program with one result
    same, _ = run(algorithm, tmp_path / "f", _config(), hyper=np.float32(0.2))
    assert algorithm.traces == traces
    assert_trees_equal(bigger, same)
    monkeypatch.setattr(runner, "PROGRAMS_KEPT", 2)
    for index in range(runner.PROGRAMS_KEPT + 2):  # the cache keeps the latest programs only
        run(
            algorithm,
            tmp_path / f"g{index}",
            _config(num_generations=4 + index, chunk_size=4 + index),
        )
    assert len(runner._PROGRAMS) == runner.PROGRAMS_KEPT


def test_runs_differing_in_seed_share_one_compiled_program(tmp_path):
    """Seed and hyper-parameters are arguments of the runner's programs, not constants in them:
    with a persistent compilation cache (as the CLI keeps one), a second run with another seed
    or another hyper-parameter value compiles nothing new. Runs in a subprocess with a fresh
    cache; the keys still follow the seed."""
    import os
    import subprocess
    import sys

    script = f"""
import os, sys, jax
sys.path.insert(0, {os.path.dirname(__file__)!r})
import numpy as np
# imports conftest, which sets a cache: set ours after
from test_runner import ToyAlgorithm, _config
cache = {str(tmp_path / "cache")!r}
jax.config.update("jax_compilation_cache_dir", cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
from synprune_jax.runner import run
counts = []
finals = []
for name, seed, hyper in (("a", 1, 0.1), ("b", 2, 0.1), ("c", 1, 0.1), ("d", 1, 0.3)):
    state, _ = run(ToyAlgorithm(), os.path.join({str(tmp_path)!r}, name), _config(seed=seed),
                   hyper=hyper)
    finals.append(np.asarray(state.position))
    counts.append(len(os.listdir(cache)))
print(counts[0], counts[1], counts[2], counts[3], bool(np.allclose(finals[0], finals[1])),
      bool(np.array_equal(finals[0], finals[2])), bool(np.allclose(finals[0], finals[3])))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    first, second, third, fourth, same_12, same_13, same_14 = completed.stdout.split()[-7:]
    assert int(first) > 0
    # seed 2, seed 1 again, another hyper value: nothing new compiled
    assert int(second) == int(first) == int(third) == int(fourth)
    assert same_12 == "False" and same_13 == "True" and same_14 == "False"
