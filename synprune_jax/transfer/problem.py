"""The evolutionary problem: genome ``[L]`` -> trained sparse head -> objectives ``[M]``.

:class:`TransferProblem` closes over the cached features (as device arrays) and static configs;
its numeric knobs (learning rate, momentum, OOD temperature, training seed) are a
:class:`ProblemHyper` passed to every call, so runs that differ only in them share a compiled
program. :meth:`~TransferProblem.evaluate` trains the whole batch of heads at once (one ``vmap``)
and measures the chosen objectives on the **validation** split;
:meth:`~TransferProblem.report_metrics` retrains given genomes (same per-genome keys, so the same
heads) and measures the **test** split, for the final report only.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from synprune_jax.transfer.data import TransferData
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 2, 40)
    >>> data = TransferData(x, y, x, y, x, y, x[:5] + 5, x[5:10] + 5, (6,), (0, 1))
    >>> problem = TransferProblem(data, HeadConfig(6, 4, 2), TrainConfig(epochs=2))
    >>> hyper = problem.default_hyper.replace(learning_rate=0.05)
    >>> jax.jit(problem.evaluate)(jax.random.key(0), jnp.ones((3, 6), bool), hyper).shape
    (3, 3)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from synprune_jax import trees
from synprune_jax.sharding import devices_mesh, pad_rows
from synprune_jax.transfer.data import TransferData
from synprune_jax.transfer.head import HeadConfig, TrainConfig, head_logits, train_population
from synprune_jax.transfer.objectives import (
    auroc,
    check_names,
    classification_metrics,
    max_softmax_score,
    objective_vector,
)


class ProblemHyper(struct.PyTreeNode):
    """Numeric knobs of :class:`TransferProblem` (traced: a sweep stacks them on a run axis).

    Attributes:
        learning_rate: head optimizer step size (> 0).
        momentum: Nesterov momentum, SGD only (in ``[0, 1)``).
        temperature: ``T`` of the max-softmax OOD score (> 0).
        seed: base of the per-genome training keys (uint32; the run seed in the experiments).
    """

    learning_rate: float = 1e-2
    momentum: float = 0.9
    temperature: float = 1000.0
    seed: Any = np.uint32(0)


def validate_hyper(hyper: ProblemHyper) -> None:
    """Raises ``ValueError`` for values the training cannot use (concrete values)."""
    if not hyper.learning_rate > 0:
        raise ValueError("train.learning_rate must be > 0")
    if not 0 <= hyper.momentum < 1:
        raise ValueError("train.momentum must be in [0, 1)")
    if not hyper.temperature > 0:
        raise ValueError(f"objectives.temperature must be > 0, got {hyper.temperature}")


class TransferProblem:
    """Multi-objective evaluation of head genomes on transfer data.

    Compares equal to (and hashes like) another problem with the same data (content digest),
    head, training settings, objectives and devices, so equal algorithms share a compiled sweep.

    Args:
        data: :class:`~synprune_jax.transfer.data.TransferData` (host numpy).
        head: :class:`HeadConfig`; ``num_features`` / ``num_classes`` must match ``data``.
        train: :class:`TrainConfig`.
        objectives: names from :data:`~synprune_jax.transfer.objectives.OBJECTIVES`.
        devices: local devices :meth:`evaluate` splits the batch of genomes over (default 1;
            ``jax.shard_map``; a batch not a multiple of it is padded with copies of its first
            genome). On a CPU, create them first (``jax_num_cpu_devices``). Results equal a
            1-device evaluation up to float rounding (docs/mo_transfer.md, "Use your cores").

    Attributes:
        arrays: the data's splits as device arrays (features ``[N, F]`` float32, labels
            ``[N]`` int32): ``train_x``, ``train_y``, ``val_x``, ``val_y``, ``test_x``,
            ``test_y``, ``ood_val_x``, ``ood_test_x``.
        objective_names: the objectives, in the order of :meth:`evaluate`'s columns.

    Raises:
        ValueError: ``objectives`` empty, repeated or unknown; a head whose features or
            classes differ from the data's; ``devices`` not a positive int or more than the
            local devices (:class:`~synprune_jax.config.ConfigError`, a ``ValueError``).

    Examples:
        >>> from synprune_jax.transfer.data import TransferData
        >>> from synprune_jax.transfer.head import HeadConfig, TrainConfig
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 2, 40)
        >>> data = TransferData(x, y, x, y, x, y, x[:5] + 5, x[5:10] + 5, (6,), (0, 1))
        >>> head = HeadConfig(6, 4, 2, genome="both")  # masks 6 inputs and 4 hidden units
        >>> problem = TransferProblem(data, head, TrainConfig(epochs=2), ("accuracy", "sparsity"))
        >>> problem.genome_length, problem.num_objectives
        (10, 2)
        >>> problem.arrays["train_x"].shape, problem.arrays["train_y"].dtype
        ((40, 6), dtype('int32'))
        >>> TransferProblem(data, HeadConfig(5, 4, 2), TrainConfig())
        Traceback (most recent call last):
        ...
        ValueError: head expects 5 features / 2 classes, data have 6 / 2
    """

    def __init__(
        self,
        data: TransferData,
        head: HeadConfig,
        train: TrainConfig,
        objectives: tuple[str, ...] = ("accuracy", "sparsity", "auroc"),
        devices: int = 1,
    ):
        objectives = check_names(objectives)
        if head.num_features != data.num_features or head.num_classes != data.num_classes:
            raise ValueError(
                f"head expects {head.num_features} features / {head.num_classes} "
                f"classes, data have {data.num_features} / {data.num_classes}"
            )
        self.mesh = devices_mesh(devices, "devices")
        self.devices = devices
        self.data = data
        self.head = head
        self.train_config = train
        self.objective_names = objectives
        as_x = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        as_y = lambda a: jnp.asarray(a, jnp.int32)  # noqa: E731
        self.arrays = {
            "train_x": as_x(data.train_features),
            "train_y": as_y(data.train_labels),
            "val_x": as_x(data.val_features),
            "val_y": as_y(data.val_labels),
            "test_x": as_x(data.test_features),
            "test_y": as_y(data.test_labels),
            "ood_val_x": as_x(data.ood_val_features),
            "ood_test_x": as_x(data.ood_test_features),
        }

    @property
    def genome_length(self) -> int:
        """``L``: the head's genome length (:attr:`HeadConfig.genome_length`)."""
        return self.head.genome_length

    @property
    def default_hyper(self) -> ProblemHyper:
        """``ProblemHyper()``: learning rate 0.01, momentum 0.9, temperature 1000, seed 0."""
        return ProblemHyper()

    # ----- value equality (what fixes the compiled program) ---------------------------------
    @functools.cached_property
    def _identity(self) -> tuple:
        return (
            trees.fingerprint(dict(self.arrays)),
            self.head,
            self.train_config,
            self.objective_names,
            self.devices,
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, TransferProblem):
            return NotImplemented
        return self is other or self._identity == other._identity

    def __hash__(self) -> int:
        return hash(self._identity)

    @property
    def num_objectives(self) -> int:
        """``M``: the number of objectives."""
        return len(self.objective_names)

    def train_heads(self, genomes: jax.Array, hyper: ProblemHyper):
        """``genomes [P, L]`` -> ``(params with leading [P], epochs_run [P])``, trained with
        ``hyper``'s learning rate, momentum and seed."""
        a = self.arrays
        optimizer = self.train_config.make_optimizer(hyper.learning_rate, hyper.momentum)
        return train_population(
            hyper.seed,
            genomes,
            a["train_x"],
            a["train_y"],
            a["val_x"],
            a["val_y"],
            self.head,
            self.train_config,
            optimizer,
        )

    def _head_metrics(self, params: dict, genome: jax.Array, split: str, temperature) -> dict:
        a = self.arrays
        input_mask, hidden_mask = self.head.split(genome)
        x, y = a[f"{split}_x"], a[f"{split}_y"]
        logits = head_logits(params, input_mask, hidden_mask, x)
        ood_logits = head_logits(params, input_mask, hidden_mask, a[f"ood_{split}_x"])
        accuracy, loss = classification_metrics(logits, y)
        active = jnp.sum(genome.astype(jnp.int32))
        in_score = max_softmax_score(logits, temperature)
        out_score = max_softmax_score(ood_logits, temperature)
        return {
            "accuracy": accuracy,
            "loss": loss,
            "auroc": auroc(in_score, out_score),
            "active_fraction": active.astype(jnp.float32) / genome.shape[0],
            "sparsity": (genome.shape[0] - active).astype(jnp.float32) / genome.shape[0],
            "predictions": jnp.argmax(logits, axis=-1),
            "probabilities": jax.nn.softmax(logits, axis=-1),
            "in_score": in_score,
            "out_score": out_score,
        }

    def metrics(self, genomes: jax.Array, hyper: ProblemHyper, split: str = "val") -> dict:
        """Trains ``genomes [P, L]`` with ``hyper`` and measures ``split`` (``"val"`` or
        ``"test"``).

        Returns:
            dict of ``[P]`` arrays (``accuracy``, ``loss``, ``auroc``, ``active_fraction``,
            ``sparsity`` (exactly ``(L - active) / L``), ``epochs_run``) and ``[P, N]`` /
            ``[P, N, C]`` ones (``predictions``, ``probabilities``, ``in_score``;
            ``out_score`` is ``[P, N_ood]``).
        """
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        params, epochs_run = self.train_heads(genomes, hyper)
        result = jax.vmap(lambda p, g: self._head_metrics(p, g, split, hyper.temperature))(
            params, genomes
        )
        result["epochs_run"] = epochs_run
        return result

    def evaluate(self, key: jax.Array, genomes: jax.Array, hyper: ProblemHyper) -> jax.Array:
        """Validation objectives of ``genomes [P, L]`` -> ``[P, M]`` float32 (maximised), the
        heads trained and scored with ``hyper``.

        ``key`` is unused: training keys derive from each genome and ``hyper.seed`` (see
        :mod:`synprune_jax.transfer.head`), so a genome's objectives do not depend on when it
        is evaluated. With ``devices > 1`` the batch is split over the devices (see the class).
        """
        del key

        def objectives(genomes, hyper):
            metrics = self.metrics(genomes, hyper, "val")
            return objective_vector(metrics, self.objective_names)

        if self.mesh is None:
            return objectives(genomes, hyper)
        padded, size = pad_rows(genomes, self.devices)
        split = PartitionSpec(self.mesh.axis_names[0])
        sharded = jax.shard_map(
            objectives,
            mesh=self.mesh,
            in_specs=(split, PartitionSpec()),
            out_specs=split,
            check_vma=False,
        )  # unvarying scan inits
        # the [B, M] result replicated, like the rest of the search's state (a scan over
        # generations, the runner's chunk, carries one sharding through)
        return jax.lax.with_sharding_constraint(
            sharded(padded, hyper)[:size], NamedSharding(self.mesh, PartitionSpec())
        )

    def report_metrics(self, genomes: np.ndarray, hyper: ProblemHyper, batch: int = 64) -> dict:
        """Host helper: validation *and* test metrics of ``genomes [K, L]`` trained with
        ``hyper`` (numpy dict with ``val_`` / ``test_`` prefixed keys; heads trained once, in
        batches of ``batch``)."""
        genome_array = jnp.asarray(genomes, bool)

        @jax.jit
        def both(chunk):
            params, epochs_run = self.train_heads(chunk, hyper)
            out = {"val_epochs_run": epochs_run, "test_epochs_run": epochs_run}
            for split in ("val", "test"):
                measured = jax.vmap(
                    lambda p, g, split=split: self._head_metrics(p, g, split, hyper.temperature)
                )(params, chunk)
                out.update({f"{split}_{name}": value for name, value in measured.items()})
            return out

        parts: dict = {}
        for start in range(0, genome_array.shape[0], batch):
            for name, value in both(genome_array[start : start + batch]).items():
                parts.setdefault(name, []).append(np.asarray(value))
        return {name: np.concatenate(chunks, axis=0) for name, chunks in parts.items()}
