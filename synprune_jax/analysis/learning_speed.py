"""Does information at generation 0 predict how fast a sparse network learns?

:class:`LearningSpeedStudy` (a runner algorithm) draws ``N`` randomly pruned networks
(Beta-distributed per-layer density), records one rollout of each, computes their information
profile (:func:`~synprune_jax.analysis.information.information_profile`: mean MI between each
hidden layer's units and the actions, and mean normalised unit entropy) and then trains every
network with its own masked ES (:class:`~synprune_jax.algorithms.es.MaskedES`, vmapped over the
``N`` networks; the study's hyper-parameters are the ES's
:class:`~synprune_jax.algorithms.es.ESHyper`). Each generation it records, per network, the first
generation at which the best return reached ``threshold``. Host helpers turn the final state into
a table (:func:`learning_speed_table`), rank correlations (:func:`rank_correlation`) and a
scatter plot (:func:`plot_mi_vs_learning_speed`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from synprune_jax import variation
from synprune_jax.algorithms.es import ESConfig, ESHyper, ESState, MaskedES, validate_hyper
from synprune_jax.analysis.information import information_profile
from synprune_jax.tasks.base import Task
from synprune_jax.types import Population


def generations_to_threshold(curves: np.ndarray, threshold: float) -> np.ndarray:
    """First generation (1-based) at which each curve ``[N, G]`` (column ``g``: the value after
    generation ``g + 1``) reaches ``threshold``; -1 if never."""
    curves = np.asarray(curves, np.float64)
    reached = curves >= threshold
    first = np.argmax(reached, axis=1) + 1
    return np.where(reached.any(axis=1), first, -1)


def rank_correlation(measure: np.ndarray, generations: np.ndarray, num_generations: int) -> dict:
    """Spearman correlations between a measure and generations-to-threshold.

    ``generations`` holds -1 for "never". ``"reached"``: over the networks that reached it;
    ``"censored"``: over all, a network that never did counted as ``num_generations + 1``. NaN
    where fewer than 3 networks or a constant.
    """
    from scipy.stats import spearmanr

    measure = np.asarray(measure, np.float64)
    generations = np.asarray(generations, np.float64)
    reached = generations >= 0
    censored = np.where(reached, generations, num_generations + 1)

    def rho(x, y):
        if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return float("nan")
        return float(spearmanr(x, y).statistic)

    return {
        "reached": rho(measure[reached], generations[reached]),
        "censored": rho(measure, censored),
        "num_reached": int(reached.sum()),
        "num_networks": int(measure.size),
    }


def learning_speed_table(
    action_mi: np.ndarray, entropy: np.ndarray, density: np.ndarray, generations: np.ndarray
) -> list[dict]:
    """One row per network, sorted by MI (descending)."""
    order = np.argsort(-np.asarray(action_mi), kind="stable")
    return [
        {
            "network": int(i),
            "action_mi": float(action_mi[i]),
            "entropy": float(entropy[i]),
            "density": float(density[i]),
            "generations_to_threshold": int(generations[i]) if generations[i] >= 0 else None,
        }
        for i in order
    ]


def format_table(rows: list[dict], correlation: dict, threshold: float) -> str:
    lines = [
        f"| network | MI(layer; action) at gen 0 | unit entropy | density | "
        f"generations to return >= {threshold:g} |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        gens = (
            "not reached"
            if row["generations_to_threshold"] is None
            else str(row["generations_to_threshold"])
        )
        lines.append(
            f"| {row['network']} | {row['action_mi']:.4f} | {row['entropy']:.3f} | "
            f"{row['density']:.3f} | {gens} |"
        )
    lines += [
        "",
        f"Spearman rho (MI vs generations): {correlation['reached']:.3f} over the "
        f"{correlation['num_reached']} of {correlation['num_networks']} networks that "
        f"reached the threshold; {correlation['censored']:.3f} counting the others as "
        "never (censored).",
    ]
    return "\n".join(lines)


def plot_mi_vs_learning_speed(
    path: str | os.PathLike, action_mi: np.ndarray, generations: np.ndarray, num_generations: int
) -> str:
    """Scatter of MI at generation 0 against generations to threshold (never: drawn at the top
    as open markers)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    action_mi = np.asarray(action_mi, np.float64)
    generations = np.asarray(generations)
    reached = generations >= 0
    figure = Figure(figsize=(5.5, 4.0))
    axes = figure.add_subplot()
    axes.scatter(action_mi[reached], generations[reached], s=22, label="reached")
    if (~reached).any():
        axes.scatter(
            action_mi[~reached],
            np.full((~reached).sum(), num_generations + 1),
            s=22,
            facecolors="none",
            edgecolors="C3",
            label="not reached",
        )
    axes.set_xlabel("mean MI(layer units; actions) at generation 0 (nats)")
    axes.set_ylabel("generations to reach the return threshold")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return str(path)


class LearningSpeedState(struct.PyTreeNode):
    """Study state: ``N`` ES runs and their generation-0 information (no PRNG keys).

    Attributes:
        es: :class:`~synprune_jax.algorithms.es.ESState` with a leading ``[N]`` axis.
        action_mi: ``[N]`` mean MI between hidden-layer units and actions at generation 0.
        entropy: ``[N]`` mean normalised unit entropy at generation 0.
        density: ``[N]`` mask density.
        initial_fitness: ``[N]`` return of each network before training.
        first_reached: ``[N]`` int32 first generation with best return >= threshold (-1: not yet).
        generation: int32 scalar.
        num_evaluations: int32 scalar (all networks together).
    """

    es: ESState
    action_mi: jax.Array
    entropy: jax.Array
    density: jax.Array
    initial_fitness: jax.Array
    first_reached: jax.Array
    generation: jax.Array
    num_evaluations: jax.Array


ObservationsFn = Callable[[jax.Array, Population], tuple[jax.Array, jax.Array]]


def brax_observations(task) -> ObservationsFn:
    """``(key, population) -> (observations [P, T, obs], alive [P, T])`` from one episode of a
    :class:`~synprune_jax.tasks.BraxTask` (its first episode, trajectories kept); a task wrapped
    in :class:`~synprune_jax.sharding.ShardedTask` / ``ChunkedTask`` keeps its wrapper."""
    recording: Any  # the task (or its wrapper) recording trajectories
    inner = getattr(task, "task", None)
    # a wrapper: replace inside it
    if inner is not None and dataclasses.is_dataclass(task) and not isinstance(task, type):
        recording = dataclasses.replace(
            task, task=dataclasses.replace(inner, keep_trajectories=True, num_episodes=1)
        )
    else:
        recording = dataclasses.replace(task, keep_trajectories=True, num_episodes=1)

    def observations(key, population):
        extras = recording.evaluate(key, population).extras
        return extras["observations"][:, 0], extras["alive"][:, 0]

    return observations


@dataclasses.dataclass(frozen=True)
class LearningSpeedStudy:
    """Runner algorithm: information at generation 0 vs ES learning speed (module docstring).

    Static and compared by value; the numeric knobs are the ES's
    :class:`~synprune_jax.algorithms.es.ESHyper` (its ``init_density`` is unused).

    Args:
        task: an MLP task (``task.spec`` not None).
        es_config: the ES each network is trained with.
        num_networks: ``N``.
        threshold: return threshold.
        bins: histogram bins of the information measures.
        init_beta_a: ``a`` of the Beta distribution of per-layer densities.
        init_beta_b: ``b``.
        observations_fn: ``(key, population) -> (observations [P, T, in], weights [P, T])``;
            default (``None``) :func:`brax_observations` (Brax tasks only).

    Attributes:
        es: the :class:`~synprune_jax.algorithms.es.MaskedES` every network is trained with.
    """

    task: Task
    es_config: ESConfig
    num_networks: int
    threshold: float
    bins: int = 16
    init_beta_a: float = 1.0
    init_beta_b: float = 1.0
    observations_fn: ObservationsFn | None = None
    es: MaskedES = dataclasses.field(init=False, repr=False, compare=False)
    _observations: ObservationsFn = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        task = self.task
        if task.spec is None:
            raise ValueError("the learning-speed study needs an MLP task (task.spec is None)")
        if self.num_networks < 2:
            raise ValueError(f"num_networks must be >= 2, got {self.num_networks}")
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")
        observations_fn = self.observations_fn
        if observations_fn is None:
            if not hasattr(task, "keep_trajectories"):
                raise ValueError("give observations_fn for a task that cannot keep trajectories")
            observations_fn = brax_observations(task)
        for name, kind in (
            ("num_networks", int),
            ("threshold", float),
            ("bins", int),
            ("init_beta_a", float),
            ("init_beta_b", float),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "es", MaskedES(self.es_config, task))
        object.__setattr__(self, "_observations", observations_fn)

    @property
    def default_hyper(self) -> ESHyper:
        """``ESHyper()`` (the ES's defaults)."""
        return ESHyper()

    def initial_networks(self, key: jax.Array) -> Population:
        """``N`` random networks, per-layer density ~ Beta(a, b), forward-pruned."""
        return variation.random_population(
            key,
            self.task,
            self.num_networks,
            jnp.zeros(2),
            beta_a=self.init_beta_a,
            beta_b=self.init_beta_b,
        )

    def init(self, key: jax.Array, hyper: ESHyper) -> LearningSpeedState:
        """Draws the networks, records their information profile and return, starts their ES."""
        validate_hyper(hyper)
        key_networks, key_record, key_eval, key_es = jax.random.split(key, 4)
        networks = self.initial_networks(key_networks)
        observations, weights = self._observations(key_record, networks)
        spec = self.task.spec
        assert spec is not None  # an MLP task (checked when the study is built)
        profile = jax.vmap(
            lambda p, m, o, w: information_profile(spec, p, m, o, None, self.bins, w)
        )(networks.params, networks.masks, observations, weights)
        initial = self.task.evaluate(key_eval, networks)
        es = jax.vmap(lambda k, p, m: self.es.init_from(k, p, m, hyper))(
            jax.random.split(key_es, self.num_networks), networks.params, networks.masks
        )
        reached = initial.fitness >= self.threshold
        return LearningSpeedState(
            es=es,
            action_mi=profile["action_mi"].astype(jnp.float32),
            entropy=jnp.mean(profile["layer_entropy"][:, :-1], axis=1).astype(jnp.float32)
            if spec.num_layers > 1
            else profile["layer_entropy"][:, 0],
            density=initial.extras["density"].astype(jnp.float32),
            initial_fitness=initial.fitness.astype(jnp.float32),
            first_reached=jnp.where(reached, 0, -1).astype(jnp.int32),
            generation=jnp.zeros((), jnp.int32),
            num_evaluations=jnp.asarray(2 * self.num_networks, jnp.int32)
            + jnp.sum(es.num_evaluations),
        )

    def step(self, key: jax.Array, state: LearningSpeedState, hyper: ESHyper):
        """One ES generation of every network; updates the first generation at threshold."""
        keys = jax.random.split(key, self.num_networks)
        es, metrics = jax.vmap(lambda k, s: self.es.step(k, s, hyper))(keys, state.es)
        generation = state.generation + 1
        reached = metrics["best_fitness"] >= self.threshold
        first = jnp.where(
            (state.first_reached < 0) & reached, generation, state.first_reached
        ).astype(jnp.int32)
        evaluations = jnp.sum(es.num_evaluations) - jnp.sum(state.es.num_evaluations)
        state = state.replace(
            es=es,
            first_reached=first,
            generation=generation,
            num_evaluations=state.num_evaluations + evaluations,
        )
        return state, {
            "max_fitness": jnp.max(metrics["best_fitness"]),
            "mean_best_fitness": jnp.mean(metrics["best_fitness"]),
            "fraction_reached": jnp.mean((first >= 0).astype(jnp.float32)),
            "num_evaluations": state.num_evaluations,
        }
