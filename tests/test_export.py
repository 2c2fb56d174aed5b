"""Taking a pruned network out of a run (synprune_jax/export.py, replay.py): exact compaction, the
exported files (NumPy, CSR, flax) against the masked network, the run table, replays that repeat
the archived evaluation, and the errors."""

import dataclasses
import json
import os
import shutil

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
from conftest import optimized_compilation

from synprune_jax.cli import main
from synprune_jax.export import (
    apply_compact,
    compact_mlp,
    export_network,
    inspect_run,
    open_run,
    select_network,
)
from synprune_jax.masks import mask_statistics
from synprune_jax.networks import _MLP, MLPSpec
from synprune_jax.replays import replay
from synprune_jax.tasks import KinematicArm


def _random_masks(spec, params, key, density):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    masks = [
        jax.random.bernoulli(k, density, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)
    ]
    masks = jax.tree_util.tree_unflatten(tree, masks)
    if not spec.mask_biases:  # biases stay unmasked
        masks = jax.tree_util.tree_map_with_path(
            lambda path, m: jnp.ones_like(m) if "bias" in str(path[-1]) else m, masks
        )
    return masks


OBSERVATIONS = np.random.default_rng(0).normal(size=(1000, 6)).astype(np.float32)


@pytest.mark.parametrize(
    "spec, density",
    [
        (MLPSpec(input_size=6, hidden_sizes=(8, 8), output_size=3), 0.3),  # dead units
        (MLPSpec(input_size=6, hidden_sizes=(8, 8), output_size=3, activation="relu"), 0.15),
        (MLPSpec(6, 3, (5, 7, 4), activation="sigmoid", output_activation="linear"), 0.4),
        (MLPSpec(input_size=6, hidden_sizes=(8,), output_size=3, mask_biases=True), 0.5),
    ],
)
def test_compaction_gives_the_masked_networks_outputs(spec, density):
    apply, init = jax.jit(spec.apply), jax.jit(spec.init)
    for seed in range(3):
        params = init(jax.random.key(seed))
        masks = _random_masks(spec, params, jax.random.key(100 + seed), density)
        net = compact_mlp(spec, params, masks)
        expected = np.asarray(apply(params, masks, OBSERVATIONS))
        np.testing.assert_allclose(apply_compact(net, OBSERVATIONS), expected, atol=2e-5)
        # nothing left that does not matter: every kept hidden unit reads an input and feeds
        # an output, so the compact network is no larger than the effective connections allow
        stats = mask_statistics(spec, masks)
        assert net.num_nonzero == int(stats.effective_macs)


def test_a_fully_masked_layer_leaves_constant_outputs():
    spec = MLPSpec(input_size=6, hidden_sizes=(8, 8), output_size=3)
    params = spec.init(jax.random.key(0))
    masks = spec.full_masks(params)
    masks["params"]["Dense_1"]["kernel"] = jnp.zeros((8, 8), bool)
    net = compact_mlp(spec, params, masks)
    assert net.layer_widths == (0, 0, 0, 3) and net.num_weights == 0
    outputs = apply_compact(net, OBSERVATIONS)
    np.testing.assert_allclose(outputs, spec.apply(params, masks, OBSERVATIONS), atol=1e-6)
    assert np.ptp(outputs, axis=0).max() == 0.0  # the same action for every observation


def test_compaction_by_hand():
    # 2 inputs -> 3 hidden -> 1 output, linear hidden units so the folded bias is exact
    spec = MLPSpec(input_size=2, hidden_sizes=(3,), output_size=1, activation="linear")
    params = {
        "params": {
            "Dense_0": {
                "kernel": jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
                "bias": jnp.array([0.5, -1.0, 2.0]),
            },
            "Dense_1": {"kernel": jnp.array([[1.0], [10.0], [100.0]]), "bias": jnp.array([0.25])},
        }
    }
    masks = spec.full_masks(params)
    # unit 0 reads no input (a constant 0.5); unit 2 feeds no output; input 0 feeds only unit 0
    masks["params"]["Dense_0"]["kernel"] = jnp.array([[False, False, True], [False, True, True]])
    masks["params"]["Dense_1"]["kernel"] = jnp.array([[True], [True], [False]])
    net = compact_mlp(spec, params, masks)
    assert [k.tolist() for k in net.kept] == [[1], [1], [0]]
    assert net.kernels[0].tolist() == [[5.0]] and net.kernels[1].tolist() == [[10.0]]
    assert net.biases[0].tolist() == [-1.0]
    assert net.biases[1].tolist() == [0.25 + 0.5 * 1.0]  # the constant unit folded in
    x = np.array([[3.0, 2.0]], np.float32)
    assert apply_compact(net, x).tolist() == [[np.tanh(0.75 + 10.0 * (5.0 * 2.0 - 1.0))]]


# ----- a run ------------------------------------------------------------------------------------

TINY_RUN = [
    "run.num_generations=3",
    "run.chunk_size=1",
    "run.progress=false",
    "map_elites.batch_size=8",
    "map_elites.initial_batch_size=16",
    "task.episode_length=5",
    "task.num_episodes=2",
    "task.hidden_sizes=[6]",
    "task.devices=1",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export") / "run")
    args = ["run", "me-prune-reach", "--out", out]
    for item in TINY_RUN:
        args += ["--set", item]
    assert main(args) == 0
    return out


def test_inspect_counts_every_elite(run_dir):
    networks = open_run(run_dir)
    table = inspect_run(run_dir, networks)
    assert networks.kind == "archive" and len(table) == len(networks) > 1
    assert list(table["fitness"]) == sorted(table["fitness"], reverse=True)  # best first
    spec = networks.spec
    assert (spec.input_size, spec.output_size) == (13, 3)  # 3 joints, 1 obstacle
    for row in (0, len(table) - 1):
        params, masks = networks.network(row)
        kernels = [np.asarray(k) for k in spec.kernels(masks)]
        active = sum(int(k.sum()) for k in kernels)
        assert table["active_connections"][row] == active
        assert table["density"][row] == pytest.approx(active / spec.num_synapses)
        net = compact_mlp(spec, params, masks)
        assert table["live_units"][row] == "-".join(map(str, net.layer_widths))
        assert table["compact_macs"][row] == net.num_weights
        assert table["dense_macs"][row] == 13 * 6 + 6 * 3  # reach arm: 13 inputs, 3 joints
        assert table["cell"][row] == networks.index[row]
    assert {"sparsity", "descriptor_disconnected_fraction"} <= set(table.columns)
    # --cost: bytes and the energy estimate per form, from the operation counts
    costs = inspect_run(run_dir, networks, cost=True)
    dense_parameters = 13 * 6 + 6 * 3 + 6 + 3
    assert (costs["dense_bytes"] == 4 * dense_parameters).all()
    assert costs["dense_energy_pj"][0] == pytest.approx(96 * (3.7 + 0.9) + dense_parameters * 5.0)
    net = compact_mlp(spec, *networks.network(0))
    compact_parameters = net.num_weights + sum(len(b) for b in net.biases)
    assert costs["compact_bytes"][0] == 4 * compact_parameters
    assert (costs["compact_energy_pj"] <= costs["dense_energy_pj"]).all()  # never larger


def test_exported_files_run_without_synprune(run_dir, tmp_path):
    networks = open_run(run_dir)
    row = select_network(networks, density=0.5)
    paths = export_network(run_dir, tmp_path / "net", density=0.5)
    params, masks = networks.network(row)
    observations = np.random.default_rng(1).normal(size=(1000, 13)).astype(np.float32)
    expected = np.asarray(networks.spec.apply(params, masks, observations))
    data = np.load(paths["npz"])
    provenance = json.loads(str(data["provenance"]))
    assert provenance["fitness"] == pytest.approx(float(networks.fitness[row]))
    assert provenance["density"] <= 0.5 and provenance["cell"] == int(networks.index[row])
    with open(paths["json"]) as handle:
        assert json.load(handle)["layer_widths"] == data["layer_widths"].tolist()
    # the NumPy inference of docs/export.md
    acts = {"tanh": np.tanh, "linear": lambda x: x}
    x = observations[..., data["inputs"]]
    layers = len(data["layer_widths"]) - 1
    sparse = x.copy()
    for layer in range(layers):
        name = "output_activation" if layer == layers - 1 else "activation"
        x = acts[str(data[name])](x @ data[f"kernel_{layer}"] + data[f"bias_{layer}"])
        csr = scipy.sparse.csr_matrix(
            (data[f"csr_{layer}_data"], data[f"csr_{layer}_indices"], data[f"csr_{layer}_indptr"]),
            shape=tuple(data[f"csr_{layer}_shape"]),
        )
        np.testing.assert_array_equal(csr.toarray(), data[f"kernel_{layer}"].T)
        sparse = acts[str(data[name])]((csr @ sparse.T).T + data[f"bias_{layer}"])
    np.testing.assert_allclose(x, expected, atol=2e-5)
    np.testing.assert_allclose(sparse, expected, atol=2e-5)
    # the flax form: the compact widths as a plain flax MLP
    widths = [int(w) for w in data["layer_widths"][1:]]
    module = _MLP(layer_sizes=widths, activation="tanh", output_activation="tanh")
    target = jax.tree_util.tree_map(
        np.zeros_like,
        {
            "params": {
                f"Dense_{layer}": {
                    "kernel": data[f"kernel_{layer}"],
                    "bias": data[f"bias_{layer}"],
                }
                for layer in range(layers)
            }
        },
    )
    with open(paths["msgpack"], "rb") as handle:
        restored = flax.serialization.from_bytes(target, handle.read())
    outputs = module.apply(restored, observations[..., data["inputs"]])
    np.testing.assert_allclose(outputs, expected, atol=2e-5)


def test_choices_and_their_errors(run_dir, tmp_path, capsys):
    networks = open_run(run_dir)
    assert select_network(networks, rank=0) == 0
    assert select_network(networks, cell=int(networks.index[2])) == 2
    with pytest.raises(ValueError, match="no network at or below density 0.0001: the sparsest"):
        select_network(networks, density=0.0001)
    empty = next(c for c in range(10_000) if c not in set(networks.index.tolist()))
    with pytest.raises(ValueError, match=f"cell {empty} of .* is empty"):
        select_network(networks, cell=empty)
    with pytest.raises(ValueError, match="--rank 9999 is out of range"):
        select_network(networks, rank=9999)
    with pytest.raises(ValueError, match="exactly one of"):
        select_network(networks, rank=0, cell=1)
    # the CLI: one line each
    assert main(["export", run_dir, "--density", "0.0001"]) == 2
    assert "no network at or below density" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(run_dir, "config.json"), bare / "config.json")
    assert main(["inspect", str(bare)]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    assert main(["inspect", run_dir, "--rows", "2", "--csv", str(tmp_path / "t.csv")]) == 0
    printed = capsys.readouterr().out
    assert "live_units" in printed and "more rows" in printed
    assert len((tmp_path / "t.csv").read_text().splitlines()) == len(networks) + 1


# ----- replay -----------------------------------------------------------------------------------


def test_replay_repeats_the_archived_evaluation(run_dir, tmp_path, capsys):
    networks = open_run(run_dir)
    at = networks.evaluated_at
    assert at.min() >= 0 and at.max() <= 3 and 0 in at and at.max() > 0
    # one elite of the seeding batch (16 evaluated at once), one of a step's batch (8)
    for row in (int(np.flatnonzero(at == 0)[0]), int(np.flatnonzero(at > 0)[0])):
        result = replay(run_dir, tmp_path / f"row-{row}", rank=row, networks=networks)
        assert result.exact is True and result.note == ""
        assert result.fitness == float(networks.fitness[row])  # float32, exactly
        assert result.evaluation == {
            "generation": int(at[row]),
            "seed": 0,
            "batch_size": 16 if at[row] == 0 else 8,
            "episodes": 2,
        }
        trajectory = result.trajectory
        assert trajectory["observations"].shape == (2, 5, 13)
        assert trajectory["actions"].shape == (2, 5, 3) and trajectory["tip"].shape == (2, 5, 2)
        assert np.float32(np.mean(result.returns)) == pytest.approx(result.fitness, abs=1e-7)
        assert sorted(result.files) == ["figure", "json", "npz"]  # no MuJoCo model: no viewer
        with open(result.files["json"]) as handle:
            summary = json.load(handle)
        assert summary["exact"] is True and summary["cell"] == int(networks.index[row])
        saved = np.load(result.files["npz"])
        np.testing.assert_array_equal(saved["rewards"], trajectory["rewards"])
    # new episodes, an unknown evaluation (a checkpoint from before it was recorded)
    fresh = replay(run_dir, tmp_path / "fresh", rank=0, seed=5, networks=networks)
    assert fresh.exact is None and "new episodes (key 5)" in fresh.note
    assert fresh.evaluation["batch_size"] == 1
    older = dataclasses.replace(networks, evaluated_at=np.full_like(at, -1))
    unknown = replay(run_dir, tmp_path / "older", rank=0, networks=older)
    assert unknown.exact is None and "no recorded evaluation" in unknown.note
    arm = dataclasses.replace(networks, task=KinematicArm(num_joints=3, genotype="mlp"))
    with pytest.raises(ValueError, match="KinematicArm, which has no episodes"):
        replay(run_dir, tmp_path / "arm", rank=0, networks=arm)
    # the CLI
    assert main(["replay", run_dir, "--rank", "0", "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert "equal to the archived" in printed and "NOT" not in printed
    assert os.path.exists(tmp_path / "cli" / "trajectory.png")
    assert main(["replay", run_dir, "--density", "0.0001"]) == 2
    assert "no network at or below density" in capsys.readouterr().err
    assert main(["replay", run_dir, "--rank", "0", "--episodes", "0"]) == 2
    assert "episodes must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment, settings",
    [
        ("me-prune", ["map_elites.batch_size=8", "map_elites.initial_batch_size=8"]),
        ("ga-pruned-init", ["ga.population_size=8"]),
        ("es-prune", ["es.population_size=8"]),
        ("me-prune-playground", ["map_elites.batch_size=8", "map_elites.initial_batch_size=8"]),
        (
            "ppo-prune",
            ["ppo.num_envs=4", "ppo.batch_size=4", "ppo.num_minibatches=2", "ppo.unroll_length=5"],
        ),
    ],
)
def test_replays_of_physics_runs_are_exact(experiment, settings, tmp_path):
    """Brax and Playground runs of the three algorithms, compiled fully optimised as users'
    are (in the suite's cheap compile mode the run's chunk and the replay are two programs that
    round differently): the replayed return is the archived fitness; the viewer (and, where
    MuJoCo can render, the video) is written."""
    out = str(tmp_path / "run")
    args = ["run", experiment, "--out", out]
    common = ["run.num_generations=3", "run.chunk_size=1", "run.progress=false"]
    for item in [*common, "task.episode_length=40", "task.devices=1", *settings]:
        args += ["--set", item]
    with optimized_compilation():
        assert main(args) == 0
        result = replay(out, tmp_path / "replay", rank=0)
    assert result.exact is True, result.note
    assert {"npz", "json", "figure", "viewer"} <= set(result.files)
    assert "video" in result.files or "no video" in result.note
    trajectory = result.trajectory
    assert trajectory["body_pos"].shape[:2] == trajectory["qpos"].shape[:2] == (1, 40)
    with open(result.files["viewer"]) as handle:
        assert "brax-viewer" in handle.read()


@pytest.mark.slow
def test_a_sharded_run_replays_on_its_devices(run_report, tmp_path):
    """A run evaluated over two devices is replayed over two devices (each its share again),
    through the CLI, which claims the run's devices before JAX starts."""
    out = str(tmp_path / "run")
    items = [item for item in TINY_RUN if item != "task.devices=1"] + ["task.devices=2"]
    code = f"""
import json
from synprune_jax.cli import main
args = ["run", "me-prune-reach", "--out", {out!r}]
for item in {items!r}:
    args += ["--set", item]
assert main(args) == 0
assert main(["replay", {out!r}, "--rank", "1", "--out", {out + "/replay"!r}]) == 0
with open({out + "/replay/replay.json"!r}) as handle:
    print("REPORT " + handle.read().replace("\\n", " "))
"""
    env = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "0", "XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"}
    report = run_report(code, env={**env, "JAX_NUM_CPU_DEVICES": "2"})
    assert report["exact"] is True, report["note"]
    assert report["evaluation"]["batch_size"] in (8, 16)


# ----- other methods' networks ------------------------------------------------------------------


def test_autoencoders_compact_as_one_chain(tmp_path):
    """ae-prune's autoencoders (trials) as d -> h -> z -> h -> d MLPs: the compact network
    reconstructs as the masked autoencoder does, and export writes it."""
    from synprune_jax.autoencoder import AutoencoderSpec, CanonicalTraining, TrainingConfig
    from synprune_jax.autoencoder.data import BinaryClusteringSpec, make_binary_clustering
    from synprune_jax.autoencoder.model import reconstruct
    from synprune_jax.autoencoder.training import TrainingHyper
    from synprune_jax.export import run_networks

    data = make_binary_clustering(
        jax.random.key(0), BinaryClusteringSpec(num_clusters=3, dim=20, num_train=10, num_test=5)
    )
    spec = AutoencoderSpec(input_dim=20, hidden_dim=5, bottleneck_dim=3)
    config = TrainingConfig(spec=spec, num_epochs=2, num_trials=3, batch_size=5)
    algorithm = CanonicalTraining(config, data["train"], data["test"])
    state = jax.jit(algorithm.init)(jax.random.key(0), TrainingHyper())
    # prune by hand: half of the encoder's first kernel, one hidden unit's outgoing weights
    masks = jax.tree_util.tree_map(np.array, state.masks)
    masks["encoder"]["layer_0"]["kernel"] = masks["encoder"]["layer_0"]["kernel"] * (
        np.arange(20)[None, :, None] % 2
    )
    masks["decoder"]["layer_0"]["kernel"][:, 1, :] = 0.0
    state = state.replace(masks=masks)
    networks = run_networks(algorithm, state, run_dir=str(tmp_path))
    assert networks.kind == "trial" and len(networks) == 3
    assert networks.spec.layer_sizes == (20, 5, 3, 5, 20)
    assert list(networks.fitness) == sorted(-np.asarray(state.l1_test), reverse=True)
    x = np.asarray(data["test"], np.float32)
    masked = jax.tree_util.tree_map(lambda p, m: p * m, state.params, masks)
    expected = jax.jit(jax.vmap(lambda params: reconstruct(params, x)[0]))(masked)  # [T, N, d]
    for row in range(3):
        trial = int(networks.index[row])
        net = compact_mlp(networks.spec, *networks.network(row))
        assert net.layer_widths[0] == 10  # the inputs no unit reads are dropped
        np.testing.assert_allclose(apply_compact(net, x), np.asarray(expected[trial]), atol=1e-5)
    paths = export_network(str(tmp_path), tmp_path / "ae", rank=0, networks=networks)
    assert str(np.load(paths["npz"])["output_activation"]) == "sigmoid"
    table = inspect_run(str(tmp_path), networks)
    assert list(table["member"]) == list(networks.index)


def test_transfer_heads_are_trained_again_and_compacted(tmp_path):
    """An NSGA-II front of head genomes: each head (trained again from its genome with the run's
    hyper) compacts to the logits of the head under the genome's masks."""
    from synprune_jax.algorithms.nsga2 import NSGA2, NSGA2Config
    from synprune_jax.export import run_networks
    from synprune_jax.transfer.data import TransferData
    from synprune_jax.transfer.head import HeadConfig, TrainConfig, head_logits
    from synprune_jax.transfer.problem import TransferProblem

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 2, 40)
    data = TransferData(x, y, x, y, x, y, x[:5] + 5, x[5:10] + 5, (6,), (0, 1))
    problem = TransferProblem(
        data, HeadConfig(6, 4, 2, genome="both"), TrainConfig(epochs=1), ("accuracy", "sparsity")
    )
    algorithm = NSGA2(NSGA2Config(population_size=4, memo_capacity=8), problem)
    hyper = algorithm.default_hyper
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    networks = run_networks(algorithm, state, hyper=hyper, run_dir=str(tmp_path))
    assert networks.kind == "front" and len(networks) == 4
    assert networks.descriptor_names == ("accuracy", "sparsity")
    for row in range(len(networks)):
        genome = state.genomes[int(networks.index[row])]
        layers = networks.network(row)[0]["params"]
        head = {"w1": layers["Dense_0"]["kernel"], "b1": layers["Dense_0"]["bias"]}
        head.update(w2=layers["Dense_1"]["kernel"], b2=layers["Dense_1"]["bias"])
        expected = head_logits(head, *problem.head.split(genome), jnp.asarray(x))
        net = compact_mlp(networks.spec, *networks.network(row))
        assert net.layer_widths[0] <= int(np.asarray(genome[:6]).sum())  # read and used
        np.testing.assert_allclose(apply_compact(net, x), np.asarray(expected), atol=1e-5)
    table = inspect_run(str(tmp_path), networks)
    assert {"accuracy", "sparsity"} <= set(table.columns)


def test_an_es_run_lists_its_best_network_and_its_final_mean(tmp_path):
    from synprune_jax.algorithms.es import ESConfig, MaskedES
    from synprune_jax.export import run_networks

    task = KinematicArm(num_joints=3, genotype="mlp", hidden_sizes=(4,))
    algorithm = MaskedES(ESConfig(population_size=4), task)
    hyper = algorithm.default_hyper
    state = jax.jit(algorithm.init)(jax.random.key(0), hyper)
    with pytest.raises(ValueError, match="no network with a finite fitness yet"):
        run_networks(algorithm, state)
    state, _ = jax.jit(algorithm.step)(jax.random.key(1), state, hyper)
    networks = run_networks(algorithm, state, hyper=hyper, run_dir=str(tmp_path))
    assert networks.kind == "es" and networks.index.tolist() == [0, 1]
    assert networks.fitness[0] == state.best_fitness and np.isnan(networks.fitness[1])
    assert networks.evaluated_at.tolist() == [1, -1]
    mean = algorithm.strategy_for(hyper).mean(state.strategy)
    for got, want in zip(
        jax.tree_util.tree_leaves(networks.network(1)[0]),
        jax.tree_util.tree_leaves(mean),
        strict=True,
    ):
        np.testing.assert_array_equal(got, np.asarray(want))
