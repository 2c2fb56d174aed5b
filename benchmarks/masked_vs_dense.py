"""Cost of masks in the forward pass, as population and width grow (plain JAX, no peer).

A population of ``P`` tanh MLPs (hopper's shape: 11 inputs, two hidden layers of width ``W``,
3 tanh outputs) runs ``steps`` forward passes in a ``lax.scan``, one observation per individual
per step, the next observation depending on the last output (so nothing can be hoisted out of
the loop). This is the policy half of a Brax rollout. Variants, same params and masks:

* ``dense``: unmasked params, no masks at all (the speed limit);
* ``masked_once``: ``apply_masks`` once per evaluation, then dense passes (what
  :class:`synprune_jax.tasks.BraxTask` does);
* ``masked_every_step``: masks applied inside every forward pass (the naive way);
* ``packed_bits``: masks stored bit-packed (``uint8``, 8x smaller), unpacked and applied once
  per evaluation;
* ``compacted``: dead hidden units (no live input or no live output path) removed; every
  individual is gathered to the population's largest live width ``K <= W`` (fixed shapes), then
  dense passes. The compaction itself (``compact_s``) is timed apart: it is done once per
  evaluation, or once per elite.

Masks have density ``density`` (exact count per layer, uniformly placed), then forward pruning
(as the engine's mutation does), so dropping dead units is exact: ``max_abs_diff_vs_masked``
checks every variant against ``masked_once`` (``dense`` differs on purpose: it has no masks).
Repetitions of the variants alternate; medians are reported, ``ratio_to_dense`` = variant time /
dense time (``cpu_ratio_to_dense``: the same in process CPU time).

    python -m benchmarks.masked_vs_dense --suite quick
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import check_suite, compile_timed, interleaved_medians, standalone_main, timed
from synprune_jax.masks import apply_masks

NAME = "masked_vs_dense"

INPUT_SIZE, OUTPUT_SIZE = 11, 3

SIZES = {
    "toy": {"populations": (8,), "widths": (4,), "densities": (0.5,), "steps": 3, "repeats": 2},
    "quick": {
        "populations": (64, 1024, 4096),
        "widths": (16, 128),
        "densities": (0.1,),
        "steps": 100,
        "repeats": 5,
    },
    "full": {
        "populations": (64, 256, 1024, 4096, 16384),
        "widths": (16, 64, 256),
        "densities": (0.1, 0.5),
        "steps": 100,
        "repeats": 7,
    },
}

# Skip a size whose params alone would exceed this many float32 numbers (~1.6 GB).
MAX_PARAMETERS = 400_000_000


def make_population(key: jax.Array, population: int, width: int, density: float):
    """Params and exact-density kernel masks of ``population`` MLPs (leading axis ``[P]``)."""
    from synprune_jax import masks as masks_lib
    from synprune_jax.networks import MLPSpec

    spec = MLPSpec(INPUT_SIZE, OUTPUT_SIZE, (width, width))
    key_params, key_masks = jax.random.split(key)
    params = jax.vmap(spec.init)(jax.random.split(key_params, population))
    masks = jax.vmap(
        lambda k, p: masks_lib.forward_prune(
            spec, masks_lib.init_masks(k, p, spec.maskable(), density, exact=True)
        )
    )(jax.random.split(key_masks, population), params)
    return spec, params, masks


def rollout_policy(spec, forward, params, steps: int, observations: jax.Array) -> jax.Array:
    """``steps`` forward passes per individual; ``forward(params_i, x) -> y``. Returns ``[P]``."""

    def body(x, _):
        y = jax.vmap(forward)(params, x)
        x = jnp.tanh(x + 0.1 * jnp.mean(y, axis=1, keepdims=True))
        return x, None

    final, _ = jax.lax.scan(body, observations, None, length=steps)
    return jnp.sum(final, axis=1)


def pack(masks):
    """Bit-packs every mask leaf along its flattened entries: ``[P, ...] -> [P, ceil(n/8)]``."""
    return jax.tree_util.tree_map(lambda m: jnp.packbits(m.reshape(m.shape[0], -1), axis=1), masks)


def unpack(packed, like):
    """Inverse of :func:`pack` (``like`` gives the shapes)."""
    return jax.tree_util.tree_map(
        lambda p, m: (
            jnp.unpackbits(p, axis=1, count=int(np.prod(m.shape[1:]))).reshape(m.shape).astype(bool)
        ),
        packed,
        like,
    )


def live_units(kernels: list) -> list:
    """Per individual, hidden units that receive input and reach an output: ``[P, W]`` each."""
    forward = [None]
    alive = jnp.ones(kernels[0].shape[:2], bool)  # [P, in]
    for kernel in kernels[:-1]:
        alive = jnp.any(kernel & alive[:, :, None], axis=1)
        forward.append(alive)
    backward = jnp.ones((kernels[-1].shape[0], kernels[-1].shape[2]), bool)  # [P, out]
    live = [None] * len(kernels)
    for index in range(len(kernels) - 1, 0, -1):
        backward = jnp.any(kernels[index] & backward[:, None, :], axis=2)
        live[index] = forward[index] & backward
    return live[1:]


def compact(spec, params, masks, widths: tuple[int, ...]):
    """Masked params gathered to ``widths`` live hidden units per layer (live units first).

    With forward-pruned masks a unit without live input has no live outgoing weight, so its
    bias cannot reach an output, and a unit without a path to an output cannot either: dropping
    both leaves the outputs unchanged. Returns ``(compact_spec, compact_params)``.
    """
    from synprune_jax.masks import apply_masks
    from synprune_jax.networks import MLPSpec

    dense = jax.vmap(apply_masks)(params, masks)
    kernels = spec.kernels(masks)
    live = live_units(kernels)
    order = [
        jnp.argsort(~alive, axis=1, stable=True)[:, :width]
        for alive, width in zip(live, widths, strict=True)
    ]
    layers = spec.layer_names()
    new = {}
    for index, name in enumerate(layers):
        kernel = dense["params"][name]["kernel"]
        bias = dense["params"][name]["bias"]
        if index > 0:  # select input rows
            kernel = jnp.take_along_axis(kernel, order[index - 1][:, :, None], axis=1)
        if index < len(layers) - 1:  # select output columns
            kernel = jnp.take_along_axis(kernel, order[index][:, None, :], axis=2)
            bias = jnp.take_along_axis(bias, order[index], axis=1)
        new[name] = {"kernel": kernel, "bias": bias}
    compact_spec = MLPSpec(spec.input_size, spec.output_size, widths)
    return compact_spec, {"params": new}


def point_programs(
    spec, small_spec, masks, steps: int, params, packed, small_params, observations
) -> dict:
    """``{variant: (function, arguments)}``: the five forward-pass variants of one point."""
    return {
        "dense": (
            lambda p, o: rollout_policy(spec, spec.apply_dense, p, steps, o),
            (params, observations),
        ),
        "masked_once": (
            lambda p, m, o: rollout_policy(
                spec, spec.apply_dense, jax.vmap(apply_masks)(p, m), steps, o
            ),
            (params, masks, observations),
        ),
        "masked_every_step": (
            lambda p, m, o: rollout_policy(
                spec, lambda pm, x: spec.apply(pm[0], pm[1], x), (p, m), steps, o
            ),
            (params, masks, observations),
        ),
        "packed_bits": (
            lambda p, b, o: rollout_policy(
                spec, spec.apply_dense, jax.vmap(apply_masks)(p, unpack(b, masks)), steps, o
            ),
            (params, packed, observations),
        ),
        "compacted": (
            lambda p, o: rollout_policy(small_spec, small_spec.apply_dense, p, steps, o),
            (small_params, observations),
        ),
    }


def run(suite: str) -> list[dict]:
    """One record per (population, width, density, variant)."""
    setting = SIZES[check_suite(suite)]
    records = []
    for density in setting["densities"]:
        for width in setting["widths"]:
            for population in setting["populations"]:
                synapses = INPUT_SIZE * width + width * width + width * OUTPUT_SIZE
                common = {
                    "population": population,
                    "width": width,
                    "density": density,
                    "steps": setting["steps"],
                    "synapses": synapses,
                }
                if population * synapses > MAX_PARAMETERS:
                    records.append(
                        {
                            **common,
                            "variant": "skipped",
                            "status": f"over {MAX_PARAMETERS} parameters",
                        }
                    )
                    continue
                spec, params, masks = make_population(
                    jax.random.key(population + width), population, width, density
                )
                observations = jax.random.normal(jax.random.key(1), (population, INPUT_SIZE))
                steps = setting["steps"]
                packed = pack(masks)
                live = jax.device_get(live_units(spec.kernels(masks)))
                widths = tuple(max(1, int(np.max(np.sum(a, axis=1)))) for a in live)
                compact_jit = jax.jit(
                    lambda p, m, spec=spec, widths=widths: compact(spec, p, m, widths)[1]
                )
                small_params, compact_s = timed(compact_jit, params, masks)
                _, compact_s = timed(compact_jit, params, masks)  # second call: no compile
                small_spec = compact(spec, params, masks, widths)[0]

                programs = point_programs(
                    spec, small_spec, masks, steps, params, packed, small_params, observations
                )
                compiled, compile_s = {}, {}
                for variant, (function, arguments) in programs.items():
                    executable, seconds, _ = compile_timed(function, *arguments)
                    compiled[variant] = lambda e=executable, a=arguments: e(*a)
                    compile_s[variant] = seconds
                outputs = {variant: np.asarray(call()) for variant, call in compiled.items()}
                medians = interleaved_medians(compiled, setting["repeats"])
                dense_s = medians["dense"]["median_s"]
                mask_bytes = sum(m.size for m in jax.tree_util.tree_leaves(masks))
                packed_bytes = sum(p.size for p in jax.tree_util.tree_leaves(packed))
                for variant, timing in medians.items():
                    record = {
                        **common,
                        "variant": variant,
                        "median_s": timing["median_s"],
                        "forward_passes_per_s": population * steps / timing["median_s"],
                        "ratio_to_dense": timing["median_s"] / dense_s,
                        "cpu_ratio_to_dense": timing["median_cpu_s"]
                        / max(medians["dense"]["median_cpu_s"], 1e-9),
                        "compile_s": compile_s[variant],
                        "max_abs_diff_vs_masked": float(
                            np.max(np.abs(outputs[variant] - outputs["masked_once"]))
                        ),
                    }
                    if variant == "packed_bits":
                        record["mask_mb"] = packed_bytes / 2**20
                    elif variant in ("masked_once", "masked_every_step"):
                        record["mask_mb"] = mask_bytes / 2**20
                    elif variant == "compacted":
                        record["compact_widths"] = list(widths)
                        record["compact_s"] = compact_s
                    records.append(record)
    return records


def main() -> None:
    standalone_main(NAME, run, __doc__.split("\n")[0])


if __name__ == "__main__":
    main()
