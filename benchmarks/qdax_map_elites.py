"""MAP-Elites on Brax: synprune_jax vs QDax, same task and settings, interleaved chunk by chunk.

Setting (both sides): Brax ``hopper`` on the ``spring`` backend, a tanh MLP policy (tanh output)
of the same hidden widths, fixed episodes of ``episode_length`` steps that stop counting reward at
termination (the terminating step counts), one initial state shared by the whole batch, the
same batch size and number of generations, a 1-D grid of ``cells`` cells over the fraction of
steps the foot touches the ground in [0, 1], and QD-score = sum over filled cells of
``fitness - 0`` computed the same way from both archives.

* ours: :class:`synprune_jax.algorithms.map_elites.MapElites` with
  :class:`synprune_jax.tasks.BraxTask` (``descriptors=("feet_contact",)``) and the default
  pruning mutation (prune/reconnect flips, forward pruning, Gaussian sigma 0.05); the random
  initial networks have Beta-distributed densities, as in a real run.
* QDax 0.5: ``MAPElites`` with ``MixingEmitter`` + ``isoline_variation`` (iso 0.005, line 0.05,
  QDax's example settings), its ``hopper_uni`` environment (feet contact from the contact data)
  and ``create_brax_scoring_fn`` (deterministic initial state, computed once with a jitted reset).

The feet-contact descriptor has the same definition on both sides but each library computes it
its own way, so QD-scores are comparable in scale, not bit for bit. Both sides are compiled
ahead of time (compile time reported separately), then chunks of ``chunk`` generations
(``lax.scan``) alternate ours / QDax; evaluations per second are medians over chunks, in wall
time (``evals_per_s``) and in process CPU time (``evals_per_cpu_s``, all threads: steadier on a
loaded machine, since waiting for a core does not count).
Time to a QD-score: the steady-state seconds each side needs to reach ``target_fraction`` of the
lowest final QD-score of the sides (linear interpolation between chunks).

A third side, ``ours_sharded`` (``devices`` in the setting, 2 in ``quick`` / ``full``), is the
same MAP-Elites with the population's evaluation split over ``devices`` CPU devices
(:class:`synprune_jax.sharding.ShardedTask`; ``task.devices`` in a config). It runs in its own
process, created with ``jax_num_cpu_devices = devices``, because that setting changes every
program of a process (with two CPU devices, a one-device program gets one core's worth of
threads): ours and QDax keep the usual one-device process. The parent drives the worker over a
pipe, so all sides still alternate chunk by chunk and the idle ones wait on a read.
Its results equal ``ours`` up to the last bits (per-device batch sizes pick other CPU kernels).

A fourth side, ``qdax_distributed``, is QDax's own multi-device MAP-Elites
(``qdax.core.distributed_map_elites.DistributedMAPElites``) on the same ``devices`` CPU devices,
in a worker process of its own like ``ours_sharded``: each device emits and scores
``batch / devices`` offspring (the same total batch per generation), the batches are
all-gathered and every device adds all of them to its own copy of the repertoire (replicated:
the insertion is done once per device, and the state holds ``devices`` repertoires). Its
programs are ``jax.pmap`` of the same per-device init and chunk as the ``qdax`` side (what
QDax's ``get_distributed_init_fn`` / ``get_distributed_update_fn`` pmap, with the initial networks
built inside the pmapped init and each device's key kept in the carry); its QD-score is read from
device 0's repertoire. ``ours_sharded`` / ``qdax_distributed`` is the equal-devices ratio.
It starts from the ``qdax`` side's initial networks; their fitnesses are computed by batches
of ``batch / devices`` with other CPU kernels, and 100 steps of physics amplify those last-bit
differences (``init_qd_score`` 7,007 vs 6,904 in the quick suite, coverage equal); later
generations draw other offspring.

Memory: XLA's own accounting of the compiled chunk (``xla_temp_mb``: scratch memory, a
device-memory proxy), the state size, and with ``--suite full`` (or ``memory_probe=True``) the
peak resident memory of a fresh process that runs only one side.

    python -m benchmarks.qdax_map_elites --suite quick
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import (
    check_suite,
    compile_map_elites,
    compile_timed,
    fresh_compilation_cache,
    peak_rss_mb,
    peer_records,
    standalone_main,
    tree_megabytes,
)

NAME = "qdax_map_elites"
ROOT = str(Path(__file__).resolve().parents[1])  # the repository root


def _cpu_devices_env() -> dict:
    """Environment of a child process that creates its own CPU devices (``jax_num_cpu_devices``)
    even on a GPU host: no inherited ``XLA_FLAGS`` device count, ``JAX_PLATFORMS=cpu``."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    return env


SIZES = {
    "toy": {
        "env": "hopper",
        "episode_length": 5,
        "batches": (4,),
        "hidden": (4,),
        "cells": 8,
        "chunk": 1,
        "chunks": 2,
        "memory_probe": False,
        "devices": 1,
    },
    "quick": {
        "env": "hopper",
        "episode_length": 100,
        "batches": (256,),
        "hidden": (16, 16),
        "cells": 128,
        "chunk": 5,
        "chunks": 8,
        "memory_probe": True,
        "devices": 2,
    },
    "full": {
        "env": "hopper",
        "episode_length": 100,
        "batches": (256, 1024),
        "hidden": (16, 16),
        "cells": 128,
        "chunk": 10,
        "chunks": 10,
        "memory_probe": True,
        "devices": 2,
    },
}

# side -> (builder name, whether it runs on the setting's ``devices`` CPU devices)
SIDES = {
    "ours": ("build_ours", False),
    "qdax": ("build_qdax", False),
    "ours_sharded": ("build_ours", True),
    "qdax_distributed": ("build_qdax", True),
}


def _setting(suite: str | dict) -> dict:
    """A suite's setting (a copy), or ``suite`` itself when it already is a setting (a dict, e.g.
    decoded from JSON in a worker: lists become the tuples the builders expect)."""
    setting = dict(SIZES[check_suite(suite)] if isinstance(suite, str) else suite)
    setting["hidden"], setting["batches"] = tuple(setting["hidden"]), tuple(setting["batches"])
    return setting


TARGET_FRACTION = 0.9
QD_OFFSET = 0.0


def qd_score(fitness: np.ndarray, offset: float = QD_OFFSET) -> tuple[float, float, float]:
    """``(qd_score, coverage, max_fitness)`` of a flat cell-fitness array (``-inf`` = empty)."""
    fitness = np.asarray(fitness, np.float64).reshape(-1)
    filled = np.isfinite(fitness)
    if not filled.any():
        return 0.0, 0.0, float("-inf")
    return (
        float(np.sum(fitness[filled] - offset)),
        float(filled.mean()),
        float(fitness[filled].max()),
    )


class _Side:
    """A compiled MAP-Elites: ``state``, ``chunk(state) -> state``, ``fitness(state)``."""

    def __init__(self, name, state, chunk, fitness, init_compile_s, chunk_compile_s, memory):
        self.name, self.state, self.chunk, self.fitness = name, state, chunk, fitness
        self.init_compile_s, self.chunk_compile_s, self.memory = (
            init_compile_s,
            chunk_compile_s,
            memory,
        )
        self.initial = qd_score(fitness(state))  # after the init, before the first chunk
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.scores: list[float] = []

    def advance(self) -> None:
        start, start_cpu = time.perf_counter(), time.process_time()
        self.state = self.chunk(self.state)
        jax.block_until_ready(self.state)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - start_cpu)
        self.scores.append(qd_score(self.fitness(self.state))[0])

    def final(self) -> tuple[float, float, float]:
        return qd_score(self.fitness(self.state))

    def close(self) -> None:
        pass


class _RemoteSide:
    """A side built and advanced in a worker process with ``devices`` CPU devices (see module
    docstring); same interface as :class:`_Side`, timings measured inside the worker."""

    def __init__(
        self, name: str, suite: str | dict, batch: int, devices: int, cache_dir: str | None = None
    ):
        """``name``: a side of :data:`SIDES` (``ours_sharded`` or ``qdax_distributed``);
        ``suite``: a suite name or a setting dict (sent to the worker as JSON)."""
        if name not in SIDES:
            raise ValueError(f"unknown side {name!r}; valid: {sorted(SIDES)}")
        self.name = name
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.qdax_map_elites",
                "--worker",
                name,
                json.dumps(_setting(suite)),
                str(batch),
                str(devices),
                cache_dir or "",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_cpu_devices_env(),
            cwd=ROOT,
        )
        ready = self._read()
        self.init_compile_s, self.chunk_compile_s = (
            ready["init_compile_s"],
            ready["chunk_compile_s"],
        )
        self.memory = ready["memory"]
        self.initial = tuple(ready["initial"])
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.scores: list[float] = []

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("WORKER "):
                return json.loads(line[len("WORKER ") :])
        raise RuntimeError(f"the {self.name} worker exited (status {self.process.wait()})")

    def _ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def advance(self) -> None:
        reply = self._ask("advance")
        self.times.append(reply["seconds"])
        self.cpu_times.append(reply["cpu_seconds"])
        self.scores.append(reply["qd_score"])

    def final(self) -> tuple[float, float, float]:
        return tuple(self._ask("final")["final"])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def worker(name: str, suite: str | dict, batch: int, devices: int, cache_dir: str = "") -> None:
    """The worker of :class:`_RemoteSide`: ``devices`` CPU devices, side ``name`` (``ours``
    sharded over them, or QDax's ``DistributedMAPElites``) built by its builder in :data:`SIDES`.

    ``cache_dir``: the parent's (fresh) persistent compilation cache, so that the memory probe
    of this side loads its programs as the probes of the other sides do.
    """
    jax.config.update("jax_num_cpu_devices", devices)  # before anything runs on a device
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    side = globals()[SIDES[name][0]](_setting(suite), batch, devices=devices)

    def say(record: dict) -> None:
        print("WORKER " + json.dumps(record), flush=True)

    say(
        {
            "init_compile_s": side.init_compile_s,
            "chunk_compile_s": side.chunk_compile_s,
            "memory": side.memory,
            "initial": list(side.initial),
        }
    )
    for command in sys.stdin:
        command = command.strip()
        if command == "advance":
            side.advance()
            say(
                {
                    "seconds": side.times[-1],
                    "cpu_seconds": side.cpu_times[-1],
                    "qd_score": side.scores[-1],
                }
            )
        elif command == "final":
            say({"final": list(side.final())})


def build_ours(setting: dict, batch: int, devices: int = 1) -> _Side:
    from synprune_jax.algorithms.map_elites import MapElites, MapElitesConfig
    from synprune_jax.archives import GridSpec
    from synprune_jax.sharding import ShardedTask, make_mesh
    from synprune_jax.tasks import BraxTask

    task = BraxTask(
        env_name=setting["env"],
        backend="spring",
        episode_length=setting["episode_length"],
        hidden_sizes=setting["hidden"],
        descriptors=("feet_contact",),
    )
    if devices > 1:
        task = ShardedTask(task, make_mesh(devices))
    config = MapElitesConfig(
        archive=GridSpec((0.0,), (1.0,), (setting["cells"],)), batch_size=batch, qd_offset=QD_OFFSET
    )
    algorithm = MapElites(config, task)
    state, chunk, init_s, chunk_s, memory = compile_map_elites(algorithm, setting["chunk"])
    memory["state_mb"] = tree_megabytes(state)
    return _Side(
        "ours" if devices == 1 else "ours_sharded",
        state,
        chunk,
        lambda s: s.archive.fitness,
        init_s,
        chunk_s,
        memory,
    )


def build_qdax(setting: dict, batch: int, devices: int = 1) -> _Side:
    """QDax 0.5's MAP-Elites: ``MAPElites`` jitted on one device (side ``qdax``) or, with
    ``devices > 1``, ``DistributedMAPElites`` pmapped over ``devices`` devices (side
    ``qdax_distributed``; each device emits and scores ``batch / devices``). Both use the same
    environment, policy, scoring, variation, centroids and per-device init / chunk functions.
    """
    from qdax.core.containers.mapelites_repertoire import compute_euclidean_centroids
    from qdax.core.distributed_map_elites import DistributedMAPElites
    from qdax.core.emitters.mutation_operators import isoline_variation
    from qdax.core.emitters.standard_emitters import MixingEmitter
    from qdax.core.map_elites import MAPElites
    from qdax.core.neuroevolution.networks.networks import MLP
    from qdax.tasks.brax import v2 as environments
    from qdax.tasks.brax.descriptor_extractors import get_feet_contact_proportion
    from qdax.tasks.brax.v2.env_creators import create_brax_scoring_fn
    from qdax.utils.metrics import default_qd_metrics

    from benchmarks import xla_memory

    if batch % devices:
        raise ValueError(f"batch {batch} does not split over {devices} devices")
    per_device = batch // devices
    episode_length = setting["episode_length"]
    env = environments.create(
        f"{setting['env']}_uni", episode_length=episode_length, backend="spring"
    )
    with jax.numpy_rank_promotion("allow"):
        init_env_state = jax.jit(env.reset)(jax.random.key(2))
    observation_size = int(init_env_state.obs.shape[-1])
    network = MLP(
        layer_sizes=(*setting["hidden"], env.action_size),
        kernel_init=jax.nn.initializers.lecun_normal(),
        activation=jnp.tanh,
        final_activation=jnp.tanh,
    )
    scoring = create_brax_scoring_fn(
        env,
        network,
        get_feet_contact_proportion,
        jax.random.key(3),
        episode_length=episode_length,
        deterministic=False,
        play_reset_fn=lambda _: init_env_state,
    )
    emitter = MixingEmitter(
        mutation_fn=None,
        variation_fn=functools.partial(isoline_variation, iso_sigma=0.005, line_sigma=0.05),
        variation_percentage=1.0,
        batch_size=per_device,
    )
    algorithm = (MAPElites if devices == 1 else DistributedMAPElites)(
        scoring_function=scoring,
        emitter=emitter,
        metrics_function=functools.partial(default_qd_metrics, qd_offset=QD_OFFSET),
    )
    if "cvt_cells" in setting:  # a CVT over the env's descriptors (engine_overhead's setting)
        from qdax.core.containers.mapelites_repertoire import compute_cvt_centroids

        centroids = compute_cvt_centroids(
            env.descriptor_length, 50_000, setting["cvt_cells"], 0.0, 1.0, jax.random.key(4)
        )
    else:
        centroids = compute_euclidean_centroids((setting["cells"],), minval=0.0, maxval=1.0)

    def init(key):
        # The random initial networks are part of QDax's init, as they are of ours: creating them
        # is compiled and timed on both sides. The batch's networks are the same on every side:
        # device d of ``qdax_distributed`` creates slice d of the one-device side's batch, and
        # the all-gather puts the slices back in order (device 0 first).
        keys = jax.random.split(jax.random.key(0), batch)
        if devices > 1:
            keys = keys.reshape(devices, per_device)[jax.lax.axis_index("p")]
        genotypes = jax.vmap(network.init, in_axes=(0, None))(keys, jnp.zeros(observation_size))
        # MAPElites.init scores with split(key)[1]; DistributedMAPElites.init scores with the key
        # itself. The scoring ignores its key here (one fixed initial state, deterministic
        # policies), so the initial repertoires differ only through fitnesses that a batch of
        # ``per_device`` evaluates with other CPU kernels than a batch of ``batch`` (last bits,
        # amplified by the physics over a long episode).
        repertoire, emitter_state, _ = algorithm.init(genotypes, centroids, key)
        return repertoire, emitter_state, key

    def run_chunk(carry):
        # scan_update calls ``algorithm.update``: with DistributedMAPElites, each device emits
        # ``per_device`` offspring from its own key, and all devices add the all-gathered batch.
        carry, _ = jax.lax.scan(algorithm.scan_update, carry, None, length=setting["chunk"])
        return carry

    with jax.numpy_rank_promotion("allow"):  # Brax broadcasts implicitly
        if devices == 1:
            compiled_init, init_s, _ = compile_timed(init, jax.random.key(1))
            state = compiled_init(jax.random.key(1))
            chunk, chunk_s, memory = compile_timed(run_chunk, state, donate_argnums=0)
        else:
            # As QDax's get_distributed_init_fn / get_distributed_update_fn: pmap over the
            # devices with axis "p" and a leading device axis of keys, one key per device split
            # from one key (as in QDax's distributed example). Unlike QDax's update_fn, which
            # returns no key (its example passes the same keys to every call), the chunk keeps
            # each device's key in its carry, so that successive chunks draw new offspring.
            local = jax.local_devices()[:devices]
            if len(local) < devices:
                raise RuntimeError(
                    f"{devices} devices wanted, {len(local)} present: set "
                    "jax_num_cpu_devices before JAX starts (see worker)"
                )
            keys = jax.random.split(jax.random.key(1), devices)
            start = time.perf_counter()
            compiled_init = jax.pmap(init, axis_name="p", devices=local).lower(keys).compile()
            init_s = time.perf_counter() - start
            state = compiled_init(keys)
            start = time.perf_counter()
            chunk = (
                jax.pmap(run_chunk, axis_name="p", devices=local, donate_argnums=0)
                .lower(state)
                .compile()
            )
            chunk_s = time.perf_counter() - start
            memory = xla_memory(chunk)  # one device's program
    memory["state_mb"] = tree_megabytes(state)  # all devices' copies of the repertoire
    return _Side(
        "qdax" if devices == 1 else "qdax_distributed",
        state,
        chunk,
        lambda s: s[0].fitnesses if devices == 1 else s[0].fitnesses[0],
        init_s,
        chunk_s,
        memory,
    )


def time_to_score(times: list[float], scores: list[float], target: float) -> float | None:
    """Steady-state seconds until ``scores`` first reaches ``target`` (interpolated)."""
    elapsed, previous_score = 0.0, None
    for seconds, score in zip(times, scores, strict=True):
        start = elapsed
        elapsed += seconds
        if score >= target:
            if previous_score is None or score == previous_score:
                return elapsed
            fraction = (target - previous_score) / (score - previous_score)
            return start + max(0.0, min(1.0, fraction)) * seconds
        previous_score = score
    return None


def memory_probe(side: str, suite: str | dict, batch: int, cache_dir: str | None = None) -> dict:
    """Runs ONE side in a fresh process; returns its peak RSS after imports and after 2 chunks.

    ``suite``: a suite name or a setting dict. The sides on several devices (``ours_sharded``,
    ``qdax_distributed``) get a process with the setting's ``devices`` CPU devices, as their
    worker has. With ``cache_dir`` (the persistent compilation cache the main run wrote) the
    probe loads its programs instead of compiling them again; resident memory is what is
    measured, not time.
    """
    setting = _setting(suite)
    builder, on_devices = SIDES[side]
    devices = setting.get("devices", 1) if on_devices else 1
    cache = (
        ""
        if cache_dir is None
        else f"jax.config.update('jax_compilation_cache_dir', {cache_dir!r}); "
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0); "
    )
    code = (
        "import json, jax; from benchmarks import peak_rss_mb; "
        + cache
        + (f"jax.config.update('jax_num_cpu_devices', {devices}); " if devices > 1 else "")
        + f"from benchmarks.qdax_map_elites import _setting, {builder} as builder; "
        f"setting = _setting(json.loads({json.dumps(setting)!r})); "
        "import synprune_jax.tasks; "
        + ("import qdax.core.map_elites; " if builder == "build_qdax" else "")
        + "base = peak_rss_mb(); "
        + f"s = builder(setting, {batch}, devices={devices}); "
        "s.advance(); s.advance(); "
        "print('PROBE ' + json.dumps({'rss_after_imports_mb': base, "
        "'peak_rss_mb': peak_rss_mb()}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
        env=_cpu_devices_env() if devices > 1 else None,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE ") :])
    return {"probe_error": (completed.stderr or completed.stdout)[-300:]}


def run(suite: str) -> list[dict]:
    """One record per (batch, side), a ``ratio`` record per batch, and QD-score traces."""
    setting = SIZES[check_suite(suite)]
    qdax_ok, records = peer_records("qdax")
    cache_dir = fresh_compilation_cache() if setting["memory_probe"] else None
    for batch in setting["batches"]:
        common = {
            "env": setting["env"],
            "backend": "spring",
            "episode_length": setting["episode_length"],
            "batch": batch,
            "hidden": list(setting["hidden"]),
            "cells": setting["cells"],
            "generations": setting["chunk"] * setting["chunks"],
            "compilation_cache": "cold"
            if cache_dir or not jax.config.jax_compilation_cache_dir
            else "configured",
        }
        sides = [build_ours(setting, batch)]
        if qdax_ok:
            sides.append(build_qdax(setting, batch))
        if setting.get("devices", 1) > 1:
            sides.append(_RemoteSide("ours_sharded", setting, batch, setting["devices"], cache_dir))
            if qdax_ok:
                sides.append(
                    _RemoteSide("qdax_distributed", setting, batch, setting["devices"], cache_dir)
                )
        # interleaved: ours, QDax, ours sharded, QDax distributed, ours, ...
        for _ in range(setting["chunks"]):
            for side in sides:
                side.advance()
        finals = {side.name: side.scores[-1] for side in sides}
        target = TARGET_FRACTION * min(finals.values())
        results = {}
        for side in sides:
            per_chunk = np.asarray(side.times)
            evals_per_s = batch * setting["chunk"] / float(np.median(per_chunk))
            score, coverage, max_fitness = side.final()
            reach = time_to_score(side.times, side.scores, target)
            record = {
                **common,
                "case": "map_elites",
                "side": side.name,
                "evals_per_s": evals_per_s,
                "env_steps_per_s": evals_per_s * setting["episode_length"],
                "seconds_per_generation": float(np.median(per_chunk)) / setting["chunk"],
                "evals_per_cpu_s": batch * setting["chunk"] / float(np.median(side.cpu_times)),
                "init_compile_s": side.init_compile_s,
                "chunk_compile_s": side.chunk_compile_s,
                "init_qd_score": side.initial[0],
                "init_coverage": side.initial[1],
                "qd_score": score,
                "coverage": coverage,
                "max_fitness": max_fitness,
                "target_qd_score": target,
                "seconds_to_target": reach,
                **side.memory,
            }
            if SIDES[side.name][1]:  # ours_sharded, qdax_distributed: close the worker
                record["devices"] = setting["devices"]
                side.close()
            if setting["memory_probe"]:
                record.update(memory_probe(side.name, setting, batch, cache_dir))
            results[side.name] = record
            records.append(record)
            for index, (seconds, score_value) in enumerate(
                zip(side.times, side.scores, strict=True)
            ):
                records.append(
                    {
                        **common,
                        "case": "trace",
                        "side": side.name,
                        "generation": (index + 1) * setting["chunk"],
                        "chunk_s": seconds,
                        "qd_score": score_value,
                    }
                )
        # ours / QDax on one device, ours on N devices / QDax on one, and on equal devices
        for name, peer in (
            ("ours", "qdax"),
            ("ours_sharded", "qdax"),
            ("ours_sharded", "qdax_distributed"),
        ):
            if peer not in results or name not in results:
                continue
            ours, qdax = results[name], results[peer]
            ratio = {
                **common,
                "case": "ratio",
                "side": f"{name}/{peer}",
                "evals_per_s_ratio": ours["evals_per_s"] / qdax["evals_per_s"],
                "evals_per_cpu_s_ratio": ours["evals_per_cpu_s"] / qdax["evals_per_cpu_s"],
                "compile_ratio": (ours["init_compile_s"] + ours["chunk_compile_s"])
                / (qdax["init_compile_s"] + qdax["chunk_compile_s"]),
                "xla_temp_ratio": ours.get("xla_temp_mb", np.nan)
                / max(qdax.get("xla_temp_mb", np.nan), 1e-9),
            }
            if "peak_rss_mb" in ours and "peak_rss_mb" in qdax:
                ratio["peak_rss_ratio"] = ours["peak_rss_mb"] / qdax["peak_rss_mb"]
            if ours["seconds_to_target"] and qdax["seconds_to_target"]:
                ratio["time_to_target_ratio"] = (
                    ours["seconds_to_target"] / qdax["seconds_to_target"]
                )
            records.append(ratio)
        records.append(
            {
                **common,
                "case": "process",
                "side": "parent (ours, qdax)",
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    return records


def main() -> None:
    standalone_main(NAME, run, __doc__.split("\n")[0])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:  # a multi-device side's process (see _RemoteSide)
        # argv: --worker SIDE SETTING_JSON BATCH DEVICES [CACHE_DIR]
        worker(
            sys.argv[2],
            json.loads(sys.argv[3]),
            int(sys.argv[4]),
            int(sys.argv[5]),
            sys.argv[6] if len(sys.argv) > 6 else "",
        )
    else:
        main()
