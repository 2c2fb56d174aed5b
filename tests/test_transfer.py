"""Transfer set-up: data, backbone, sparse head training, objectives, ensembles, experiment CLI."""

import functools
import json
import os
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

from synprune_jax.cli import main
from synprune_jax.config import ConfigError
from synprune_jax.experiments import get_experiment
from synprune_jax.runner import read_metrics
from synprune_jax.transfer import (
    DataConfig,
    HeadConfig,
    ProblemHyper,
    TrainConfig,
    TransferData,
    TransferProblem,
    auroc,
    ensemble_table,
    genome_key,
    head_logits,
    importance,
    init_head,
    majority_vote,
    max_softmax_score,
    prepare_data,
    train_head,
)
from synprune_jax.transfer.head import shuffle_key
from synprune_jax.transfer.problem import validate_hyper

TOY_HYPER = ProblemHyper(learning_rate=0.05)  # momentum 0.9, temperature 1000, seed 0


def _toy_data(num_features=6, num_classes=3, seed=0):
    """Separable Gaussian blobs; OOD samples far away."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, num_features)) * 3

    def draw(n):
        labels = rng.integers(0, num_classes, n).astype(np.int32)
        return (centres[labels] + rng.normal(size=(n, num_features))).astype(np.float32), labels

    (tx, ty), (vx, vy), (sx, sy) = draw(60), draw(30), draw(30)
    ood = rng.normal(size=(20, num_features)).astype(np.float32) * 0.3
    return TransferData(
        tx, ty, vx, vy, sx, sy, ood[:10], ood[10:], (num_features,), tuple(range(num_classes))
    )


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _trial in range(5):
        positive = np.round(rng.normal(0.5, 1.0, 37), 1)
        negative = np.round(rng.normal(0.0, 1.0, 23), 1)
        expected = roc_auc_score(np.r_[np.ones(37), np.zeros(23)], np.r_[positive, negative])
        ours = float(jax.jit(auroc)(jnp.asarray(positive), jnp.asarray(negative)))
        assert ours == pytest.approx(expected, abs=1e-6)
    assert float(auroc(jnp.array([2.0, 3.0]), jnp.array([0.0, 1.0]))) == 1.0
    assert float(auroc(jnp.array([1.0]), jnp.array([1.0]))) == 0.5


def test_temperature_scaled_max_softmax():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.3], [5.0, 5.0, 0.0]])
    np.testing.assert_allclose(
        np.exp(np.asarray(max_softmax_score(logits, 1.0))),
        np.asarray(jax.nn.softmax(logits).max(axis=1)),
        rtol=1e-6,
    )
    # T = 1000: same ordering as the float64 maximum softmax probability
    scores = np.asarray(max_softmax_score(logits, 1000.0))
    reference = np.asarray(jax.nn.softmax(np.asarray(logits, np.float64) / 1000.0).max(axis=1))
    np.testing.assert_array_equal(np.argsort(scores), np.argsort(reference))


def test_masked_features_and_neurons_have_no_effect_and_no_gradient():
    head = HeadConfig(num_features=5, num_hidden=4, num_classes=3, genome="both")
    assert head.genome_length == 9
    genome = jnp.array([1, 0, 1, 1, 0, 1, 1, 0, 1], bool)
    input_mask, hidden_mask = head.split(genome)
    params = init_head(jax.random.key(0), head)
    x = jax.random.normal(jax.random.key(1), (7, 5))
    changed = x.at[:, 1].set(100.0).at[:, 4].set(-50.0)  # masked features
    np.testing.assert_allclose(
        np.asarray(head_logits(params, input_mask, hidden_mask, x)),
        np.asarray(head_logits(params, input_mask, hidden_mask, changed)),
    )
    grads = jax.grad(lambda p: head_logits(p, input_mask, hidden_mask, x).sum())(params)
    assert not np.asarray(grads["w1"])[[1, 4]].any()  # cut inputs
    assert not np.asarray(grads["w1"])[:, 2].any() and not np.asarray(grads["w2"])[2].any()
    with pytest.raises(ValueError, match="head.genome"):
        HeadConfig(5, 4, 3, genome="weights")


@pytest.fixture(scope="module")
def toy_problem():
    data = _toy_data()
    head = HeadConfig(num_features=6, num_hidden=8, num_classes=3, genome="input")
    train = TrainConfig(epochs=12, batch_size=16, patience=3)
    return TransferProblem(data, head, train, ("accuracy", "sparsity", "auroc", "neg_loss"))


def test_vmapped_training_equals_a_loop_and_is_deterministic(toy_problem):
    problem = toy_problem
    genomes = jnp.array([[1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1]], bool)
    a = problem.arrays
    train_heads = jax.jit(functools.partial(problem.train_heads, hyper=TOY_HYPER))
    batched, epochs_run = train_heads(genomes)
    optimizer = problem.train_config.make_optimizer(0.05, 0.9)
    single_fn = jax.jit(
        functools.partial(
            train_head, head=problem.head, train=problem.train_config, optimizer=optimizer
        )
    )
    for index in range(3):
        single, single_epochs = single_fn(
            genome_key(0, genomes[index]),
            shuffle_key(0),
            genomes[index],
            a["train_x"],
            a["train_y"],
            a["val_x"],
            a["val_y"],
        )
        for name in single:
            np.testing.assert_allclose(
                np.asarray(batched[name][index]), np.asarray(single[name]), rtol=1e-5, atol=1e-6
            )
        assert int(single_epochs) == int(epochs_run[index])
    assert (np.asarray(epochs_run) <= 12).all() and (np.asarray(epochs_run) >= 1).all()
    again, _ = train_heads(genomes[::-1])  # order does not matter
    np.testing.assert_allclose(
        np.asarray(again["w1"][::-1]), np.asarray(batched["w1"]), rtol=1e-5, atol=1e-6
    )


def test_early_stopping_freezes_heads():
    data = _toy_data(seed=1)
    data.val_labels = (data.val_labels + 1) % 3  # learning the train split hurts validation
    head = HeadConfig(6, 8, 3)
    train = TrainConfig(epochs=40, patience=2, optimizer="sgd_nesterov")
    problem = TransferProblem(data, head, train)
    hyper = ProblemHyper(learning_rate=0.1)
    genomes = jnp.ones((2, 6), bool).at[1, 0].set(False)
    params, epochs_run = jax.jit(functools.partial(problem.train_heads, hyper=hyper))(genomes)
    assert (np.asarray(epochs_run) <= 4).all()  # stopped long before 40 epochs
    # without early stopping all 40 epochs run, but the lowest-validation-loss parameters are
    # still the ones returned: the same (early) heads
    long = TransferProblem(
        data, head, TrainConfig(epochs=40, patience=40, optimizer="sgd_nesterov")
    )
    late_params, late_epochs = jax.jit(functools.partial(long.train_heads, hyper=hyper))(genomes)
    np.testing.assert_array_equal(np.asarray(late_epochs), [40, 40])
    for name in params:
        np.testing.assert_array_equal(np.asarray(params[name]), np.asarray(late_params[name]))


def test_training_follows_the_documented_rule():
    """train_heads equals the plain loop: epoch e cuts permutation(split(shuffle_key(seed), E)[e],
    N) into N // B minibatches, one optimizer step each; then the validation loss; the lowest
    one's parameters are kept and the head stops after ``patience`` epochs without a lower one
    (equal up to XLA fusing the two programs differently)."""
    data = _toy_data(seed=1)
    data.val_labels = (data.val_labels + 1) % 3  # learning the train split hurts validation
    head = HeadConfig(6, 8, 3, genome="both")
    train = TrainConfig(epochs=10, batch_size=16, patience=2, optimizer="sgd_nesterov")
    problem = TransferProblem(data, head, train)
    a = problem.arrays
    optimizer = train.make_optimizer(0.1, 0.9)
    genomes = jnp.ones((2, 14), bool).at[1, :3].set(False)
    params, epochs_run = jax.jit(
        functools.partial(
            problem.train_heads, hyper=ProblemHyper(learning_rate=0.1, seed=np.uint32(3))
        )
    )(genomes)

    def loss(params, masks, x, y):
        logits = head_logits(params, *masks, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, masks, indices):
        grads = jax.grad(loss)(params, masks, a["train_x"][indices], a["train_y"][indices])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for index, genome in enumerate(genomes):
        masks = head.split(genome)
        current = init_head(genome_key(3, genome), head)
        opt_state = optimizer.init(current)
        best, best_loss, since_best, epochs = current, np.inf, 0, 0
        for epoch_key in jax.random.split(shuffle_key(3), train.epochs):
            for indices in jax.random.permutation(epoch_key, 60)[:48].reshape(3, 16):
                current, opt_state = step(current, opt_state, masks, indices)
            epochs += 1
            validation = float(loss(current, masks, a["val_x"], a["val_y"]))
            best, best_loss, since_best = (
                (current, validation, 0)
                if validation < best_loss
                else (best, best_loss, since_best + 1)
            )
            if since_best >= train.patience:
                break
        assert int(epochs_run[index]) == epochs < train.epochs
        chex.assert_trees_all_close(
            jax.tree_util.tree_map(lambda p, index=index: p[index], params),
            best,
            rtol=1e-5,
            atol=1e-6,
        )


def test_problem_objectives(toy_problem):
    genomes = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], bool)

    def evaluate_toy(key, genomes, hyper):
        return toy_problem.evaluate(key, genomes, hyper)

    # the hyper-parameters are an argument: the reseeded call below reuses this program
    evaluate = jax.jit(chex.assert_max_traces(evaluate_toy, n=1))
    objectives = np.asarray(evaluate(jax.random.key(0), genomes, TOY_HYPER))
    assert objectives.shape == (2, 4)
    np.testing.assert_allclose(objectives[:, 1], [0.0, 4.0 / 6.0], rtol=1e-6)  # sparsity
    assert objectives[0, 0] > 0.9 and objectives[0, 2] > 0.5  # separable blobs, far OOD
    again = evaluate(jax.random.key(9), genomes, TOY_HYPER)
    np.testing.assert_array_equal(objectives, np.asarray(again))
    report = toy_problem.report_metrics(np.asarray(genomes), TOY_HYPER)
    np.testing.assert_allclose(report["val_accuracy"], objectives[:, 0], rtol=1e-6)
    assert report["test_predictions"].shape == (2, 30)
    assert report["test_probabilities"].shape == (2, 30, 3)
    # the hyper-parameters reach training and scoring: another seed trains other heads (other
    # losses), another temperature gives other OOD scores
    reseeded = evaluate(jax.random.key(0), genomes, TOY_HYPER.replace(seed=np.uint32(7)))
    reseeded = np.asarray(reseeded)
    assert not np.array_equal(reseeded[:, 3], objectives[:, 3])
    np.testing.assert_array_equal(reseeded[:, 1], objectives[:, 1])  # sparsity: the genome's
    metrics = jax.jit(toy_problem.metrics)  # one program for both temperatures (traced)
    warm = metrics(genomes, TOY_HYPER.replace(temperature=1.0))
    cold = metrics(genomes, TOY_HYPER)
    np.testing.assert_array_equal(np.asarray(warm["loss"]), np.asarray(cold["loss"]))
    assert not np.allclose(np.asarray(warm["in_score"]), np.asarray(cold["in_score"]))
    with pytest.raises(ValueError, match="objectives must be distinct"):
        TransferProblem(
            toy_problem.data, toy_problem.head, toy_problem.train_config, ("accuracy", "beauty")
        )


def test_problem_equality_and_hyper_validation(toy_problem):
    # value equality: what a sweep groups runs on (the data by content, not by object)
    data = toy_problem.data
    copy = TransferData(
        **{name: np.array(getattr(data, name)) for name in TransferData.ARRAYS},
        feature_shape=data.feature_shape,
        class_names=data.class_names,
    )
    names = toy_problem.objective_names
    same = TransferProblem(
        copy, toy_problem.head, TrainConfig(epochs=12, batch_size=16, patience=3), names
    )
    assert same == toy_problem and hash(same) == hash(toy_problem)
    other_train = TransferProblem(
        copy, toy_problem.head, TrainConfig(epochs=11, batch_size=16, patience=3), names
    )
    copy.val_labels = (copy.val_labels + 1) % 3
    other_data = TransferProblem(copy, toy_problem.head, toy_problem.train_config, names)
    assert other_train != toy_problem and other_data != toy_problem
    assert toy_problem.default_hyper == ProblemHyper(
        learning_rate=0.01, momentum=0.9, temperature=1000.0, seed=np.uint32(0)
    )
    validate_hyper(TOY_HYPER)
    for bad, match in (
        (TOY_HYPER.replace(learning_rate=0.0), "learning_rate"),
        (TOY_HYPER.replace(momentum=1.0), "momentum"),
        (TOY_HYPER.replace(temperature=-1.0), "temperature"),
    ):
        with pytest.raises(ValueError, match=match):
            validate_hyper(bad)


def test_majority_vote_ensembles_and_importance():
    predictions = np.array([[0, 1, 2, 2], [0, 1, 1, 0], [1, 1, 2, 1]])
    probabilities = np.full((3, 4, 3), 1.0 / 3.0)
    probabilities[2, 3] = [0.0, 0.9, 0.1]  # sample 3 is a three-way tie; member 2 is surest
    np.testing.assert_array_equal(majority_vote(predictions, probabilities), [0, 1, 2, 1])
    labels = np.array([0, 1, 2, 1])
    rows = ensemble_table(
        np.array([0.9, 0.8, 0.7]),
        np.array([0.5, 0.2, 0.1]),
        predictions,
        probabilities,
        labels,
        bands=(0.0, 90.0),
    )
    assert rows[0]["num_members"] == 3 and rows[0]["ensemble_test_accuracy"] == 1.0
    assert rows[0]["best_single_test_accuracy"] == 0.75  # member 0 (best validation accuracy)
    assert rows[1]["num_members"] == 1 and rows[1]["ensemble_test_accuracy"] == 0.75
    weights = importance(np.array([[1, 0, 1], [1, 1, 0]], bool), np.array([0.75, 0.25]))
    np.testing.assert_allclose(weights, [1.0, 0.25, 0.75])


def test_bring_your_own_features_npz(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = rng.normal(size=(60, 5)).astype(np.float32) + labels[:, None]
    path = str(tmp_path / "mine.npz")
    np.savez(
        path,
        features=features,
        labels=labels,
        ood_features=rng.normal(size=(10, 5)).astype(np.float32) + 9,
    )
    config = DataConfig(
        source=path,
        source_classes=(),
        target_classes=(0, 1, 2),
        ood_classes=(),
        val_fraction=0.2,
        test_fraction=0.2,
    )
    data = prepare_data(config, cache_dir=str(tmp_path / "cache"))
    assert data.train_features.shape == (36, 5) and data.val_features.shape == (12, 5)
    assert data.ood_val_features.shape == (5, 5) and data.feature_shape == (5,)
    np.testing.assert_allclose(data.train_features.mean(axis=0), 0.0, atol=1e-5)
    again = prepare_data(config, cache_dir=str(tmp_path / "cache"))  # from the cache file
    np.testing.assert_array_equal(again.test_features, data.test_features)
    with pytest.raises(ValueError, match="disjoint"):
        DataConfig(target_classes=(3, 5), ood_classes=(5,))
    with pytest.raises(ValueError, match="do not occur"):
        prepare_data(
            DataConfig(source=path, source_classes=(), target_classes=(0, 7), ood_classes=())
        )


def test_custom_backbone_function():
    config = DataConfig(backbone="pixels")
    data = prepare_data(config, feature_fn=lambda images: images[:, ::2, ::2, 0])
    assert data.feature_shape == (4, 4) and data.num_features == 16 and data.num_classes == 4
    assert data.info["backbone"] == "custom"


def test_cnn_backbone_pretrains_and_caches(tmp_path):
    config = DataConfig(pretrain_epochs=2)
    data = prepare_data(config, cache_dir=str(tmp_path))
    assert data.feature_shape == (4, 4, 8) and data.num_features == 128
    assert data.info["backbone_holdout_accuracy"] > 0.5  # 5 source classes: chance is 0.2
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("features-")
    cached = TransferData.load(os.path.join(tmp_path, files[0]))
    np.testing.assert_array_equal(cached.val_features, data.val_features)


TINY = [
    "mo-prune-transfer",
    "--set",
    "data.backbone=pixels",
    "--set",
    "head.num_hidden=4",
    "--set",
    "train.epochs=3",
    "--set",
    "nsga2.population_size=6",
    "--set",
    "nsga2.memo_capacity=64",
    "--set",
    "run.chunk_size=2",
    "--set",
    "run.checkpoint_every=2",
    "--set",
    "run.progress=false",
]


def test_cli_run_report_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    full = tmp_path / "full"  # resume: test_experiments.py checks it for every experiment
    assert main(["run", *TINY, "--set", "run.num_generations=4", "--out", str(full)]) == 0
    assert "sparsest within 2 pt" in capsys.readouterr().out
    for name in (
        "summary.json",
        "summary.md",
        "front.csv",
        "front.npz",
        "front_2d.png",
        "front_3d.png",
        "importance.png",
        "curves.png",
        "features.npz",
    ):
        assert (full / name).stat().st_size > 0, name
    summary = json.loads((full / "summary.json").read_text())
    assert summary["front_size"] >= 1 and 0 < summary["hypervolume"] <= 1
    assert summary["population_hypervolume"] == pytest.approx(summary["hypervolume"])
    assert [row["percentile"] for row in summary["ensembles"]] == [0.0, 50.0, 75.0, 90.0]
    front = np.load(full / "front.npz")
    assert front["genomes"].shape == (summary["front_size"], 64)
    np.testing.assert_allclose(
        1 - front["genomes"].mean(axis=1), front["objectives"][:, 1], rtol=1e-6
    )
    os.remove(full / "importance.png")
    assert main(["plot", str(full)]) == 0 and (full / "importance.png").exists()


def test_config_validation(tmp_path):
    experiment = get_experiment("mo-prune-transfer")
    config = experiment.default_config()
    config["objectives"]["names"] = ["accuracy"]
    with pytest.raises(ConfigError, match="two objectives"):
        experiment.build(config)
    config = experiment.default_config()
    config["train"]["optimizer"] = "lbfgs"
    with pytest.raises(ConfigError, match="optimizer"):
        experiment.build(config)
    config = experiment.default_config()
    config["nsga2"]["mode"] = "island"
    with pytest.raises(ConfigError, match="mode"):
        experiment.build(config)
    # the hyper-parameters' values are checked too, before any data or backbone work
    for section, key, value in (
        ("train", "learning_rate", 0.0),
        ("train", "momentum", 1.0),
        ("objectives", "temperature", 0.0),
        ("nsga2", "crossover_rate", 1.5),
        ("nsga2", "mutation_rate", 2.0),
    ):
        config = experiment.default_config()
        config["data"]["cache_dir"] = str(tmp_path)
        config[section][key] = value
        with pytest.raises(ConfigError, match=key):
            experiment.build(config)
    config = get_experiment("ga-prune-transfer").default_config()
    config["data"]["cache_dir"] = str(tmp_path)
    config["ga"]["mutation_probability"] = -0.5
    with pytest.raises(ConfigError, match="mutation_probability"):
        get_experiment("ga-prune-transfer").build(config)
    assert not any(tmp_path.iterdir())
    assert main(["run", "mo-prune-transfer", "--set", "data.backbone=vit"]) == 2


def test_builders_return_the_search_and_its_hyper_parameters(tmp_path, monkeypatch):
    # the builder's algorithm is the search itself; runs that differ only in traced knobs (the
    # rates, learning rate, temperature, seed) build equal algorithms: one compiled sweep group
    from synprune_jax.algorithms.nsga2 import NSGA2, NSGA2Hyper
    from synprune_jax.algorithms.steady_state_ga import SteadyStateGA, SteadyStateGAHyper
    from synprune_jax.config import apply_overrides

    monkeypatch.setenv("SYNPRUNE_CACHE_DIR", str(tmp_path))
    tiny = TINY[2::2]  # the overrides of TINY, without "--set"

    def build(experiment, *overrides):
        entry = get_experiment(experiment)
        return entry.build(apply_overrides(entry.default_config(), [*tiny, *overrides]))

    first = build(
        "mo-prune-transfer", "run.seed=5", "train.learning_rate=0.02", "nsga2.crossover_rate=0.5"
    )
    assert isinstance(first.algorithm, NSGA2)
    assert first.algorithm.problem.genome_length == 64  # the 8x8 pixels
    assert first.hyper == NSGA2Hyper(
        crossover_rate=0.5,
        mutation_rate=1 / 64,
        problem=ProblemHyper(
            learning_rate=0.02, momentum=0.9, temperature=1000.0, seed=np.uint32(5)
        ),
    )
    second = build(
        "mo-prune-transfer",
        "run.seed=6",
        "nsga2.mutation_rate=0.2",
        "objectives.temperature=2.0",
        "train.momentum=0.5",
    )
    assert second.hyper.mutation_rate == 0.2 and second.hyper.problem.temperature == 2.0
    assert second.algorithm == first.algorithm and hash(second.algorithm) == hash(first.algorithm)
    assert build("mo-prune-transfer", "train.epochs=2").algorithm != first.algorithm
    ga = build(
        "ga-prune-transfer",
        "ga.population_size=6",
        "ga.memo_capacity=16",
        "ga.mutation_probability=0.3",
    )
    assert isinstance(ga.algorithm, SteadyStateGA)
    assert ga.hyper == SteadyStateGAHyper(
        mutation_probability=0.3,
        problem=first.hyper.problem.replace(learning_rate=0.01, seed=np.uint32(0)),
    )


def test_train_devices_validation(tmp_path, capsys):
    # this process has one CPU device: a clear error before any data or compile work
    data = _toy_data()
    head, train = HeadConfig(6, 4, 3), TrainConfig(epochs=2)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="devices must be a positive int"):
            TransferProblem(data, head, train, devices=bad)
    with pytest.raises(ConfigError, match="jax_num_cpu_devices"):
        TransferProblem(data, head, train, devices=2)
    assert main(["run", *TINY, "--set", "train.devices=2", "--out", str(tmp_path / "x")]) == 2
    assert "train.devices=2 but only 1 local device(s) exist" in capsys.readouterr().err
    assert main(["run", *TINY, "--set", "train.devices=0", "--out", str(tmp_path / "y")]) == 2
    assert "train.devices must be a positive int" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_heads_split_over_devices(tmp_path, run_report):
    # 4 CPU devices: a batch of 7 genomes (padded to 8) trains the 1-device heads, with the
    # default hyper-parameters as constants and with other ones traced (jit arguments, as in a
    # sweep). The validation loss (continuous) agrees to
    # float rounding; sparsity exactly; accuracy and AUROC count discrete events, where a
    # rounding difference may flip a near-tie, so they may move by a few steps at most.
    # Through the CLI `train.devices=2` creates the devices itself, and a run cut at 2
    # generations resumes to the uninterrupted run's metrics.
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import jax
        jax.config.update("jax_num_cpu_devices", 4)
        import numpy as np
        sys.path.insert(0, "tests")
        from test_transfer import TINY, _toy_data
        from synprune_jax.transfer import HeadConfig, TrainConfig, TransferProblem
        from synprune_jax.cli import main
        data = _toy_data()
        genomes = jax.random.bernoulli(jax.random.key(0), 0.6, (7, 6))
        names = ("accuracy", "sparsity", "auroc", "neg_loss")
        one, four = (TransferProblem(data, HeadConfig(6, 4, 3), TrainConfig(epochs=4), names,
                                     devices=n) for n in (1, 4))
        default = four.default_hyper
        traced = default.replace(learning_rate=0.05, temperature=2.0)
        out = {{}}
        for name, a, b, extra in (
                ("default", lambda k, g: one.evaluate(k, g, default),
                 lambda k, g: four.evaluate(k, g, default), ()),
                ("traced", one.evaluate, four.evaluate, (traced,))):
            x = np.asarray(jax.jit(a)(jax.random.key(0), genomes, *extra))
            y = np.asarray(jax.jit(b)(jax.random.key(0), genomes, *extra))
            out[name] = {{"shape": list(y.shape), "difference": np.abs(x - y).max(0).tolist(),
                         "spread": x.std(0).tolist()}}
        root = Path({str(tmp_path)!r})
        tiny = [*TINY, "--set", "train.devices=2"]
        out["full"] = main(["run", *tiny, "--set", "run.num_generations=4", "--out",
                            str(root / "full")])
        out["cut"] = main(["run", *tiny, "--set", "run.num_generations=2", "--out",
                           str(root / "cut")])
        config = json.loads((root / "cut" / "config.json").read_text())
        config["run"]["num_generations"] = 4
        (root / "cut" / "config.json").write_text(json.dumps(config))
        out["resume"] = main(["resume", str(root / "cut")])
        out["config_devices"] = config["train"]["devices"]
        print("REPORT " + json.dumps(out))
    """)
    report = run_report(code, env={"SYNPRUNE_CACHE_DIR": str(tmp_path / "cache")})
    num_val, num_ood = 30, 10  # _toy_data's validation and OOD validation sizes
    for name in ("default", "traced"):
        measured = report[name]
        accuracy, sparsity, auroc, neg_loss = measured["difference"]
        assert measured["shape"] == [7, 4], (name, measured)
        assert sparsity == 0 and neg_loss <= 1e-4, (name, measured)
        assert accuracy <= 2 / num_val and auroc <= 4 / (num_val * num_ood), (name, measured)
        assert measured["spread"][0] > 0 and measured["spread"][3] > 0, (name, measured)
    assert report["full"] == report["cut"] == report["resume"] == 0
    assert report["config_devices"] == 2
    assert (tmp_path / "full" / "metrics.csv").read_text() == (
        tmp_path / "cut" / "metrics.csv"
    ).read_text()


@pytest.mark.slow
def test_split_heads_resume_on_other_devices_and_ga(tmp_path, run_report):
    # A train.devices=2 run resumed with one device (the checkpoint restored onto the other
    # layout) finishes; ga-prune-transfer runs split over 2 devices.
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import jax
        jax.config.update("jax_num_cpu_devices", 2)
        sys.path.insert(0, "tests")
        from test_transfer import TINY
        from synprune_jax.cli import main
        root = Path({str(tmp_path)!r})
        out = {{"cut": main(["run", *TINY, "--set", "train.devices=2", "--set",
                             "run.num_generations=2", "--out", str(root / "cut")])}}
        config = json.loads((root / "cut" / "config.json").read_text())
        config["run"]["num_generations"] = 4
        config["train"]["devices"] = 1
        (root / "cut" / "config.json").write_text(json.dumps(config))
        out["resume"] = main(["resume", str(root / "cut")])
        out["ga"] = main(["run", "ga-prune-transfer", "--set", "data.backbone=pixels",
                          "--set", "head.num_hidden=4", "--set", "train.epochs=2",
                          "--set", "ga.population_size=6", "--set", "ga.memo_capacity=16",
                          "--set", "run.num_generations=2", "--set", "run.chunk_size=1",
                          "--set", "run.progress=false", "--set", "train.devices=2",
                          "--out", str(root / "ga")])
        print("REPORT " + json.dumps(out))
    """)
    report = run_report(code, env={"SYNPRUNE_CACHE_DIR": str(tmp_path / "cache")})
    assert report == {"cut": 0, "resume": 0, "ga": 0}
    assert len((tmp_path / "cut" / "metrics.csv").read_text().splitlines()) == 5
    assert len((tmp_path / "ga" / "metrics.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_single_objective_ga_experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "ga"
    args = [
        "ga-prune-transfer",
        "--set",
        "data.backbone=pixels",
        "--set",
        "head.num_hidden=4",
        "--set",
        "train.epochs=3",
        "--set",
        "ga.population_size=6",
        "--set",
        "ga.memo_capacity=64",
        "--set",
        "run.num_generations=6",
        "--set",
        "run.chunk_size=3",
        "--set",
        "run.progress=false",
    ]
    assert main(["run", *args, "--out", str(out)]) == 0
    metrics = read_metrics(out)
    assert np.all(np.diff(metrics["max_fitness"]) >= 0)  # replace-worst never loses the best
