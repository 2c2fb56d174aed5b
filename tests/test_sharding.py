"""Device sharding, chunked evaluation, archive placement and multi-host helpers.

Multi-device equivalence runs in subprocesses with ``--xla_force_host_platform_device_count``
(this process's JAX is already initialised with one CPU device by conftest).
"""

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from synprune_jax import sharding
from synprune_jax.algorithms import map_elites
from synprune_jax.archives import GridSpec, init_archive
from synprune_jax.tasks import KinematicArm

ROOT = Path(__file__).resolve().parents[1]
TASK = KinematicArm(num_joints=4, genotype="mlp", hidden_sizes=(8,))
CONFIG = map_elites.MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (4, 4)), batch_size=16)


@functools.cache
def _population(size, seed=0):
    make = jax.jit(map_elites.random_population, static_argnums=(1, 2, 4))
    return make(jax.random.key(seed), TASK, CONFIG, map_elites.MutationHyper(), size)


def _assert_trees_equal(left, right):
    left_leaves, right_leaves = jax.tree_util.tree_leaves(left), jax.tree_util.tree_leaves(right)
    assert jax.tree_util.tree_structure(left) == jax.tree_util.tree_structure(right)
    for a, b in zip(left_leaves, right_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _run_with_devices(run_report, code: str, num_devices: int, timeout: int = 600) -> dict:
    """``code`` in a fresh process with ``num_devices`` emulated CPU devices (``run_report`` is
    the conftest fixture)."""
    prelude = textwrap.dedent("""
        import json, os, jax
        jax.config.update("jax_numpy_rank_promotion", "raise")
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        report = {"num_devices": jax.device_count()}
    """)
    return run_report(
        prelude + textwrap.dedent(code) + "\nprint('REPORT ' + json.dumps(report))",
        env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}"},
        timeout=timeout,
    )


MULTI_DEVICE = """
import shutil, tempfile
import numpy as np
from synprune_jax import sharding, sweeps
from synprune_jax.algorithms import map_elites
from synprune_jax.archives import GridSpec, add, init_archive
from synprune_jax.tasks import KinematicArm

def equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))

mesh = sharding.make_mesh()
task = KinematicArm(num_joints=4, genotype="mlp", hidden_sizes=(8,))
config = map_elites.MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (4, 4)),
                                    batch_size=16)
population = map_elites.random_population(jax.random.key(0), task, config,
                                          map_elites.MutationHyper(), 16)
plain = jax.jit(task.evaluate)(jax.random.key(1), population)
for method in sharding.SHARD_METHODS:
    result = jax.jit(sharding.ShardedTask(task, mesh, method=method).evaluate)(
        jax.random.key(1), population)
    report[f"evaluate_{method}_equal"] = equal(plain, result)
    report[f"evaluate_{method}_devices"] = len(result.fitness.sharding.device_set)
# 5 individuals over 4 devices: padded with copies of individual 0, their results dropped
odd = jax.tree_util.tree_map(lambda leaf: leaf[:5], population)
result = jax.jit(sharding.ShardedTask(task, mesh).evaluate)(jax.random.key(1), odd)
report["padded_evaluate_equal"] = equal(jax.jit(task.evaluate)(jax.random.key(1), odd), result)
report["padded_evaluate_shape"] = list(result.descriptors.shape)

# insertion into an archive split over cells (4 cells per device) == replicated insertion
spec = config.archive
archive = init_archive(spec, population[0])
add_jit = jax.jit(add, static_argnums=0)
expected, inserted_expected = add_jit(spec, archive, population, plain)
got, inserted = add_jit(spec, sharding.place_archive(archive, mesh, sharded=True), population,
                        plain)
report["archive_devices"] = len(got.fitness.sharding.device_set)
report["archive_equal"] = equal(expected, got) and bool(np.array_equal(inserted,
                                                                       inserted_expected))
report["num_inserted"] = int(np.sum(inserted))
replicated = sharding.place_archive(archive, mesh)
report["replicated_devices"] = len(replicated.fitness.sharding.device_set)
report["replicated_full_copy"] = replicated.fitness.addressable_shards[0].data.shape[0]

# a sweep of 5 runs split over 4 devices (padded to 8) == the same sweep on one device; a group
# of 3 runs uses only 3 of the 4 devices (no padding copies)
overrides = ["map_elites.batch_size=8", "map_elites.initial_batch_size=8",
             "archive.resolution=4,4", "task.num_joints=4", "run.num_generations=2",
             "run.chunk_size=1", "run.progress=false"]
tables = {}
for devices in (4, 1):
    out = tempfile.mkdtemp()
    result = sweeps.sweep("me-arm", seeds=[0, 1, 2, 3, 4], out=out, overrides=overrides,
                          devices=devices, report=False, plots=False)
    tables[devices] = result.table
    report[f"padded_{devices}"] = result.timing[0]["padded_runs"]
    shutil.rmtree(out)
report["sweep_equal"] = bool(tables[4].equals(tables[1]))
report["sweep_rows"] = len(tables[4])
out = tempfile.mkdtemp()
result = sweeps.sweep("me-arm", seeds=[0, 1, 2], out=out, overrides=overrides, devices=4,
                      report=False, plots=False)
report["small_group"] = [result.timing[0]["num_devices"], result.timing[0]["padded_runs"]]
report["small_group_equal"] = bool(result.table.equals(
    tables[1][tables[1]["seed"].isin([0, 1, 2])].reset_index(drop=True)))
shutil.rmtree(out)
"""


def test_four_devices_give_the_single_device_results(run_report):
    report = _run_with_devices(run_report, MULTI_DEVICE, 4)
    assert report["num_devices"] == 4
    for method in sharding.SHARD_METHODS:
        assert report[f"evaluate_{method}_equal"], method
        assert report[f"evaluate_{method}_devices"] == 4, method
    assert report["padded_evaluate_equal"] and report["padded_evaluate_shape"] == [5, 2]
    assert report["archive_equal"] and report["archive_devices"] == 4
    assert report["num_inserted"] > 1  # several cells, on several shards, were written
    assert report["replicated_devices"] == 4 and report["replicated_full_copy"] == 16
    assert report["padded_4"] == 3 and report["padded_1"] == 0
    assert report["sweep_equal"] and report["sweep_rows"] == 5 * 2
    assert report["small_group"] == [3, 0] and report["small_group_equal"]


MAP_ELITES_SHARDED = """
import jax.numpy as jnp
import numpy as np
from synprune_jax import sharding
from synprune_jax.algorithms import map_elites
from synprune_jax.archives import GridSpec
from synprune_jax.tasks import BraxTask, KinematicArm

mesh = sharding.make_mesh()
hyper = map_elites.MutationHyper()

def run(task, config):
    algorithm = map_elites.MapElites(config, task)
    def go(key):
        state = algorithm.init(jax.random.fold_in(key, 99), hyper)
        def body(state, generation):
            state, metrics = algorithm.step(jax.random.fold_in(key, generation), state, hyper)
            return state, metrics["qd_score"]
        return jax.lax.scan(body, state, jnp.arange(3))
    return jax.device_get(jax.jit(go)(jax.random.key(3)))

def equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                    jax.tree_util.tree_leaves(b)))

arm = KinematicArm(num_joints=4, genotype="mlp", hidden_sizes=(8,))
config = map_elites.MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (4, 4)),
                                    batch_size=16)
report["arm_equal"] = equal(run(arm, config), run(sharding.ShardedTask(arm, mesh), config))
brax = BraxTask(env_name="inverted_pendulum", backend="spring", episode_length=10,
                hidden_sizes=(4,))
lower, upper = brax.descriptor_bounds()
config = map_elites.MapElitesConfig(archive=GridSpec(tuple(lower), tuple(upper), (4, 4)),
                                    batch_size=8)
report["brax_equal"] = equal(run(brax, config), run(sharding.ShardedTask(brax, mesh), config))
"""


@pytest.mark.slow
def test_map_elites_with_a_sharded_population_is_unchanged(run_report):
    report = _run_with_devices(run_report, MAP_ELITES_SHARDED, 4)
    assert report["arm_equal"] and report["brax_equal"]


MULTI_HOST = """
import sys
from synprune_jax import sharding
index, count = sharding.initialize_distributed(os.environ["COORD"], 2, int(os.environ["PID"]))
import jax.numpy as jnp
import numpy as np
mesh = sharding.make_mesh(global_devices=True)
values = jnp.arange(8, dtype=jnp.float32)
local = np.arange(8, dtype=np.float32).reshape(2, 4)[index]
array = jax.make_array_from_process_local_data(sharding.leading_axis_sharding(mesh), local)
total = jax.jit(lambda x: jnp.sum(x * 2.0), out_shardings=sharding.replicated_sharding(mesh))(
    array)
report.update(index=index, count=count, global_devices=jax.device_count(),
              local_devices=jax.local_device_count(), total=float(total),
              gathered=sharding.gather_to_host(array).tolist())
"""


@pytest.mark.slow
def test_two_processes_on_one_machine_form_one_job(tmp_path):
    """``jax.distributed`` with 2 local processes x 2 CPU devices: one 4-device mesh."""
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ,
        COORD=f"localhost:{port}",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
    )
    prelude = "import json, os, jax\nreport = {}\n"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                prelude + MULTI_HOST + "\nprint('REPORT ' + json.dumps(report))",
            ],
            cwd=ROOT,
            env=dict(env, PID=str(pid)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        lines = [line for line in stdout.splitlines() if line.startswith("REPORT ")]
        assert process.returncode == 0 and lines, stderr[-3000:]
        reports.append(json.loads(lines[-1][len("REPORT ") :]))
    assert sorted(report["index"] for report in reports) == [0, 1]
    for report in reports:
        assert report["count"] == 2 and report["global_devices"] == 4
        assert report["local_devices"] == 2
        assert report["total"] == 2.0 * sum(range(8))
        assert report["gathered"] == list(map(float, range(8)))


# ------------------------------------------------------------------------------------------
# In-process (one device).


@pytest.mark.parametrize("chunk_size", [4, 5, 16, 64])
def test_chunked_evaluation_is_identical(chunk_size):
    population = _population(16)
    expected = jax.jit(TASK.evaluate)(jax.random.key(1), population)
    chunked = sharding.ChunkedTask(TASK, chunk_size)
    result = jax.jit(chunked.evaluate)(jax.random.key(1), population)
    _assert_trees_equal(expected, result)
    assert result.fitness.shape == (16,) and result.descriptors.shape == (16, 2)


def test_chunked_evaluation_runs_in_chunks():
    population = _population(16)
    jaxpr = jax.make_jaxpr(sharding.ChunkedTask(TASK, 5).evaluate)(jax.random.key(1), population)
    scans = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == 4  # ceil(16 / 5) chunks


@pytest.mark.slow
def test_chunked_brax_evaluation_is_identical():
    from synprune_jax.tasks import BraxTask

    task = BraxTask(
        env_name="inverted_pendulum", backend="spring", episode_length=10, hidden_sizes=(4,)
    )
    lower, upper = task.descriptor_bounds()
    config = map_elites.MapElitesConfig(archive=GridSpec(tuple(lower), tuple(upper), (4, 4)))
    population = map_elites.random_population(
        jax.random.key(0), task, config, map_elites.MutationHyper(), 12
    )
    expected = jax.jit(task.evaluate)(jax.random.key(1), population)
    result = jax.jit(sharding.ChunkedTask(task, 5).evaluate)(jax.random.key(1), population)
    _assert_trees_equal(expected, result)


def test_wrappers_forward_the_task_protocol():
    mesh = sharding.make_mesh(1)
    build = (
        lambda: sharding.ChunkedTask(TASK, 4),
        lambda: sharding.ShardedTask(TASK, mesh),
        lambda: sharding.ChunkedTask(sharding.ShardedTask(TASK, mesh), 8),
    )
    for make in build:
        wrapped = make()
        assert wrapped.descriptor_names == TASK.descriptor_names
        assert wrapped.spec == TASK.spec and wrapped.maskable() == TASK.maskable()
        assert wrapped.num_joints == 4  # other attributes come from the inner task
        np.testing.assert_array_equal(wrapped.descriptor_bounds()[1], TASK.descriptor_bounds()[1])
        assert sharding.unwrap(wrapped) is TASK
        # static, compared by value: equal wrappers share jit caches and sweep groups
        assert wrapped == make() and hash(wrapped) == hash(make())
    assert sharding.ChunkedTask(TASK, 4) != sharding.ChunkedTask(TASK, 8)
    # MAP-Elites accepts a wrapped task unchanged, and compares by it
    assert map_elites.MapElites(CONFIG, sharding.ChunkedTask(TASK, 4)) == map_elites.MapElites(
        CONFIG, sharding.ChunkedTask(TASK, 4)
    )


def test_wrapper_validation():
    mesh = sharding.make_mesh(1)
    with pytest.raises(ValueError, match="method"):
        sharding.ShardedTask(TASK, mesh, method="pmap")
    with pytest.raises(ValueError, match="axis"):
        sharding.ShardedTask(TASK, mesh, axis_name="model")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            sharding.ChunkedTask(TASK, bad)
    with pytest.raises(ValueError, match="num_devices"):
        sharding.make_mesh(len(jax.local_devices()) + 1)
    with pytest.raises(ValueError, match="multiple of the device count"):
        fake = sharding.make_mesh(1)
        sharding.shard_leading_axis({"x": np.zeros(())}, fake)


def test_archive_memory_is_exact():
    archive = jax.eval_shape(
        lambda: init_archive(
            CONFIG.archive,
            map_elites.random_population(
                jax.random.key(0), TASK, CONFIG, map_elites.MutationHyper(), 1
            )[0],
        )
    )
    # genome: MLP 4 -> 8 -> 4 weights and biases (float32 params + bool masks) + 2 float rates;
    # per cell also fitness, density (float32) and descriptors, centroids (2 float32 each)
    params = 4 * 8 + 8 + 8 * 4 + 4
    per_cell = params * 4 + params * 1 + 2 * 4 + 4 + 4 + 2 * 4 + 2 * 4
    memory = sharding.archive_memory(archive, 4)
    assert memory["total_bytes"] == 16 * per_cell
    assert memory["replicated_per_device_bytes"] == 16 * per_cell
    assert memory["sharded_per_device_bytes"] == 4 * per_cell
    assert sharding.archive_memory(archive, 3)["sharded_per_device_bytes"] == 6 * per_cell


def test_initialize_distributed_single_process_is_a_no_op(monkeypatch):
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: called.append(kwargs))
    assert sharding.initialize_distributed(num_processes=1) == (0, 1)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert sharding.initialize_distributed() == (0, 1)
    assert called == []
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    sharding.initialize_distributed()
    assert called == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}]
    np.testing.assert_array_equal(sharding.gather_to_host(np.arange(3)), np.arange(3))


# In a subprocess; test_four_devices_give_the_single_device_results checks the split itself.
@pytest.mark.slow
def test_cli_task_devices_creates_cpu_devices_and_resumes(tmp_path, run_report):
    # `task.devices=2` on a CPU: the CLI creates 2 CPU devices before JAX starts (no XLA_FLAGS),
    # the evaluation is split over them, a run cut at 10 generations resumes to the same metrics
    # as an uninterrupted one; batches that do not split evenly (an odd MAP-Elites batch, an ES
    # that also evaluates its mean, GA children) are padded; a GA seeded from the sharded run's
    # archive builds it without claiming devices.
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from synprune_jax.cli import main
        root = Path({str(tmp_path)!r})
        arm = ["me-arm", "--set", "task.devices=2", "--set", "map_elites.batch_size=32",
               "--set", "map_elites.initial_batch_size=64", "--set", "run.chunk_size=5",
               "--set", "run.checkpoint_every=5", "--set", "run.progress=false"]
        assert main(["run", *arm, "--set", "run.num_generations=20", "--out",
                     str(root / "full")]) == 0
        assert main(["run", *arm, "--set", "run.num_generations=10", "--out",
                     str(root / "cut")]) == 0
        config = json.loads((root / "cut" / "config.json").read_text())
        config["run"]["num_generations"] = 20
        (root / "cut" / "config.json").write_text(json.dumps(config))
        assert main(["resume", str(root / "cut")]) == 0
        odd = main(["run", *arm, "--set", "map_elites.batch_size=33", "--set",
                    "run.num_generations=5", "--out", str(root / "odd")])
        es = main(["run", "es-prune-arm", "--set", "task.devices=2",
                   "--set", "es.population_size=30", "--set", "run.num_generations=3",
                   "--set", "run.progress=false", "--out", str(root / "es")])
        ga = main(["run", "ga-arm", "--set", "task.devices=2", "--set", "ga.population_size=10",
                   "--set", "ga.elite_fraction=0.3", "--set", "run.num_generations=3",
                   "--set", "run.progress=false", "--out", str(root / "ga")])
        from synprune_jax.experiments.es import load_archive_elites
        elites = load_archive_elites(str(root / "full"), 4)
        import jax
        print("REPORT " + json.dumps({{"devices": jax.local_device_count(), "odd": odd,
                                       "es": es, "ga": ga,
                                       "elites": int(elites["fitness"].shape[0]),
                                       "config_devices": config["task"]["devices"]}}))
    """)
    report = run_report(code)
    assert report == {"devices": 2, "odd": 0, "es": 0, "ga": 0, "elites": 4, "config_devices": 2}
    assert (tmp_path / "full" / "metrics.csv").read_text() == (
        tmp_path / "cut" / "metrics.csv"
    ).read_text()


def test_task_devices_needs_the_devices(tmp_path, capsys):
    # This process has one CPU device (JAX has started; jax_num_cpu_devices can no longer
    # change): a clear error, nothing compiled.
    from synprune_jax.cli import main

    jax.devices()
    assert jax.local_device_count() == 1

    assert main(["run", "me-arm", "--set", "task.devices=2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "task.devices=2 but only 1 local device(s) exist" in err
    assert "jax_num_cpu_devices" in err
    assert main(["run", "me-arm", "--set", "task.devices=0", "--out", str(tmp_path / "y")]) == 2
    assert "task.devices must be a positive int" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_es_info_recording_keeps_a_sharding_wrapper():
    from synprune_jax.analysis.learning_speed import brax_observations
    from synprune_jax.tasks import BraxTask

    task = sharding.ShardedTask(
        BraxTask("hopper", episode_length=4, hidden_sizes=(2,)), sharding.make_mesh(1)
    )
    recording = brax_observations(task)
    population = jax.eval_shape(
        lambda k: map_elites.random_population(
            k,
            task,
            map_elites.MapElitesConfig(
                archive=GridSpec((0.0, 0.0), (1.0, 1.0), (2, 2)), batch_size=3
            ),
            map_elites.MutationHyper(),
            3,
        ),
        jax.random.key(0),
    )
    observations, alive = jax.eval_shape(recording, jax.random.key(0), population)
    assert observations.shape == (3, 4, 11) and alive.shape == (3, 4)


def test_pad_rows_pads_every_leaf_with_row_zero():
    tree = {"a": np.arange(5 * 2).reshape(5, 2), "b": np.arange(5) * 10.0}
    padded, size = sharding.pad_rows(tree, 4)
    assert size == 5
    np.testing.assert_array_equal(padded["a"], np.r_[tree["a"], tree["a"][[0, 0, 0]]])
    np.testing.assert_array_equal(padded["b"], [0, 10, 20, 30, 40, 0, 0, 0])
    same, size = sharding.pad_rows(tree, 5)  # already a multiple: returned as it is
    assert same is tree and size == 5
    small, size = sharding.pad_rows({"a": np.array([7, 8])}, 3)  # fewer rows than the multiple
    assert size == 2 and small["a"].tolist() == [7, 8, 7]


def test_devices_mesh_validates_before_building():
    from synprune_jax.config import ConfigError

    assert sharding.devices_mesh(1, "train.devices") is None
    for bad in (0, -2, True, 2.0, "2", None):
        with pytest.raises(ConfigError, match="train.devices must be a positive int"):
            sharding.devices_mesh(bad, "train.devices")
    with pytest.raises(ConfigError, match=r"train.devices=\d+ but only \d+ local device\(s\)"):
        sharding.devices_mesh(jax.local_device_count() + 1, "train.devices")
