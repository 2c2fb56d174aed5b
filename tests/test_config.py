import pytest

from synprune_jax.config import ConfigError, apply_overrides, flatten
from synprune_jax.experiments import EXPERIMENTS, get_experiment

BASE = {"run": {"num_generations": 10, "seed": 0}, "task": {"hidden_sizes": [16, 16],
        "env_name": "hopper", "flag": True, "rate": 0.5, "maybe": None}}


def test_overrides_are_typed():
    out = apply_overrides(BASE, ["run.num_generations=50", "task.hidden_sizes=32,8",
                                 "task.env_name=ant", "task.flag=false", "task.rate=1",
                                 "task.maybe=[1, 2]"])
    assert out["run"]["num_generations"] == 50
    assert out["task"]["hidden_sizes"] == [32, 8]
    assert out["task"]["env_name"] == "ant"
    assert out["task"]["flag"] is False
    assert out["task"]["rate"] == 1.0 and isinstance(out["task"]["rate"], float)
    assert out["task"]["maybe"] == [1, 2]
    assert BASE["run"]["num_generations"] == 10  # input not modified
    assert apply_overrides(BASE, ["task.hidden_sizes=64"])["task"]["hidden_sizes"] == [64]


@pytest.mark.parametrize("override, message", [
    ("run.generations=5", "valid keys there: \\['num_generations', 'seed'\\]"),
    ("runs.seed=1", "valid keys there"),
    ("run.num_generations=1.5", "integer"),
    ("run.num_generations=many", "integer"),
    ("task.flag=maybe", "true/false"),
    ("task.rate=fast", "number"),
    ("run=3", "section"),
    ("run.seed", "key.path=value"),
])
def test_bad_overrides_are_explained(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(BASE, [override])


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_builds_and_resolves_bounds(name):
    experiment = get_experiment(name)
    config = experiment.default_config()
    built = experiment.build(config)
    if "archive" in config:  # MAP-Elites experiments resolve the bounds from the task
        assert config["archive"]["lower"] is not None and config["archive"]["upper"] is not None
    assert built.run_config.num_generations >= 1


@pytest.mark.parametrize("override, message", [
    ("task.env_name=hopperr", "hopper"),
    ("task.backend=physx", "spring"),
    ("task.descriptors=sparsity,elegance", "disconnected_fraction"),
    ("mutation.p_disconnect=1.5", "p_disconnect"),
    ("archive.kind=hexagonal", "cvt"),
    ("map_elites.batch_size=0", "batch_size"),
    ("map_elites.mutation_block=0", "mutation_block"),
    ("map_elites.mutation_block=true", "mutation_block"),
])
def test_invalid_configs_fail_before_compiling(override, message):
    experiment = get_experiment("me-prune")
    config = apply_overrides(experiment.default_config(), [override])
    with pytest.raises(ValueError, match=message):
        experiment.build(config)


@pytest.mark.parametrize("name", ["me-prune", "me-es"])
def test_mutation_block_reaches_the_algorithm(name):
    experiment = get_experiment(name)
    config = apply_overrides(experiment.default_config(), ["map_elites.mutation_block=16"])
    assert experiment.build(config).algorithm.config.mutation_block == 16


def test_unknown_experiment_lists_valid():
    with pytest.raises(ConfigError, match="me-prune"):
        get_experiment("nope")


def test_sections_are_derived_from_their_dataclass():
    from synprune_jax.config import ConfigError, from_section, section_defaults
    from synprune_jax.runner import RunConfig
    from synprune_jax.variation import MutationHyper

    section = section_defaults(RunConfig, num_generations=7)
    assert section == {"num_generations": 7, "seed": 0, "chunk_size": 10, "checkpoint_every": 50,
                       "metrics_format": "csv", "progress": True}
    assert from_section(RunConfig, section, "run") == RunConfig(num_generations=7)
    hyper = from_section(MutationHyper, {"sigma": 1}, "mutation")  # int -> float, rest default
    assert hyper == MutationHyper(sigma=1.0) and isinstance(hyper.sigma, float)
    with pytest.raises(ConfigError, match="unknown keys in run: \\['sede'\\]"):
        from_section(RunConfig, {**section, "sede": 1}, "run")
    with pytest.raises(ConfigError, match="missing keys in run: \\['num_generations'\\]"):
        from_section(RunConfig, {"seed": 1}, "run")
    with pytest.raises(ValueError, match="no fields"):
        section_defaults(RunConfig, generations=3)
