import pytest

from synprune_jax.config import ConfigError, apply_overrides, flatten
from synprune_jax.experiments import EXPERIMENTS, get_experiment

BASE = {
    "run": {"num_generations": 10, "seed": 0},
    "task": {
        "hidden_sizes": [16, 16],
        "env_name": "hopper",
        "flag": True,
        "rate": 0.5,
        "maybe": None,
    },
}


def test_overrides_are_typed():
    out = apply_overrides(
        BASE,
        [
            "run.num_generations=50",
            "task.hidden_sizes=32,8",
            "task.env_name=ant",
            "task.flag=false",
            "task.rate=1",
            "task.maybe=[1, 2]",
        ],
    )
    assert out["run"]["num_generations"] == 50
    assert out["task"]["hidden_sizes"] == [32, 8]
    assert out["task"]["env_name"] == "ant"
    assert out["task"]["flag"] is False
    assert out["task"]["rate"] == 1.0 and isinstance(out["task"]["rate"], float)
    assert out["task"]["maybe"] == [1, 2]
    assert BASE["run"]["num_generations"] == 10  # input not modified
    assert apply_overrides(BASE, ["task.hidden_sizes=64"])["task"]["hidden_sizes"] == [64]


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.generations=5", "valid keys there: \\['num_generations', 'seed'\\]"),
        ("runs.seed=1", "valid keys there"),
        ("run.num_generations=1.5", "integer"),
        ("run.num_generations=many", "integer"),
        ("task.flag=maybe", "true/false"),
        ("task.rate=fast", "number"),
        ("run=3", "section"),
        ("run.seed", "key.path=value"),
    ],
)
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


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.env_name=hopperr", "hopper"),
        ("task.backend=physx", "spring"),
        ("task.descriptors=sparsity,elegance", "disconnected_fraction"),
        ("mutation.p_disconnect=1.5", "p_disconnect"),
        ("archive.kind=hexagonal", "cvt"),
        ("map_elites.batch_size=0", "batch_size"),
        ("map_elites.mutation_block=0", "mutation_block"),
        ("map_elites.mutation_block=true", "mutation_block"),
    ],
)
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
    assert section == {
        "num_generations": 7,
        "seed": 0,
        "chunk_size": 10,
        "checkpoint_every": 50,
        "metrics_format": "csv",
        "progress": True,
        "keep_checkpoints": 2,
    }
    assert from_section(section, "run", RunConfig) == RunConfig(num_generations=7)
    hyper = from_section({"sigma": 1}, "mutation", MutationHyper)  # int -> float, rest default
    assert hyper == MutationHyper(sigma=1.0) and isinstance(hyper.sigma, float)
    with pytest.raises(ConfigError, match="unknown keys in run: \\['sede'\\]"):
        from_section({**section, "sede": 1}, "run", RunConfig)
    with pytest.raises(ConfigError, match="missing keys in run: \\['num_generations'\\]"):
        from_section({"seed": 1}, "run", RunConfig)
    with pytest.raises(ValueError, match="no fields"):
        section_defaults(RunConfig, generations=3)


def test_a_section_of_several_dataclasses():
    """A static config and its hyper-parameters share one section; a nested dataclass's fields
    sit in place of its field; given fields are not keys; values are type-checked."""
    from synprune_jax.algorithms.ga import GAConfig, GAHyper
    from synprune_jax.config import ConfigError, from_section, section_defaults
    from synprune_jax.variation import MutationConfig, MutationHyper

    section = section_defaults(GAConfig, (GAHyper, ("mutation",)), population_size=8)
    assert list(section) == [
        "population_size",
        "elite_fraction",
        "self_adaptive",
        "forward_prune",
        "flips",
        "crossover",
        "init",
        "init_beta_a",
        "init_beta_b",
        "init_per_layer",
        "exact_init_density",
        "crossover_rate",
    ]
    mutation = MutationHyper(sigma=0.3)

    def build(**values):
        return from_section(
            {**section, **values},
            "ga",
            GAConfig,
            (GAHyper, {"mutation": mutation}),
            extra=("archive_dir",),
        )

    config, hyper = build(self_adaptive=True, crossover_rate=1, archive_dir="runs/x")
    assert config == GAConfig(population_size=8, mutation=MutationConfig(self_adaptive=True))
    assert hyper == GAHyper(mutation=mutation, crossover_rate=1.0)
    assert isinstance(hyper.crossover_rate, float)
    for key, value, message in [
        ("population_size", 8.5, "ga.population_size must be an integer"),
        ("population_size", True, "ga.population_size must be an integer"),
        ("crossover_rate", "high", "ga.crossover_rate must be a number"),
        ("forward_prune", 1, "ga.forward_prune must be true or false"),
        ("init", None, "ga.init must be a string"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build(**{key: value})
    with pytest.raises(ConfigError, match="unknown keys in ga: \\['sigma'\\]; .*archive_dir"):
        build(sigma=0.1)  # the hyper's mutation is given: its fields are not keys here


def test_given_fields_and_optional_values():
    from synprune_jax.algorithms.nsga2 import NSGA2Config, NSGA2Hyper
    from synprune_jax.config import ConfigError, from_section, section_defaults
    from synprune_jax.transfer.data import DataConfig

    section = section_defaults(NSGA2Config, (NSGA2Hyper, ("problem",)))
    assert "problem" not in section and section["mutation_rate"] is None
    _, hyper = from_section(section, "nsga2", NSGA2Config, (NSGA2Hyper, {"problem": 7}))
    assert hyper.mutation_rate is None and hyper.problem == 7
    _, hyper = from_section({"mutation_rate": 0}, "nsga2", NSGA2Config, (NSGA2Hyper, ("problem",)))
    assert hyper.mutation_rate == 0.0 and isinstance(hyper.mutation_rate, float)
    assert hyper.problem is None  # named, not given: keeps its default
    data = from_section({"target_classes": [3, 5]}, "data", DataConfig)
    assert data.target_classes == (3, 5)  # lists become tuples
    with pytest.raises(ConfigError, match="data.target_classes must be an integer, got 1.5"):
        from_section({"target_classes": [3, 1.5]}, "data", DataConfig)
    with pytest.raises(ConfigError, match="data.source_classes must be a list"):
        from_section({"source_classes": 3}, "data", DataConfig)
