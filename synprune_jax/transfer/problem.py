"""The evolutionary problem: genome ``[L]`` -> trained sparse head -> objectives ``[M]``.

:class:`TransferProblem` closes over the cached features (as device arrays) and static configs.
Its :meth:`~TransferProblem.evaluate` trains the whole batch of heads at once (one ``vmap``) and
measures the chosen objectives on the **validation** split; :meth:`~TransferProblem.report_metrics`
retrains given genomes (same per-genome keys, so the same heads) and measures the **test** split,
for the final report only.

Example (a few seconds on CPU):
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from synprune_jax.transfer.data import TransferData
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 2, 40)
    >>> data = TransferData(x, y, x, y, x, y, x[:5] + 5, x[5:10] + 5, (6,), (0, 1))
    >>> problem = TransferProblem(data, HeadConfig(6, 4, 2), TrainConfig(epochs=2))
    >>> problem.evaluate(jax.random.key(0), jnp.ones((3, 6), bool)).shape
    (3, 3)
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from synprune_jax.config import ConfigError
from synprune_jax.transfer.data import TransferData
from synprune_jax.transfer.head import HeadConfig, TrainConfig, head_logits, train_population
from synprune_jax.transfer.objectives import (OBJECTIVES, auroc, classification_metrics,
                                              max_softmax_score, objective_vector)


@struct.dataclass
class ProblemHyper:
    """Traced knobs of :class:`TransferProblem` (a sweep stacks them on a run axis).

    Attributes:
        learning_rate: head optimizer step size. momentum: Nesterov momentum (SGD only).
        temperature: ``T`` of the max-softmax OOD score.
        seed: base of the per-genome training keys (uint32; the run seed in the experiments).
    """

    learning_rate: float
    momentum: float
    temperature: float
    seed: object


class _BoundProblem:
    """A :class:`TransferProblem` evaluating with given (possibly traced) hyper-parameters."""

    def __init__(self, problem: "TransferProblem", hyper: ProblemHyper):
        self.problem = problem
        self.hyper = hyper
        self.genome_length = problem.genome_length
        self.num_objectives = problem.num_objectives
        self.objective_names = problem.objective_names

    def evaluate(self, key: jax.Array, genomes: jax.Array) -> jax.Array:
        return self.problem.evaluate(key, genomes, self.hyper)


class TransferProblem:
    """Multi-objective evaluation of head genomes on transfer data.

    Args:
        data: :class:`~synprune_jax.transfer.data.TransferData` (host numpy).
        head: :class:`HeadConfig`; ``num_features`` / ``num_classes`` must match ``data``.
        train: :class:`TrainConfig`.
        objectives: names from :data:`~synprune_jax.transfer.objectives.OBJECTIVES`.
        temperature: ``T`` of the max-softmax OOD score.
        devices: local devices :meth:`evaluate` splits the batch of genomes over (default 1).
            With ``N > 1`` each device trains and measures ``B / N`` heads (``jax.shard_map``;
            a batch that is not a multiple of ``N`` is padded with copies of its first genome,
            results dropped). On a CPU create the devices first
            (``jax.config.update('jax_num_cpu_devices', N)`` before anything runs; ``synprune
            run`` does it for ``train.devices``): each device runs its heads on its own thread,
            which keeps both cores busy through the small elementwise and batched operations
            between the large products (``benchmarks/transfer_heads.py --devices 2``). Each
            head's result does not depend on the rest of the batch, but the smaller per-device
            batch can pick other CPU kernels: the trained heads equal a 1-device evaluation up
            to float rounding, which can flip a near-tie and so move an accuracy or AUROC by one
            step (runs reproduce exactly for a fixed ``devices``).
    """

    def __init__(self, data: TransferData, head: HeadConfig, train: TrainConfig,
                 objectives: tuple[str, ...] = ("accuracy", "sparsity", "auroc"),
                 temperature: float = 1000.0, devices: int = 1):
        objectives = tuple(objectives)
        unknown = [name for name in objectives if name not in OBJECTIVES]
        if unknown or not objectives or len(set(objectives)) != len(objectives):
            raise ConfigError(f"objectives must be distinct names from {list(OBJECTIVES)}, "
                              f"got {list(objectives)}")
        if head.num_features != data.num_features or head.num_classes != data.num_classes:
            raise ConfigError(f"head expects {head.num_features} features / {head.num_classes} "
                              f"classes, data have {data.num_features} / {data.num_classes}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        from synprune_jax.sharding import devices_mesh

        self.mesh = devices_mesh(devices, "devices")
        self.devices = devices
        self.data = data
        self.head = head
        self.train_config = train
        self.objective_names = objectives
        self.temperature = float(temperature)
        as_x = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        as_y = lambda a: jnp.asarray(a, jnp.int32)  # noqa: E731
        self.arrays = {
            "train_x": as_x(data.train_features), "train_y": as_y(data.train_labels),
            "val_x": as_x(data.val_features), "val_y": as_y(data.val_labels),
            "test_x": as_x(data.test_features), "test_y": as_y(data.test_labels),
            "ood_val_x": as_x(data.ood_val_features), "ood_test_x": as_x(data.ood_test_features),
        }

    @property
    def genome_length(self) -> int:
        return self.head.genome_length

    # ----- sweeps ------------------------------------------------------------------------------
    @property
    def sweep_hyper(self) -> ProblemHyper:
        """The problem's own traced hyper-parameters (configured values, training seed)."""
        return ProblemHyper(learning_rate=self.train_config.learning_rate,
                            momentum=self.train_config.momentum, temperature=self.temperature,
                            seed=np.uint32(self.train_config.seed))

    def bind(self, hyper: ProblemHyper) -> _BoundProblem:
        """This problem evaluating with ``hyper`` (``evaluate(key, genomes)`` only)."""
        return _BoundProblem(self, hyper)

    def sweep_static(self):
        """Hashable key of what fixes the compiled program: the data (content digest), the head,
        the static training settings and the objectives."""
        if getattr(self, "_data_digest", None) is None:
            digest = hashlib.sha1()
            for name in sorted(self.arrays):
                array = np.ascontiguousarray(np.asarray(self.arrays[name]))
                digest.update(f"{name}{array.shape}{array.dtype}".encode())
                digest.update(array.tobytes())
            self._data_digest = digest.hexdigest()
        train = self.train_config
        return ("transfer_problem", self._data_digest, self.head,
                (train.optimizer, train.epochs, train.batch_size, train.patience),
                self.objective_names, self.devices)

    @property
    def num_objectives(self) -> int:
        return len(self.objective_names)

    def train_heads(self, genomes: jax.Array, hyper: ProblemHyper | None = None):
        """``genomes [P, L]`` -> ``(params with leading [P], epochs_run [P])``; ``hyper``
        replaces the configured learning rate, momentum and seed."""
        a = self.arrays
        if hyper is None:
            seed, optimizer = self.train_config.seed, None
        else:
            seed = hyper.seed
            optimizer = self.train_config.make_optimizer(hyper.learning_rate, hyper.momentum)
        return train_population(seed, genomes, a["train_x"], a["train_y"],
                                a["val_x"], a["val_y"], self.head, self.train_config, optimizer)

    def _head_metrics(self, params: dict, genome: jax.Array, split: str,
                      temperature=None) -> dict:
        a = self.arrays
        input_mask, hidden_mask = self.head.split(genome)
        x, y = a[f"{split}_x"], a[f"{split}_y"]
        logits = head_logits(params, input_mask, hidden_mask, x)
        ood_logits = head_logits(params, input_mask, hidden_mask, a[f"ood_{split}_x"])
        accuracy, loss = classification_metrics(logits, y)
        active = jnp.sum(genome.astype(jnp.int32))
        temperature = self.temperature if temperature is None else temperature
        in_score = max_softmax_score(logits, temperature)
        out_score = max_softmax_score(ood_logits, temperature)
        return {"accuracy": accuracy, "loss": loss, "auroc": auroc(in_score, out_score),
                "active_fraction": active.astype(jnp.float32) / genome.shape[0],
                "sparsity": (genome.shape[0] - active).astype(jnp.float32) / genome.shape[0],
                "predictions": jnp.argmax(logits, axis=-1),
                "probabilities": jax.nn.softmax(logits, axis=-1),
                "in_score": in_score, "out_score": out_score}

    def metrics(self, genomes: jax.Array, split: str = "val",
                hyper: ProblemHyper | None = None) -> dict:
        """Trains ``genomes [P, L]`` and measures ``split`` (``"val"`` or ``"test"``), with the
        configured hyper-parameters or ``hyper``.

        Returns:
            dict of ``[P]`` arrays (``accuracy``, ``loss``, ``auroc``, ``active_fraction``,
            ``sparsity`` (exactly ``(L - active) / L``), ``epochs_run``) and ``[P, N]`` /
            ``[P, N, C]`` ones (``predictions``, ``probabilities``, ``in_score``;
            ``out_score`` is ``[P, N_ood]``).
        """
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        params, epochs_run = self.train_heads(genomes, hyper)
        temperature = None if hyper is None else hyper.temperature
        result = jax.vmap(lambda p, g: self._head_metrics(p, g, split, temperature))(params,
                                                                                   genomes)
        result["epochs_run"] = epochs_run
        return result

    def evaluate(self, key: jax.Array, genomes: jax.Array,
                 hyper: ProblemHyper | None = None) -> jax.Array:
        """Validation objectives of ``genomes [P, L]`` -> ``[P, M]`` float32 (maximised).

        ``key`` is unused: training keys derive from each genome (see
        :mod:`synprune_jax.transfer.head`), so a genome's objectives do not depend on when it
        is evaluated. ``hyper`` replaces the configured learning rate, momentum, temperature
        and training seed (see :meth:`bind`). With ``devices > 1`` the batch is split over the
        devices (see the class).
        """
        del key

        def objectives(genomes, *hyper):
            metrics = self.metrics(genomes, "val", *hyper)
            return objective_vector(metrics, self.objective_names)

        extra = () if hyper is None else (hyper,)
        if self.mesh is None:
            return objectives(genomes, *extra)
        from jax.sharding import NamedSharding, PartitionSpec

        from synprune_jax.sharding import pad_rows

        padded, size = pad_rows(genomes, self.devices)
        split = PartitionSpec(self.mesh.axis_names[0])
        sharded = jax.shard_map(objectives, mesh=self.mesh,
                                in_specs=(split, *[PartitionSpec()] * len(extra)),
                                out_specs=split, check_vma=False)  # unvarying scan inits
        # the [B, M] result replicated, like the rest of the search's state (a scan over
        # generations, the runner's chunk, carries one sharding through)
        return jax.lax.with_sharding_constraint(
            sharded(padded, *extra)[:size], NamedSharding(self.mesh, PartitionSpec()))

    def report_metrics(self, genomes: np.ndarray, batch: int = 64) -> dict:
        """Host helper: validation *and* test metrics of ``genomes [K, L]`` (numpy dict with
        ``val_`` / ``test_`` prefixed keys; heads trained once, in batches of ``batch``)."""
        genomes = jnp.asarray(genomes, bool)

        @jax.jit
        def both(chunk):
            params, epochs_run = self.train_heads(chunk)
            out = {"val_epochs_run": epochs_run, "test_epochs_run": epochs_run}
            for split in ("val", "test"):
                measured = jax.vmap(lambda p, g: self._head_metrics(p, g, split))(params, chunk)
                out.update({f"{split}_{name}": value for name, value in measured.items()})
            return out

        parts: dict = {}
        for start in range(0, genomes.shape[0], batch):
            for name, value in both(genomes[start:start + batch]).items():
                parts.setdefault(name, []).append(np.asarray(value))
        return {name: np.concatenate(chunks, axis=0) for name, chunks in parts.items()}
