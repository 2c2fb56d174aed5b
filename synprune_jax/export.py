"""What a pruned network is for: list a run's networks, take one out compacted, and use it.

A finished run directory (``config.json`` plus an orbax checkpoint) holds networks: the elites
of an archive (MAP-Elites, ME-ES), a population (the GA) or the searched network (ES: its best
network so far); autoencoders (as one ``d -> h -> z -> h -> d`` chain, :func:`autoencoder_mlp`)
and transfer heads (trained again from their genomes) are read as MLPs too. :func:`open_run`
restores them (host side, no evaluation), :func:`inspect_run` tabulates them,
:func:`compact_mlp` shrinks one to the units that matter, and :func:`export_network` writes it
to a directory that needs neither JAX nor synprune_jax to use.

**Compaction** (:func:`compact_mlp`) is exact, not approximate. A hidden unit that no input
reaches (all its incoming connections masked, directly or further up) outputs a constant,
``activation(bias)``: its contribution is folded into the next layer's biases and the unit is
removed. A unit with no path to an output is removed. Observation entries that reach no output
are dropped (``inputs`` lists the ones kept). Masked weights become zeros in the compact dense
kernels, and the CSR form keeps only the active ones. The compact network's outputs equal the
masked network's up to float summation order.

The exported directory (:func:`export_network`):

* ``network.npz``: ``layer_widths`` (kept inputs, hidden units..., outputs), ``inputs`` (the
  observation entries used, int), ``kernel_<l>`` ``[in, out]`` and ``bias_<l>`` float32,
  ``activation`` / ``output_activation`` (names), the CSR form of each kernel's transpose
  (``csr_<l>_data``, ``csr_<l>_indices``, ``csr_<l>_indptr``, ``csr_<l>_shape``: ``[out, in]``),
  ``observation_size`` / ``action_size`` and ``provenance`` (JSON text: run, experiment,
  generation, which network, fitness, the generation that evaluated it, density, descriptors);
* ``network.msgpack``: the same compact weights as flax parameters
  (``flax.serialization.to_bytes`` of ``{"params": {"Dense_<l>": {"kernel", "bias"}}}``);
* ``network.json``: the provenance and the sizes, readable.

Inference without this package (NumPy only; ``docs/export.md`` has the same)::

    import numpy as np
    ACT = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "linear": lambda x: x,
           "sigmoid": lambda x: 1 / (1 + np.exp(-x))}
    net = np.load("network.npz")
    def act(observation):
        x = np.asarray(observation, np.float32)[..., net["inputs"]]
        layers = len(net["layer_widths"]) - 1
        for l in range(layers):
            x = x @ net[f"kernel_{l}"] + net[f"bias_{l}"]
            x = ACT[str(net["output_activation" if l == layers - 1 else "activation"])](x)
        return x

Examples:
    >>> from synprune_jax.networks import MLPSpec
    >>> spec = MLPSpec(input_size=3, hidden_sizes=(4,), output_size=2)
    >>> params = spec.init(jax.random.key(0))
    >>> masks = spec.full_masks(params)
    >>> kernel = masks["params"]["Dense_0"]["kernel"]
    >>> masks["params"]["Dense_0"]["kernel"] = kernel.at[:, :2].set(False)  # units 0, 1: no input
    >>> net = compact_mlp(spec, params, masks)
    >>> net.layer_widths, [k.tolist() for k in net.kept]
    ((3, 2, 2), [[0, 1, 2], [2, 3], [0, 1]])
    >>> x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    >>> bool(np.allclose(apply_compact(net, x), spec.apply(params, masks, x), atol=1e-6))
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from synprune_jax.networks import MLPSpec
from synprune_jax.types import Masks, Params

NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "linear": lambda x: x,
}


class CompactMLP(NamedTuple):
    """A masked MLP shrunk to the units that matter (:func:`compact_mlp`).

    Attributes:
        inputs: ``[n_0]`` int, the observation entries the network reads.
        kernels: ``L`` float32 arrays ``[n_l, n_{l+1}]`` (masked weights are zeros).
        biases: ``L`` float32 arrays ``[n_{l+1}]`` (constants of removed units folded in).
        activation: hidden activation name (:data:`synprune_jax.networks.ACTIVATIONS`).
        output_activation: output activation name.
        kept: ``L + 1`` int arrays: the original indices of the kept units of every layer
            (``kept[0] == inputs``; the output layer keeps every unit).
    """

    inputs: np.ndarray
    kernels: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str
    output_activation: str
    kept: list[np.ndarray]

    @property
    def layer_widths(self) -> tuple[int, ...]:
        """Units per layer, inputs first: ``(n_0, ..., n_L)``."""
        return tuple(len(k) for k in self.kept)

    @property
    def num_weights(self) -> int:
        """Entries of the compact dense kernels (multiply-adds of its dense forward pass)."""
        return int(sum(k.size for k in self.kernels))

    @property
    def num_nonzero(self) -> int:
        """Nonzero kernel entries (multiply-adds of the CSR forward pass)."""
        return int(sum(np.count_nonzero(k) for k in self.kernels))


def compact_mlp(spec: MLPSpec, params: Params, masks: Masks) -> CompactMLP:
    """Shrinks one masked MLP (no population axis) to its live units, exactly (module docstring).

    Args:
        spec: the network's structure.
        params: one network's parameters (float32, shapes of ``spec.init``).
        masks: its masks (bool, shaped like ``params``; biases masked where
            ``spec.mask_biases``).

    Returns:
        A :class:`CompactMLP` whose :func:`apply_compact` equals ``spec.apply(params, masks,
        x)`` up to float summation order.

    Examples:
        >>> spec = MLPSpec(input_size=2, hidden_sizes=(3,), output_size=1)
        >>> params = spec.init(jax.random.key(1))
        >>> masks = spec.full_masks(params)
        >>> kernel = masks["params"]["Dense_1"]["kernel"]
        >>> masks["params"]["Dense_1"]["kernel"] = kernel.at[0].set(False)
        >>> compact_mlp(spec, params, masks).layer_widths  # hidden unit 0 reaches no output
        (2, 2, 1)
    """
    hidden = NUMPY_ACTIVATIONS[spec.activation]
    kernels = [
        np.asarray(k, np.float32) * np.asarray(m, bool)
        for k, m in zip(spec.kernels(params), spec.kernels(masks), strict=True)
    ]
    biases = [np.asarray(b, np.float32) for b in spec.biases(params)]
    if spec.mask_biases:
        biases = [b * np.asarray(m, bool) for b, m in zip(biases, spec.biases(masks), strict=True)]
    links = [np.asarray(m, bool) for m in spec.kernels(masks)]
    sizes = spec.layer_sizes
    # units some input reaches (inputs always); the others are constants, folded downstream
    reached = [np.ones(sizes[0], bool)]
    for link in links:
        reached.append(np.any(link & reached[-1][:, None], axis=0))
    # units with a path to an output (outputs always)
    useful = [np.ones(sizes[-1], bool)]
    for link in reversed(links):
        useful.insert(0, np.any(link & useful[0][None, :], axis=1))
    folded = [b.copy() for b in biases]
    for layer in range(1, len(sizes) - 1):  # constants of hidden layer `layer`
        value = hidden(folded[layer - 1])
        constant = ~reached[layer]
        folded[layer] = folded[layer] + value[constant] @ kernels[layer][constant]
    kept = [np.flatnonzero(reached[i] & useful[i]) for i in range(len(sizes) - 1)]
    kept.append(np.arange(sizes[-1]))
    compact_kernels = [
        np.ascontiguousarray(kernels[i][np.ix_(kept[i], kept[i + 1])], np.float32)
        for i in range(len(kernels))
    ]
    compact_biases = [folded[i][kept[i + 1]].astype(np.float32) for i in range(len(kernels))]
    return CompactMLP(
        inputs=kept[0],
        kernels=compact_kernels,
        biases=compact_biases,
        activation=spec.activation,
        output_activation=spec.output_activation,
        kept=kept,
    )


def apply_compact(net: CompactMLP, observation) -> np.ndarray:
    """The compact network's outputs for ``observation`` ``[..., observation_size]`` (NumPy).

    Examples:
        >>> spec = MLPSpec(input_size=2, hidden_sizes=(3,), output_size=1)
        >>> params = spec.init(jax.random.key(1))
        >>> net = compact_mlp(spec, params, spec.full_masks(params))
        >>> apply_compact(net, np.zeros((4, 2), np.float32)).shape
        (4, 1)
    """
    x = np.asarray(observation, np.float32)[..., net.inputs]
    last = len(net.kernels) - 1
    for index, (kernel, bias) in enumerate(zip(net.kernels, net.biases, strict=True)):
        name = net.output_activation if index == last else net.activation
        x = NUMPY_ACTIVATIONS[name](x @ kernel + bias)
    return x


# ----- the networks of a run --------------------------------------------------------------------


@dataclasses.dataclass
class RunNetworks:
    """The networks a finished run holds (:func:`open_run`), best first.

    Attributes:
        run_dir: the run directory.
        experiment: its experiment name.
        kind: ``"archive"`` (elites, one per filled cell), ``"population"`` (the GA's) or
            ``"es"`` (member 0: the best network evaluated; member 1: the final search mean,
            never evaluated after the last update, fitness NaN); ``"trial"`` / ``"cell"``
            (autoencoders), ``"front"`` (NSGA-II heads).
        generation: the checkpoint's generation.
        spec: the networks' :class:`~synprune_jax.networks.MLPSpec`.
        params: ``K`` networks' parameters (NumPy leaves ``[K, ...]``).
        masks: their masks (bool leaves ``[K, ...]``).
        fitness: ``[K]`` float32.
        index: ``[K]`` int: the archive cell, or the population member (``0`` for ES).
        descriptors: ``[K, D]`` float32 or ``None``; descriptor_names: their names.
        evaluated_at: ``[K]`` int: the generation whose evaluation gave each network its fitness
            (-1: unknown, a checkpoint written before runs recorded it).
        task: the run's task (rebuilt from its config with one device).
        config: the run's config.
        algorithm: the run's algorithm (rebuilt likewise; :func:`synprune_jax.replay` asks it
            how a generation was evaluated).
        seed: the run's seed.

    Examples:
        >>> networks = open_run("runs/me-prune-reach-tiny")  # doctest: +SKIP
        >>> networks.kind, len(networks), networks.spec.layer_sizes  # doctest: +SKIP
        ('archive', 18, (13, 6, 3))
        >>> params, masks = networks.network(0)  # the best: no leading axis  # doctest: +SKIP
    """

    run_dir: str
    experiment: str
    kind: str
    generation: int
    spec: MLPSpec
    params: Params
    masks: Masks
    fitness: np.ndarray
    index: np.ndarray
    descriptors: np.ndarray | None
    descriptor_names: tuple[str, ...]
    evaluated_at: np.ndarray
    task: Any
    config: dict
    algorithm: Any
    seed: int

    def __len__(self) -> int:
        return int(self.fitness.shape[0])

    def densities(self) -> np.ndarray:
        """``[K]`` density of every network (active / all kernel connections)."""
        from synprune_jax.masks import density

        maskable = self.spec.maskable()
        return np.asarray(jax.vmap(lambda masks: density(masks, maskable))(self.masks))

    def network(self, row: int) -> tuple[Params, Masks]:
        """``(params, masks)`` of network ``row`` (no leading axis)."""
        take = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf[row], tree)
        return take(self.params), take(self.masks)


def restore_run(run_dir: str | os.PathLike, *, as_run: bool = False):
    """``(config, built, state)`` of a run directory: its config, the experiment rebuilt from it
    and its latest checkpoint's state (host arrays).

    Args:
        run_dir: a run directory.
        as_run: rebuild the task on the run's devices (``task.devices``) where this process has
            that many, as a replay that repeats its evaluations needs; otherwise (and by
            default: only shapes are needed) on one device.

    Raises:
        FileNotFoundError: no ``config.json`` or no checkpoint (the message says which).
    """
    from synprune_jax import checkpoint
    from synprune_jax.config import load
    from synprune_jax.experiments import get_experiment
    from synprune_jax.runner import abstract_state

    run_dir = os.fspath(run_dir)
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"no config.json in {run_dir}: not a run directory")
    config = load(config_path)
    for section in ("task", "train"):
        if isinstance(config.get(section), dict) and "devices" in config[section]:
            devices = config[section]["devices"]
            keep = as_run and isinstance(devices, int) and devices <= jax.device_count()
            config[section]["devices"] = devices if keep else 1
    built = get_experiment(config["experiment"]).build(config)
    abstract = abstract_state(built.algorithm, built.hyper)
    directory = os.path.join(run_dir, "checkpoints")
    if checkpoint.latest_step(directory) is None:
        raise FileNotFoundError(
            f"no checkpoint in {directory}: the run wrote none yet (it checkpoints every "
            "run.checkpoint_every generations and at its end)"
        )
    state = jax.device_get(checkpoint.restore(directory, None, abstract))
    return config, built, state


def open_run(run_dir: str | os.PathLike, *, as_run: bool = False) -> RunNetworks:
    """The networks of a finished run, best first (module docstring).

    Args:
        run_dir: a run directory (``config.json`` and ``checkpoints/``).
        as_run: the algorithm's task on the run's devices where possible (:func:`restore_run`).

    Returns:
        A :class:`RunNetworks`, its rows sorted by fitness, best first.

    Raises:
        FileNotFoundError: not a run directory, or no checkpoint.
        ValueError: the run's genomes are not MLP networks (the kinematic arm's angles, LeNet
            synthesis), or it holds none with a finite fitness.

    Examples:
        >>> open_run("no/such/run")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no config.json in no/such/run: not a run directory
        >>> networks = open_run("runs/me-prune-reach-tiny")  # doctest: +SKIP
        >>> networks.fitness[:3], networks.index[:3]  # best first; archive cells  # doctest: +SKIP
        (array([0.06121051, 0.05045617, 0.04833388], dtype=float32), array([200, 220, 242]))
    """
    config, built, state = restore_run(run_dir, as_run=as_run)
    return run_networks(
        built.algorithm,
        state,
        seed=int(built.run_config.seed),
        hyper=built.hyper,
        run_dir=run_dir,
        experiment=config["experiment"],
        config=config,
    )


def autoencoder_mlp(spec) -> MLPSpec:
    """An autoencoder (:class:`~synprune_jax.autoencoder.AutoencoderSpec`) as one MLP chain:
    ``d -> h -> z -> h -> d``, ReLU inside (the code layer included, as the encoder's output),
    sigmoid out, biases maskable. Its layers ``Dense_0``, ``Dense_1`` are the encoder's,
    ``Dense_2``, ``Dense_3`` the decoder's (:func:`autoencoder_as_mlp`).

    Examples:
        >>> from synprune_jax.autoencoder import AutoencoderSpec
        >>> spec = AutoencoderSpec(input_dim=40, hidden_dim=6, bottleneck_dim=3)
        >>> autoencoder_mlp(spec).layer_sizes
        (40, 6, 3, 6, 40)
    """
    return MLPSpec(
        input_size=spec.input_dim,
        hidden_sizes=(spec.hidden_dim, spec.bottleneck_dim, spec.hidden_dim),
        output_size=spec.input_dim,
        activation="relu",
        output_activation="sigmoid",
        mask_biases=True,
    )


def autoencoder_as_mlp(tree: dict) -> dict:
    """``{"encoder": {"layer_0", "layer_1"}, "decoder": ...}`` (params or masks, any leading
    axes) -> the :func:`autoencoder_mlp` layout ``{"params": {"Dense_0", ..., "Dense_3"}}``."""
    layers = [
        tree[net][layer] for net in ("encoder", "decoder") for layer in ("layer_0", "layer_1")
    ]
    return {"params": {f"Dense_{index}": layer for index, layer in enumerate(layers)}}


def _autoencoders(algorithm, state):
    """Every autoencoder of an ``ae-prune`` (``[T]`` trials) or ``ae-coevolution`` (``[T, N]``
    cells) state as rows of :func:`autoencoder_mlp` networks; fitness = -(test L1 error)."""
    spec = autoencoder_mlp(algorithm.config.spec)
    lead = np.shape(state.l1_test)
    flat = lambda leaf: np.asarray(leaf).reshape(-1, *np.shape(leaf)[len(lead) :])  # noqa: E731
    params = jax.tree_util.tree_map(flat, autoencoder_as_mlp(state.params))
    masks = jax.tree_util.tree_map(lambda leaf: flat(leaf) != 0, autoencoder_as_mlp(state.masks))
    fitness = -np.asarray(state.l1_test, np.float32).reshape(-1)
    return ("trial" if len(lead) == 1 else "cell"), spec, params, masks, fitness


def _transfer_heads(algorithm, state, hyper):
    """A transfer run's genomes as trained heads (``relu`` MLP ``F -> H -> C``, linear logits):
    the input mask on the first kernel's rows, the hidden mask on the second's; each genome's
    head is trained again with the run's hyper (its weights are not kept in the state)."""
    problem = algorithm.problem
    hyper = hyper if hyper is not None else algorithm.default_hyper
    if hasattr(algorithm, "resolve_hyper"):
        hyper = algorithm.resolve_hyper(hyper)
    genomes = np.asarray(state.genomes, bool)
    trained, _ = jax.jit(problem.train_heads)(jnp.asarray(genomes), hyper.problem)
    trained = jax.device_get(trained)
    head = problem.head
    input_mask, hidden_mask = (np.asarray(mask) > 0 for mask in jax.vmap(head.split)(genomes))
    size = genomes.shape[0]
    spec = MLPSpec(
        input_size=head.num_features,
        hidden_sizes=(head.num_hidden,),
        output_size=head.num_classes,
        activation="relu",
        output_activation="linear",
    )
    params = {
        "params": {
            "Dense_0": {"kernel": trained["w1"], "bias": trained["b1"]},
            "Dense_1": {"kernel": trained["w2"], "bias": trained["b2"]},
        }
    }
    masks = {
        "params": {
            "Dense_0": {
                "kernel": np.broadcast_to(input_mask[:, :, None], np.shape(trained["w1"])),
                "bias": np.ones((size, head.num_hidden), bool),
            },
            "Dense_1": {
                "kernel": np.broadcast_to(hidden_mask[:, :, None], np.shape(trained["w2"])),
                "bias": np.ones((size, head.num_classes), bool),
            },
        }
    }
    objectives = np.asarray(state.objectives, np.float32)
    fitness = np.asarray(getattr(state, "fitness", objectives[:, 0]), np.float32)
    kind = "front" if hasattr(state, "ranks") else "population"
    return kind, spec, params, masks, fitness, objectives


def run_networks(
    algorithm,
    state,
    *,
    seed: int = 0,
    hyper=None,
    run_dir: str | os.PathLike = "",
    experiment: str = "",
    config: dict | None = None,
) -> RunNetworks:
    """The networks of an algorithm's state, best first: :func:`open_run` without the files,
    for a run made from Python (``synprune_jax.run(algorithm, run_dir, ...)`` writes no
    ``config.json`` to rebuild it from).

    Args:
        algorithm: the run's algorithm (MAP-Elites, GA, ES or PPO on a task with an MLP policy; a
            ``ShardedTask`` / ``ChunkedTask`` wrapper is looked through).
        state: its state (an archive, a population or an ES's best).
        seed: the run's ``RunConfig.seed`` (replays derive the evaluation keys from it).
        hyper: the run's hyper-parameters; needed for transfer heads, whose weights are not in
            the state (each genome's head is trained again with them, as its evaluation did).
        run_dir: the run directory, for provenance and default output folders.
        experiment: a name for provenance.
        config: the run's config, if any.

    Returns:
        A :class:`RunNetworks`.

    Raises:
        ValueError: as :func:`open_run`.

    Examples:
        >>> from synprune_jax.archives import GridSpec
        >>> from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
        >>> from synprune_jax.tasks import KinematicArm
        >>> task = KinematicArm(num_joints=3, genotype="mlp", hidden_sizes=(4,))
        >>> config = MapElitesConfig(archive=GridSpec((0.0, 0.0), (1.0, 1.0), (4, 4)), batch_size=8)
        >>> algorithm = MapElites(config, task)
        >>> state = jax.jit(algorithm.init)(jax.random.key(0), algorithm.default_hyper)
        >>> networks = run_networks(algorithm, state)
        >>> filled = int(state.archive.filled.sum())
        >>> networks.kind, networks.spec.layer_sizes, len(networks) == filled
        ('archive', (4, 4, 3), True)
    """
    task: Any = getattr(algorithm, "task", None)
    while hasattr(task, "task"):  # ShardedTask, ChunkedTask: the task they wrap
        task = task.task
    spec = getattr(task, "spec", None)
    name = experiment or type(algorithm).__name__
    label = f"the run in {os.fspath(run_dir) or 'memory'} ({name})"
    state = jax.device_get(state)
    names: tuple[str, ...] = ()
    descriptors = None
    evaluated_at = None
    if hasattr(state, "l1_test") and isinstance(getattr(state, "params", None), dict):
        kind, spec, params, masks, fitness = _autoencoders(algorithm, state)
        task = algorithm
    elif hasattr(state, "genomes") and hasattr(getattr(algorithm, "problem", None), "train_heads"):
        kind, spec, params, masks, fitness, descriptors = _transfer_heads(algorithm, state, hyper)
        task = algorithm.problem
        names = tuple(algorithm.problem.objective_names)
    elif not isinstance(spec, MLPSpec):
        raise ValueError(f"{label} does not evolve MLP networks: nothing to inspect or export")
    elif hasattr(state, "archive"):
        kind, genomes = "archive", state.archive.genomes
        fitness = np.asarray(state.archive.fitness, np.float32)
        descriptors = np.asarray(state.archive.descriptors, np.float32)
        names = tuple(getattr(task, "descriptor_names", ()))
        params, masks = genomes.params, genomes.masks
        evaluated_at = np.asarray(state.evaluated_at)
    elif hasattr(state, "population"):
        kind = "population"
        fitness = np.asarray(state.fitness, np.float32)
        params, masks = state.population.params, state.population.masks
        evaluated_at = np.asarray(state.evaluated_at)
    elif hasattr(state, "normalizer"):  # PPO: the final policy, its normaliser folded in
        kind = "ppo"
        fitness = np.asarray([state.fitness], np.float32)
        evaluated_at = np.asarray([state.evaluated_at])
        params, masks = jax.tree_util.tree_map(
            lambda leaf: np.asarray(leaf)[None], algorithm.policy_network(state)
        )
    elif hasattr(state, "best_params"):
        # member 0: the best network evaluated; member 1: the final search mean (not evaluated
        # after the last update: fitness NaN)
        kind = "es"
        fitness = np.asarray([state.best_fitness, np.nan], np.float32)
        evaluated_at = np.asarray([state.best_evaluated_at, -1])
        mean = algorithm.strategy_for(hyper or algorithm.default_hyper).mean(state.strategy)
        params, masks = jax.tree_util.tree_map(
            lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]),
            (state.best_params, state.best_masks),
            (jax.device_get(mean), state.masks),
        )
    else:
        raise ValueError(f"{label} holds no networks")
    if evaluated_at is None:  # evaluations without episodes: nothing to replay
        evaluated_at = np.full(fitness.shape, -1)
    if not np.isfinite(fitness).any():
        raise ValueError(f"{label} holds no network with a finite fitness yet")
    listed = np.isfinite(fitness)
    if kind == "es":
        listed[1] = True  # the mean: listed, never evaluated
    rows = np.flatnonzero(listed)
    order = rows[np.argsort(-fitness[rows], kind="stable")]  # NaN last
    take = lambda tree: jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[order], tree)
    return RunNetworks(
        run_dir=os.fspath(run_dir),
        experiment=experiment,
        kind=kind,
        generation=int(state.generation),
        spec=spec,
        params=take(params),
        masks=take(masks),
        fitness=fitness[order],
        index=order,
        descriptors=None if descriptors is None else descriptors[order],
        descriptor_names=names,
        evaluated_at=evaluated_at[order].astype(np.int64),
        task=task,
        config=config or {},
        algorithm=algorithm,
        seed=int(seed),
    )


def inspect_run(
    run_dir: str | os.PathLike, networks: RunNetworks | None = None, cost: bool = False
):
    """A table of the run's networks, best first (``synprune inspect RUN``).

    Columns: ``cell`` (archive) or ``member`` (population, ES: 0), ``fitness``,
    ``evaluated_at`` (the generation whose evaluation gave the fitness; -1 unknown), ``density``
    (active / all kernel connections), ``disconnected_fraction`` (hidden and output units with
    no active incoming connection), ``active_connections``, ``effective_connections``
    (connections on a path from an input to an output: the multiply-adds that matter),
    ``live_units`` (units per layer after :func:`compact_mlp`, inputs first, as ``"a-b-c"``),
    ``dense_macs`` (multiply-adds of the unpruned network), ``compact_macs`` (of the compact
    dense network), then one column per descriptor (``descriptor_<name>`` where the name is
    one of the columns before, e.g. ``disconnected_fraction``).

    Args:
        run_dir: a run directory.
        networks: its :class:`RunNetworks` if already opened (else :func:`open_run`).
        cost: add, per form of :func:`network_cost` (``dense``, ``masked``, ``compact``,
            ``csr``), its ``<form>_bytes`` and ``<form>_energy_pj`` (an estimate).

    Returns:
        A ``pandas.DataFrame``, one row per network.

    Raises:
        FileNotFoundError: as :func:`open_run` (no run directory or checkpoint).
        ValueError: as :func:`open_run` (no MLP networks, none with a finite fitness).

    Examples:
        >>> table = inspect_run("runs/me-prune-reach-tiny")  # doctest: +SKIP
        >>> columns = ["cell", "fitness", "density", "effective_connections", "live_units",
        ...            "compact_macs"]  # doctest: +SKIP
        >>> print(table[columns].head(3).to_string(index=False))  # doctest: +SKIP
         cell  fitness  density  effective_connections live_units  compact_macs
          200 0.061211 0.468750                     45     11-6-3            84
          220 0.050456 0.437500                     42     11-6-3            84
          242 0.048334 0.385417                     25     11-4-3            56
    """
    import pandas as pd

    from synprune_jax.masks import mask_statistics

    networks = networks or open_run(run_dir)
    spec = networks.spec
    stats = jax.device_get(jax.jit(jax.vmap(lambda m: mask_statistics(spec, m)))(networks.masks))
    dense_macs = sum(
        a * b for a, b in zip(spec.layer_sizes[:-1], spec.layer_sizes[1:], strict=True)
    )
    rows = []
    for row in range(len(networks)):
        net = compact_mlp(spec, *networks.network(row))
        record = {
            "cell" if networks.kind == "archive" else "member": int(networks.index[row]),
            "fitness": float(networks.fitness[row]),
            "evaluated_at": int(networks.evaluated_at[row]),
            "density": float(stats.density[row]),
            "disconnected_fraction": float(stats.disconnected_fraction[row]),
            "active_connections": int(stats.active_synapses[row]),
            "effective_connections": int(stats.effective_macs[row]),
            "live_units": "-".join(str(width) for width in net.layer_widths),
            "dense_macs": int(dense_macs),
            "compact_macs": net.num_weights,
        }
        if cost:
            for form in network_cost(spec, *networks.network(row), net=net):
                record[f"{form['form']}_bytes"] = form["bytes"]
                record[f"{form['form']}_energy_pj"] = form["energy_pj"]
        if networks.descriptors is not None:
            for column, name in enumerate(networks.descriptor_names):
                key = f"descriptor_{name}" if name in record else name  # not overwritten
                record[key] = float(networks.descriptors[row, column])
        rows.append(record)
    return pd.DataFrame(rows)


def select_network(
    networks: RunNetworks,
    density: float | None = None,
    cell: int | None = None,
    rank: int | None = None,
) -> int:
    """The row of the network chosen by exactly one of: the best with ``density`` at most the
    given one, archive ``cell``, or ``rank`` (0 = the best).

    Args:
        networks: a run's networks (:func:`open_run`).
        density: the largest density allowed (active / all kernel connections).
        cell: an archive cell index.
        rank: a position in the fitness order.

    Returns:
        The row (an int) of ``networks``.

    Raises:
        ValueError: not exactly one choice; no network at or below ``density`` (the message gives
            the sparsest); ``cell`` empty or not an archive run; ``rank`` out of range.

    Examples:
        >>> select_network(None, density=0.1, rank=0)
        Traceback (most recent call last):
        ...
        ValueError: choose the network with exactly one of --density, --cell, --rank
        >>> networks = open_run("runs/me-prune-reach-tiny")  # doctest: +SKIP
        >>> row = select_network(networks, density=0.25)  # doctest: +SKIP
        >>> row, networks.index[row]  # the 5th best is the best at <= 25 %  # doctest: +SKIP
        (4, 393)
    """
    chosen = [
        name
        for name, value in (("density", density), ("cell", cell), ("rank", rank))
        if value is not None
    ]
    if len(chosen) != 1:
        raise ValueError("choose the network with exactly one of --density, --cell, --rank")
    if density is not None:
        values = networks.densities()
        rows = np.flatnonzero(values <= float(density) + 1e-9)
        if rows.size == 0:
            raise ValueError(
                f"no network at or below density {density}: the sparsest has density "
                f"{values.min():.4f}"
            )
        return int(rows[0])  # best first
    if cell is not None:
        if networks.kind != "archive":
            raise ValueError(
                f"--cell needs an archive run; {networks.run_dir} holds a {networks.kind}"
            )
        rows = np.flatnonzero(networks.index == int(cell))
        if rows.size == 0:
            raise ValueError(f"cell {cell} of {networks.run_dir} is empty")
        return int(rows[0])
    assert rank is not None
    if not 0 <= int(rank) < len(networks):
        raise ValueError(f"--rank {rank} is out of range: the run holds {len(networks)} networks")
    return int(rank)


def choice_name(density: float | None, cell: int | None, rank: int | None) -> str:
    """The folder name of a choice of :func:`select_network` (``density-0.1``, ``cell-17``,
    ``rank-0``).

    Examples:
        >>> choice_name(0.1, None, None), choice_name(None, 17, None)
        ('density-0.1', 'cell-17')
    """
    if density is not None:
        return f"density-{density}"
    return f"cell-{cell}" if cell is not None else f"rank-{rank}"


def export_network(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    density: float | None = None,
    cell: int | None = None,
    rank: int | None = None,
    networks: RunNetworks | None = None,
) -> dict[str, str]:
    """Writes the chosen network of a run, compacted, to ``out`` (default
    ``RUN/export/<choice>``): ``network.npz``, ``network.msgpack``, ``network.json`` (module
    docstring).

    Args:
        run_dir: a run directory.
        out: the directory to write (created).
        density: see :func:`select_network`.
        cell: see :func:`select_network`.
        rank: see :func:`select_network`.
        networks: the run's :class:`RunNetworks` if already opened (:func:`open_run`, or
            :func:`run_networks` for a run made from Python).

    Returns:
        ``{"npz": path, "msgpack": path, "json": path}``.

    Raises:
        FileNotFoundError: as :func:`open_run` (no run directory or checkpoint).
        ValueError: as :func:`open_run` and :func:`select_network`.

    Examples:
        >>> paths = export_network("runs/me-prune-reach-tiny", density=0.25)  # doctest: +SKIP
        >>> paths["npz"]  # doctest: +SKIP
        'runs/me-prune-reach-tiny/export/density-0.25/network.npz'
    """
    from flax import serialization

    networks = networks or open_run(run_dir)
    row = select_network(networks, density=density, cell=cell, rank=rank)
    params, masks = networks.network(row)
    net = compact_mlp(networks.spec, params, masks)
    choice = choice_name(density, cell, rank)
    out = os.fspath(out or os.path.join(os.fspath(run_dir), "export", choice))
    os.makedirs(out, exist_ok=True)
    from synprune_jax.masks import density as density_of

    provenance = {
        "run": os.path.abspath(os.fspath(run_dir)),
        "experiment": networks.experiment,
        "generation": networks.generation,
        "kind": networks.kind,
        ("cell" if networks.kind == "archive" else "member"): int(networks.index[row]),
        "fitness": float(networks.fitness[row]),
        "evaluated_at": int(networks.evaluated_at[row]),
        "density": float(density_of(masks, networks.spec.maskable())),
        "descriptors": (
            {}
            if networks.descriptors is None
            else dict(
                zip(networks.descriptor_names, map(float, networks.descriptors[row]), strict=True)
            )
        ),
    }
    arrays: dict[str, Any] = {
        "format_version": np.int32(1),
        "layer_widths": np.asarray(net.layer_widths, np.int64),
        "inputs": net.inputs.astype(np.int64),
        "activation": np.asarray(net.activation),
        "output_activation": np.asarray(net.output_activation),
        "observation_size": np.int64(networks.spec.input_size),
        "action_size": np.int64(networks.spec.output_size),
        "provenance": np.asarray(json.dumps(provenance)),
    }
    for layer, (kernel, bias) in enumerate(zip(net.kernels, net.biases, strict=True)):
        arrays[f"kernel_{layer}"] = kernel
        arrays[f"bias_{layer}"] = bias
        data, indices, indptr = csr(kernel.T)
        arrays[f"csr_{layer}_data"] = data
        arrays[f"csr_{layer}_indices"] = indices
        arrays[f"csr_{layer}_indptr"] = indptr
        arrays[f"csr_{layer}_shape"] = np.asarray(kernel.T.shape, np.int64)
    paths = {key: os.path.join(out, f"network.{key}") for key in ("npz", "msgpack", "json")}
    np.savez(paths["npz"], **arrays)
    flax_params = {
        "params": {
            f"Dense_{layer}": {"kernel": kernel, "bias": bias}
            for layer, (kernel, bias) in enumerate(zip(net.kernels, net.biases, strict=True))
        }
    }
    with open(paths["msgpack"], "wb") as handle:
        handle.write(serialization.to_bytes(flax_params))
    with open(paths["json"], "w") as handle:
        json.dump(
            {
                **provenance,
                "layer_widths": list(net.layer_widths),
                "inputs": net.inputs.tolist(),
                "activation": net.activation,
                "output_activation": net.output_activation,
                "observation_size": networks.spec.input_size,
                "action_size": networks.spec.output_size,
                "weights": net.num_weights,
                "nonzero_weights": net.num_nonzero,
            },
            handle,
            indent=2,
        )
    return paths


# ----- what a network costs ----------------------------------------------------------------------

# Energy per operation, 45 nm, from M. Horowitz, "Computing's energy problem (and what we can do
# about it)", ISSCC 2014: a 32-bit float multiply, a 32-bit float add, a 32-bit read from an 8 KB
# SRAM (the weights of these networks fit a cache). An estimate: it counts arithmetic and weight
# reads only (no activations, control, DRAM or the host), on a process that is not this CPU's.
ENERGY_PJ = {"fp32_multiply": 3.7, "fp32_add": 0.9, "sram_read_32bit": 5.0}
FORMS = ("dense", "masked", "compact", "csr")


def network_cost(
    spec: MLPSpec, params: Params, masks: Masks, net: CompactMLP | None = None
) -> list[dict]:
    """Parameters, bytes, multiply-adds and an energy estimate of one forward pass (one
    observation) of a masked MLP in four forms: ``dense`` (the unpruned network), ``masked``
    (what the engine runs: every weight multiplied, plus a bool mask per maskable entry),
    ``compact`` (:func:`compact_mlp`, dense kernels) and ``csr`` (its kernels' nonzeros with
    int32 column indices and row pointers).

    ``energy_pj`` = multiply-adds x (multiply + add) + 32-bit words read x SRAM read, with the
    45 nm figures of :data:`ENERGY_PJ` (Horowitz, ISSCC 2014): an estimate, not a measurement.

    Args:
        spec: the network's structure.
        params: one network's parameters.
        masks: its masks.
        net: its :func:`compact_mlp` if already computed (else computed here).

    Returns:
        Four dicts (one per form, in :data:`FORMS` order) with ``form``, ``parameters``,
        ``bytes``, ``macs`` and ``energy_pj``.

    Examples:
        >>> spec = MLPSpec(input_size=2, hidden_sizes=(3,), output_size=1)
        >>> params = spec.init(jax.random.key(1))
        >>> masks = spec.full_masks(params)
        >>> kernel = masks["params"]["Dense_0"]["kernel"]
        >>> masks["params"]["Dense_0"]["kernel"] = kernel.at[:, 0].set(False)  # 2-2-1: 4 + 2 MACs
        >>> [(c["form"], c["parameters"], c["macs"]) for c in network_cost(spec, params, masks)]
        [('dense', 13, 9), ('masked', 13, 9), ('compact', 9, 6), ('csr', 9, 6)]
    """
    net = net if net is not None else compact_mlp(spec, params, masks)
    sizes = spec.layer_sizes
    dense_macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    biases = sum(sizes[1:])
    maskable = sum(
        int(np.size(leaf))
        for leaf, flag in zip(
            jax.tree_util.tree_leaves(params),
            jax.tree_util.tree_leaves(spec.maskable()),
            strict=True,
        )
        if flag
    )
    compact_biases = sum(len(b) for b in net.biases)
    csr_index_words = net.num_nonzero + sum(k.shape[1] + 1 for k in net.kernels)
    per_mac = ENERGY_PJ["fp32_multiply"] + ENERGY_PJ["fp32_add"]
    read = ENERGY_PJ["sram_read_32bit"]

    def row(form, parameters, size, macs, words):
        return {
            "form": form,
            "parameters": int(parameters),
            "bytes": int(size),
            "macs": int(macs),
            "energy_pj": float(macs * per_mac + words * read),
        }

    dense_params = dense_macs + biases
    return [
        row("dense", dense_params, 4 * dense_params, dense_macs, dense_params),
        # the engine reads every weight and, per maskable entry, one mask byte (a quarter word)
        row(
            "masked",
            dense_params,
            4 * dense_params + maskable,
            dense_macs,
            dense_params + maskable / 4,
        ),
        row(
            "compact",
            net.num_weights + compact_biases,
            4 * (net.num_weights + compact_biases),
            net.num_weights,
            net.num_weights + compact_biases,
        ),
        row(
            "csr",
            net.num_nonzero + compact_biases,
            4 * (net.num_nonzero + compact_biases + csr_index_words),
            net.num_nonzero,
            net.num_nonzero + compact_biases + csr_index_words,
        ),
    ]


def csr(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` of a 2-D array's nonzero entries in compressed sparse row
    form (SciPy's ``csr_matrix((data, indices, indptr), shape)`` reads it back).

    Examples:
        >>> data, indices, indptr = csr(np.array([[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]]))
        >>> data.tolist(), indices.tolist(), indptr.tolist()
        ([2.0, 3.0], [1, 0], [0, 1, 2, 2])
    """
    matrix = np.asarray(matrix)
    rows, columns = np.nonzero(matrix)
    indptr = np.zeros(matrix.shape[0] + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    return (
        matrix[rows, columns].astype(np.float32),
        columns.astype(np.int64),
        np.cumsum(indptr),
    )


__all__ = [
    "CompactMLP",
    "RunNetworks",
    "apply_compact",
    "compact_mlp",
    "csr",
    "ENERGY_PJ",
    "FORMS",
    "export_network",
    "inspect_run",
    "network_cost",
    "open_run",
    "restore_run",
    "select_network",
]
