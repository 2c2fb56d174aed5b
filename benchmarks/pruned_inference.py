"""What a pruned network costs at inference: sizes, operations, an energy estimate and measured
latency of the dense, masked, compact and CSR forms (synprune_jax.export).

Networks: the best elite at density <= 10 / 25 / 50 / 100 % of a run (``--run RUN``, e.g. the
default ``synprune run``'s directory), and a wide policy (hopper's 11 inputs, two hidden layers of
256, 3 outputs) with random exact-density masks, forward-pruned as the engine's mutation does.
Without ``--run``, the default experiment's policy shape gets random masks too (``source``
says which).

Forms, each in jitted JAX (CPU) and in NumPy: ``dense`` (the unpruned weights), ``masked`` (the
engine's form: masks applied once, then dense passes with every multiply done), ``compact``
(:func:`compact_mlp`'s dense kernels); and ``csr`` (SciPy CSR kernels). Latency: one observation
and a batch of 256, medians of calls timed in alternation (``inner`` calls per timing), reported
per call. Counts and
``energy_pj`` come from :func:`network_cost` (Horowitz 2014, 45 nm: an estimate, not measured).
Every form's outputs are checked against the masked network's (``max_abs_diff``).

    python -m benchmarks.pruned_inference --suite quick --run /tmp/default_run
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from benchmarks import RESULTS_DIR, SUITES, emit, interleaved_medians, machine_info, run_and_report
from synprune_jax.export import (
    NUMPY_ACTIVATIONS,
    apply_compact,
    compact_mlp,
    network_cost,
    open_run,
    select_network,
)
from synprune_jax.masks import apply_masks, forward_prune, init_masks
from synprune_jax.networks import ACTIVATIONS, MLPSpec

NAME = "pruned_inference"
DENSITIES = (0.1, 0.25, 0.5, 1.0)
SIZES = {
    "toy": {"batches": (1, 4), "repeats": 2, "inner": 2},
    "quick": {"batches": (1, 256), "repeats": 7, "inner": 50},
    "full": {"batches": (1, 256), "repeats": 15, "inner": 200},
}


def random_network(spec: MLPSpec, density: float, seed: int):
    """Params and exact-density, forward-pruned kernel masks of one network."""
    key_params, key_masks = jax.random.split(jax.random.key(seed))
    params = spec.init(key_params)
    masks = init_masks(key_masks, params, spec.maskable(), density, exact=True)
    return params, forward_prune(spec, masks)


def numpy_forward(kernels, biases, hidden: str, output: str):
    """A NumPy MLP forward over lists of ``[in, out]`` kernels and biases."""
    last = len(kernels) - 1

    def forward(x):
        for index, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
            x = NUMPY_ACTIVATIONS[output if index == last else hidden](x @ kernel + bias)
        return x

    return forward


def jax_forward(kernels, biases, hidden: str, output: str, inputs=None):
    """The same in JAX, jitted, the weights (and the observation entries read, ``inputs``)
    closed over as constants of the program."""
    kernels = [jnp.asarray(k) for k in kernels]
    biases = [jnp.asarray(b) for b in biases]
    last = len(kernels) - 1

    @jax.jit
    def forward(x):
        if inputs is not None:
            x = x[..., jnp.asarray(inputs)]
        for index, (kernel, bias) in enumerate(zip(kernels, biases, strict=True)):
            x = ACTIVATIONS[output if index == last else hidden](x @ kernel + bias[None, :])
        return x

    return forward


def forms(spec: MLPSpec, params, masks) -> dict:
    """``{form_backend: callable(x)}`` for the seven forms (module docstring)."""
    net = compact_mlp(spec, params, masks)
    hidden, output = spec.activation, spec.output_activation
    dense_k = [np.asarray(k, np.float32) for k in spec.kernels(params)]
    dense_b = [np.asarray(b, np.float32) for b in spec.biases(params)]
    masked = apply_masks(params, masks)
    masked_k = [np.asarray(k, np.float32) for k in spec.kernels(masked)]
    masked_b = [np.asarray(b, np.float32) for b in spec.biases(masked)]
    sparse = [scipy.sparse.csr_matrix(k.T) for k in net.kernels]
    last = len(sparse) - 1

    def csr_forward(x):
        x = np.asarray(x, np.float32)[..., net.inputs].T  # [in, B]
        for index, (matrix, bias) in enumerate(zip(sparse, net.biases, strict=True)):
            x = matrix @ x + bias[:, None]
            x = NUMPY_ACTIVATIONS[output if index == last else hidden](x)
        return x.T

    return {
        "dense_jax": jax_forward(dense_k, dense_b, hidden, output),
        "dense_numpy": numpy_forward(dense_k, dense_b, hidden, output),
        # the engine's form: masks applied once (per evaluation), then dense passes
        "masked_jax": jax_forward(masked_k, masked_b, hidden, output),
        "masked_numpy": numpy_forward(masked_k, masked_b, hidden, output),
        "compact_jax": jax_forward(net.kernels, net.biases, hidden, output, net.inputs),
        "compact_numpy": lambda x: apply_compact(net, x),
        "csr_scipy": csr_forward,
    }


def repeat(function, x, inner: int):
    """A zero-argument callable making ``inner`` calls ``function(x)`` (one timing unit)."""
    return lambda: [function(x) for _ in range(inner)]


def measure(spec, params, masks, label: dict, setting: dict) -> list[dict]:
    costs = {row["form"]: row for row in network_cost(spec, params, masks)}
    callables = forms(spec, params, masks)
    records = []
    rng = np.random.default_rng(0)
    for batch in setting["batches"]:
        x_np = rng.normal(size=(batch, spec.input_size)).astype(np.float32)
        x_jax = jnp.asarray(x_np)
        reference = np.asarray(callables["masked_jax"](x_jax))
        inner = setting["inner"]
        timed = {
            name: repeat(f, x_jax if name.endswith("_jax") else x_np, inner)
            for name, f in callables.items()
        }
        medians = interleaved_medians(timed, setting["repeats"])
        for name, timing in medians.items():
            form = name.rsplit("_", 1)[0]
            x = x_jax if name.endswith("_jax") else x_np
            out = np.asarray(callables[name](x))
            records.append(
                {
                    **label,
                    "form": form,
                    "backend": name.rsplit("_", 1)[1],
                    "batch": batch,
                    "latency_us": 1e6 * timing["median_s"] / inner,
                    "cpu_us": 1e6 * timing["median_cpu_s"] / inner,
                    "parameters": costs[form]["parameters"],
                    "bytes": costs[form]["bytes"],
                    "macs": costs[form]["macs"],
                    "energy_pj_estimate": costs[form]["energy_pj"],
                    "max_abs_diff": 0.0
                    if form == "dense"  # no masks: differs on purpose
                    else float(np.max(np.abs(out - reference))),
                }
            )
    return records


def random_cases(network: str, spec: MLPSpec, setting: dict) -> list[dict]:
    """The records of ``spec`` with random forward-pruned masks at every density of DENSITIES."""
    records: list[dict] = []
    for density in DENSITIES:
        label = {
            "network": network,
            "source": "random masks",
            "density_bound": density,
            "widths": "-".join(map(str, spec.layer_sizes)),
        }
        records += measure(spec, *random_network(spec, density, 0), label, setting)
    return records


def run(suite: str, run_dir: str | None) -> list[dict]:
    setting = SIZES[suite]
    records: list[dict] = []
    if run_dir:
        networks = open_run(run_dir)
        for density in DENSITIES:
            try:
                row = select_network(networks, density=density)
            except ValueError as error:
                emit({"benchmark": NAME, "skipped": str(error)})
                continue
            params, masks = networks.network(row)
            label = {
                "network": "run",
                "source": run_dir,
                "density_bound": density,
                "cell": int(networks.index[row]),
                "fitness": float(networks.fitness[row]),
                "widths": "-".join(map(str, networks.spec.layer_sizes)),
            }
            records += measure(networks.spec, params, masks, label, setting)
    else:
        from synprune_jax.experiments import DEFAULT_EXPERIMENT, get_experiment

        task = get_experiment(DEFAULT_EXPERIMENT).default_config()["task"]
        records += random_cases(
            "default_shape", MLPSpec(11, 3, tuple(task["hidden_sizes"])), setting
        )
    records += random_cases("wide", MLPSpec(11, 3, (256, 256)), setting)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="quick", choices=SUITES)
    parser.add_argument("--run", help="a run directory whose elites to cost")
    parser.add_argument("--out", default=RESULTS_DIR, help="directory of the CSV ('' = none)")
    args = parser.parse_args()
    emit({"benchmark": "machine", "suite": args.suite, **machine_info()})
    run_and_report(NAME, run(args.suite, args.run), args.out or None, args.suite)


if __name__ == "__main__":
    main()
