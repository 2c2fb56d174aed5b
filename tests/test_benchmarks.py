"""Smoke tests of the benchmark suite at toy sizes: functions run, records are well-formed JSON.

No timing assertions: speed is measured only by the benchmark scripts themselves. The Brax and
arm MAP-Elites benchmarks compile whole programs, so their toy runs are marked slow, as are the
two-device worker of the QDax comparison and the transfer-heads script (30-60 s each on 2 cores),
and, to keep the default suite in its budget, the toy runs of masked_vs_dense, rng_compile and
task_suites (5-10 s each cold).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is a top-level package of the repository, not installed
    sys.path.insert(0, ROOT)

from conftest import optimized_compilation  # noqa: E402

import benchmarks  # noqa: E402
from benchmarks import (  # noqa: E402
    archive_insertion,
    masked_vs_dense,
    pruned_inference,
    qdax_map_elites,
    run,
)


def _check_records(records, benchmark_keys):
    assert records, "a benchmark returned no records"
    for record in records:
        line = json.dumps(record, default=benchmarks._json_default)
        assert json.loads(line) == json.loads(line)  # round-trips as one JSON object
        assert isinstance(json.loads(line), dict)
    for key in benchmark_keys:
        assert any(key in record for record in records), f"no record has {key!r}"


def _has_qdax() -> bool:
    return benchmarks.peer_status("qdax")[0]


# ----- pure helpers: exact values -------------------------------------------------------------


def test_write_csv_unions_columns(tmp_path):
    path = benchmarks.write_csv(
        str(tmp_path / "x.csv"), [{"a": 1, "b": [2, 3]}, {"a": 0.5, "c": None, "d": "s"}]
    )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["a", "b", "c", "d"]
    assert rows[0] == {"a": "1", "b": "2x3", "c": "", "d": ""}
    assert rows[1] == {"a": "0.5", "b": "", "c": "", "d": "s"}


def test_check_suite_rejects_unknown():
    with pytest.raises(ValueError, match="valid"):
        benchmarks.check_suite("huge")


def test_peer_status_reports_missing_module_plainly():
    available, reason = benchmarks.peer_status("no_such_peer_library_xyz")
    assert not available
    assert "no_such_peer_library_xyz" in reason and "[bench]" in reason
    usable, records = benchmarks.peer_records("no_such_peer_library_xyz")
    assert not usable
    assert records == [
        {"case": "peer_missing", "side": "no_such_peer_library_xyz", "status": reason}
    ]


def test_qd_score_and_time_to_score():
    score, coverage, best = qdax_map_elites.qd_score(np.array([1.0, -np.inf, 3.0, -np.inf]))
    assert (score, coverage, best) == (4.0, 0.5, 3.0)
    assert qdax_map_elites.qd_score(np.full(3, -np.inf)) == (0.0, 0.0, float("-inf"))
    # Chunks of 1 s reaching scores 2, 4, 8: the target 6 is met half-way through the third.
    assert qdax_map_elites.time_to_score([1.0, 1.0, 1.0], [2.0, 4.0, 8.0], 6.0) == 2.5
    assert qdax_map_elites.time_to_score([1.0, 1.0], [2.0, 4.0], 9.0) is None
    assert qdax_map_elites.time_to_score([0.5], [3.0], 1.0) == 0.5


def _two_chunks(side, build_local):
    """Side ``side`` in a 2-device worker and its one-device counterpart built here, both advanced
    two chunks at the toy size (batch 4); checks the worker's bookkeeping and returns
    ``(remote, local, remote_final)``."""
    remote = qdax_map_elites._RemoteSide(side, "toy", 4, 2)
    local = build_local(dict(qdax_map_elites.SIZES["toy"]), 4)
    try:
        for _ in range(2):
            remote.advance()
            local.advance()
        final = remote.final()
    finally:
        remote.close()
    assert remote.process.returncode == 0
    assert len(remote.times) == len(remote.cpu_times) == 2 and min(remote.times) > 0
    assert remote.init_compile_s > 0 and remote.chunk_compile_s > 0
    return remote, local, final


@pytest.mark.slow
def test_sharded_side_runs_in_a_two_device_worker():
    # The ours_sharded side of the QDax comparison: a worker process with 2 CPU devices, driven
    # over a pipe; it reports the same QD-score trace as the one-device side up to float rounding
    # (toy setting: batch 4, 5-step hopper episodes).
    remote, local, final = _two_chunks("ours_sharded", qdax_map_elites.build_ours)
    np.testing.assert_allclose(remote.scores, local.scores, rtol=1e-4)
    np.testing.assert_allclose(final, local.final(), rtol=1e-4)


def test_qdax_distributed_side_runs_in_a_two_device_worker():
    # The qdax_distributed side: QDax's DistributedMAPElites pmapped over the 2 CPU devices of a
    # worker process (2 offspring per device, total batch 4 as the one-device qdax side). Each
    # device creates its slice of the one-device side's initial networks, so the initial
    # repertoires hold the same elites (fitnesses equal up to float rounding); later chunks draw
    # other offspring (one key per device), so only their QD-scores' sanity is checked.
    if not _has_qdax():
        pytest.skip("qdax is not installed here (it lives in .venv-bench)")
    remote, local, final = _two_chunks("qdax_distributed", qdax_map_elites.build_qdax)
    assert remote.memory["state_mb"] == pytest.approx(2 * local.memory["state_mb"])  # replicated
    np.testing.assert_allclose(remote.initial[0], local.initial[0], rtol=1e-5)
    assert remote.initial[1] == local.initial[1] > 0  # same cells filled
    assert all(math.isfinite(score) for score in remote.scores)
    assert final[0] == remote.scores[-1] and final[1] >= remote.initial[1]


def test_pack_unpack_round_trip():
    masks = {"w": jnp.asarray(np.random.default_rng(0).random((3, 5, 7)) < 0.3)}
    packed = masked_vs_dense.pack(masks)
    assert packed["w"].shape == (3, 5) and packed["w"].dtype == jnp.uint8  # ceil(35 / 8) = 5
    np.testing.assert_array_equal(masked_vs_dense.unpack(packed, masks)["w"], masks["w"])


@pytest.mark.slow  # a benchmark script's toy run (5-10 s cold)
def test_compaction_drops_exactly_the_dead_units():
    from synprune_jax.masks import apply_masks
    from synprune_jax.networks import MLPSpec

    spec, params, masks = masked_vs_dense.make_population(jax.random.key(0), 2, 4, 1.0)
    # Individual 0: hidden-1 unit 0 has no input; hidden-2 unit 3 reaches no output.
    kernels = [np.array(k) for k in spec.kernels(masks)]
    kernels[0][0, :, 0] = False
    kernels[1][0, 0, :] = False  # forward pruning of the dead unit's outgoing weights
    kernels[2][0, 3, :] = False
    masks = spec.replace_kernels(masks, [jnp.asarray(k) for k in kernels])
    live = masked_vs_dense.live_units(spec.kernels(masks))
    np.testing.assert_array_equal(live[0], [[False, True, True, True], [True] * 4])
    np.testing.assert_array_equal(live[1], [[True, True, True, False], [True] * 4])
    x = jnp.linspace(-1.0, 1.0, masked_vs_dense.INPUT_SIZE)
    dense = jax.vmap(apply_masks)(params, masks)
    # Width 3 keeps individual 0's live units exactly; width 4 keeps everything of both.
    for widths, individuals in (((3, 3), (0,)), ((4, 4), (0, 1))):
        small_spec, small = masked_vs_dense.compact(spec, params, masks, widths)
        assert isinstance(small_spec, MLPSpec) and small_spec.hidden_sizes == widths
        for index in individuals:
            pick = lambda tree, index=index: jax.tree_util.tree_map(lambda a: a[index], tree)
            np.testing.assert_allclose(
                small_spec.apply_dense(pick(small), x),
                spec.apply_dense(pick(dense), x),
                rtol=1e-5,
                atol=1e-6,
            )


# ----- toy runs of the benchmarks -----------------------------------------------------------


def test_archive_insertion_toy():
    records = archive_insertion.run("toy")
    _check_records(records, ["insertions_per_s"])
    ours = [r for r in records if r.get("side") == "ours"]
    assert len(ours) == 1 and ours[0]["cells"] == 64 and ours[0]["insertions_per_s"] > 0
    if _has_qdax():
        ratio = [r for r in records if r.get("case") == "ratio"]
        assert ratio and ratio[0]["same_fitness"] is True
    else:
        assert records[0]["case"] == "peer_missing" and "qdax" in records[0]["status"]


@pytest.mark.slow  # a benchmark script's toy run (5-10 s cold)
def test_masked_vs_dense_toy():
    records = masked_vs_dense.run("toy")
    _check_records(records, ["ratio_to_dense", "compact_widths"])
    by_variant = {r["variant"]: r for r in records}
    assert set(by_variant) == {
        "dense",
        "masked_once",
        "masked_every_step",
        "packed_bits",
        "compacted",
    }
    for variant in ("masked_every_step", "packed_bits", "compacted"):
        assert by_variant[variant]["max_abs_diff_vs_masked"] < 1e-5, variant
    assert by_variant["packed_bits"]["mask_mb"] < by_variant["masked_once"]["mask_mb"]
    assert by_variant["dense"]["ratio_to_dense"] == 1.0


def test_pruned_inference_forms_agree_and_report_costs():
    from synprune_jax.networks import MLPSpec

    spec = MLPSpec(5, 2, (6, 4))
    params, masks = pruned_inference.random_network(spec, 0.3, 0)
    setting = {"batches": (3,), "repeats": 1, "inner": 1}
    records = pruned_inference.measure(spec, params, masks, {"network": "tiny"}, setting)
    _check_records(records, ["latency_us", "energy_pj_estimate"])
    assert {(r["form"], r["backend"]) for r in records} == {
        ("dense", "jax"),
        ("dense", "numpy"),
        ("masked", "jax"),
        ("masked", "numpy"),
        ("compact", "jax"),
        ("compact", "numpy"),
        ("csr", "scipy"),
    }
    for record in records:
        assert record["max_abs_diff"] < 1e-5, record
    by_form = {r["form"]: r for r in records}
    assert by_form["compact"]["macs"] <= by_form["masked"]["macs"] == 5 * 6 + 6 * 4 + 4 * 2


def test_run_entry_point_writes_csv_and_json(tmp_path, capsys):
    status = run.main(["--suite", "toy", "--only", "archive_insertion", "--out", str(tmp_path)])
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert status == 0
    assert lines[0]["benchmark"] == "machine" and lines[0]["cpu_model"]
    assert lines[-1]["benchmark"] == "suite" and lines[-1]["ran"] == ["archive_insertion"]
    assert any(
        line.get("benchmark") == "archive_insertion" and "insertions_per_s" in line
        for line in lines
    )
    assert (tmp_path / "archive_insertion_toy.csv").exists()
    assert (tmp_path / "machine_toy.csv").exists()


def test_run_rejects_unknown_benchmark():
    with pytest.raises(SystemExit):
        run.main(["--suite", "toy", "--only", "no_such_benchmark"])


@pytest.mark.slow
def test_map_elites_benchmarks_toy(tmp_path):
    from benchmarks import arm_million, plot, scaling

    for module in (qdax_map_elites, arm_million, scaling):
        records = module.run("toy")
        _check_records(records, ["evals_per_s"])
        for record in records:
            if "evals_per_s" in record:
                assert math.isfinite(record["evals_per_s"]) and record["evals_per_s"] > 0
        benchmarks.write_csv(str(tmp_path / f"{module.NAME}_toy.csv"), records)
    written = plot.plot_all(str(tmp_path), "toy")
    assert any(path.endswith("scaling_toy.png") for path in written)


@pytest.mark.slow  # a benchmark script's toy run (5-10 s cold)
def test_rng_compile_variants_draw_the_same_shapes(capsys):
    from benchmarks import rng_compile

    key = jax.random.key(0)
    a, b = rng_compile.per_leaf(key), rng_compile.one_call(key)
    assert [x.shape for x in a] == [x.shape for x in b] == [tuple(s) for s in rng_compile.SHAPES]
    assert rng_compile.main(["--batch", "2", "--repeats", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_variant = {line["variant"]: line for line in lines if "variant" in line}
    assert by_variant["one_call"]["stablehlo_lines"] < by_variant["per_leaf"]["stablehlo_lines"]


# The claim itself (blocks give the vmapped offspring) is tested in test_map_elites.py.
@pytest.mark.slow
def test_mutation_block_benchmark_compares_equal_archives():
    from benchmarks import mutation_block

    with optimized_compilation():
        record = mutation_block.measure("arm", batch=16, block=4, repeats=1)
    assert record["same_archive"] and record["block"] == 4 and record["weights"] == 216
    assert record["whole"]["steady_s"] > 0 and record["blocks"]["min_s"] > 0


def test_profile_ops_indexes_compiled_hlo():
    import jax
    import jax.numpy as jnp

    from benchmarks import profile_ops

    compiled = (
        jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(jnp.ones((4, 3)), jnp.ones((3, 5))).compile()
    )
    index = profile_ops._hlo_index(compiled.as_text())
    shapes = {shape for shape, _ in index.values()}
    assert "f32[4,5]{1,0}" in shapes and "f32[4,3]{1,0}" in shapes
    assert any(op.endswith("dot_general") for _, op in index.values())


@pytest.mark.slow
def test_transfer_heads_benchmark_runs_with_devices(tmp_path):
    # the whole script at a tiny size over 2 CPU devices (it creates them itself): every
    # variant timed, the floors reported with both statistics. The objectives of the variants
    # are compared in tests/test_transfer.py; here only loosely (a rounding difference may flip
    # a near-tied accuracy or AUROC pair)
    environment = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    environment.update(JAX_PLATFORMS="cpu", SYNPRUNE_CACHE_DIR=str(tmp_path / "cache"))
    completed = subprocess.run(
        [
            sys.executable,
            "benchmarks/transfer_heads.py",
            "--population",
            "3",
            "--repeats",
            "1",
            "--epochs",
            "2",
            "--hidden",
            "4",
            "--backbone",
            "pixels",
            "--devices",
            "2",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads(completed.stdout)
    assert record["devices"] == 2 and record["head"]["features"] == 64
    variants = (
        "vmapped",
        "sharded",
        "loop",
        "loop_python_epochs",
        "floor_first_layer",
        "floor_first_layer_sharded",
        "floor_training",
        "floor_training_sharded",
    )
    assert all(record[name]["min_s"] > 0 and record[name]["gflops"] > 0 for name in variants)
    assert record["sharded"]["max_abs_objective_difference_vs_vmapped"] <= 0.05
    assert record["loop_python_epochs"]["max_abs_objective_difference_vs_vmapped"] <= 0.05
    floors = record["speedup_at_floor"]
    assert set(floors) == {name for name in variants if "floor" in name}
    for statistic, time_key in (("min_wall", "min_s"), ("median_wall", "steady_s")):
        assert floors["floor_training"][statistic] == pytest.approx(
            record["loop"][time_key] / record["floor_training"][time_key]
        )
        assert record["speedup_bound_measured"][statistic] == max(
            floors["floor_first_layer"][statistic], floors["floor_first_layer_sharded"][statistic]
        )
    for name in ("nsga2_generation", "nsga2_generation_sharded"):
        assert record[name]["children_per_generation"] == 3 and record[name]["min_s"] > 0


@pytest.mark.slow  # a benchmark script's toy run (5-10 s cold)
def test_task_suites_benchmark_toy():
    from benchmarks import task_suites

    record = task_suites.measure(
        "reach",
        {"num_joints": 2, "episode_length": 5, "num_episodes": 1, "hidden_sizes": (4,)},
        batch=4,
        chunk=1,
        rounds=2,
    )
    for key in ("raw_env_steps_per_s", "evaluate_env_steps_per_s", "engine_env_steps_per_s"):
        assert record[key] > 0 and math.isfinite(record[key]), key
    assert record["overhead_ratio_min"] <= record["overhead_ratio"] <= record["overhead_ratio_max"]
    assert record["episode_length"] == 5 and record["generations_timed"] == 2


@pytest.mark.slow
def test_no_draws_bound_keeps_the_rollouts_own_draws():
    """task_suites' no-draws engine: inside ``without_random_draws`` the algorithm's draws are
    replaced (no Threefry left) while the task's evaluation, traced through ``_RealDrawsTask``,
    gives exactly the task's own results (its episode keys are real); ``--no-draws`` reports a
    finite ``no_draws_ratio``."""
    from benchmarks import engine_overhead, task_suites
    from synprune_jax.tasks import make_task
    from synprune_jax.variation import random_population

    task = make_task("reach", num_joints=2, episode_length=5, num_episodes=2, hidden_sizes=(4,))
    population = random_population(jax.random.key(0), task, 4, jnp.zeros(2))
    key = jax.random.key(3)
    expected = jax.jit(task.evaluate)(key, population)
    with engine_overhead.without_random_draws():
        assert (
            "threefry"
            not in jax.jit(lambda k: jax.random.normal(jax.random.split(k)[0], (3,)))
            .lower(key)
            .as_text()
        )
        got = jax.jit(task_suites._RealDrawsTask(task).evaluate)(key, population)
    np.testing.assert_array_equal(got.fitness, expected.fitness)
    np.testing.assert_array_equal(got.descriptors, expected.descriptors)
    assert (
        jax.random.split is not None
        and "threefry" in jax.jit(lambda k: jax.random.normal(k, (3,))).lower(key).as_text()
    )  # restored on exit
    record = task_suites.measure(
        "reach",
        {"num_joints": 2, "episode_length": 5, "num_episodes": 1, "hidden_sizes": (4,)},
        batch=4,
        chunk=1,
        rounds=2,
        no_draws=True,
    )
    assert record["no_draws_ratio"] > 0 and math.isfinite(record["no_draws_ratio"])


@pytest.mark.slow
def test_engine_overhead_arm_toy():
    """The arm case at a toy size: one run and one parts record per batch; the generation as it
    was before the engine-cost changes fills the same archive as today's (same draws, same
    winners), the run's archive holds real elites (fitness -var(angles) <= 0), and the bound
    without random draws traces no Threefry call."""
    from benchmarks import engine_overhead

    setting = {"batches": (16,), "evaluations": 1600, "chunk": 25, "rounds": 1}
    records = engine_overhead.arm_records(setting)
    run_record, parts = records
    assert run_record["program"] == "run" and parts["program"] == "parts"
    assert run_record["evaluations"] == 1600 and run_record["generations"] == 100
    assert 0 < run_record["cells_filled"] <= 4096
    assert math.isfinite(run_record["qd_score"]) and run_record["qd_score"] <= 0
    assert parts["previous_same_archive"] is True
    assert parts["no_draws_threefry_calls"] == 0  # the bound without random streams has none
    for name in (
        "generation_us",
        "draws_alone_us",
        "evaluate_alone_us",
        "no_draws_us",
        "speedup_vs_previous",
    ):
        assert math.isfinite(parts[name]) and parts[name] > 0
    json.dumps(records)


@pytest.mark.parametrize("cells,num", [(1, 3), (4096, 128), (10_000, 4096)])
def test_sample_indices_draws_as_the_nonzero_table_did(cells, num):
    """archives.sample_indices: same key -> same parents as the jnp.nonzero table it replaced
    (empty, sparse and full archives), so the engine-cost change kept every seeded result."""
    from benchmarks import engine_overhead
    from synprune_jax.archives import Archive, sample_indices

    for density in (0.0, 0.4, 1.0):
        filled = np.random.default_rng(cells + num).random(cells) < density
        archive = Archive(
            genomes=None,
            fitness=jnp.where(jnp.asarray(filled), 1.0, -jnp.inf),
            descriptors=None,
            density=None,
            centroids=None,
        )
        for seed in range(2):
            key = jax.random.key(seed)
            np.testing.assert_array_equal(
                sample_indices(key, archive, num),
                engine_overhead.nonzero_sample_indices(key, archive, num),
            )
