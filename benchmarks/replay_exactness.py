"""Why a replay evaluates copies of the network in a batch of the evaluation's size.

Evaluates ``--population`` random hopper 16-16 policies (Beta-pruned, spring backend,
``--steps`` steps) in one batch, as a generation does, then replays the first ``--replays`` of
them (a) alone, in a batch of one, and (b) as copies filling a batch of the original size, both
with the trajectories kept (what ``synprune_jax.replay`` runs). Prints one JSON line per replayed
policy (the three returns and whether each replay equals the batch's) and a summary line. On
XLA:CPU the batch of one is compiled differently and the physics turns its last-bit differences
into another return; the padded batch repeats the evaluation bit for bit.

    python -m benchmarks.replay_exactness [--population 32] [--steps 200] [--replays 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--replays", type=int, default=8)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    from synprune_jax import variation
    from synprune_jax.tasks import BraxTask

    task = BraxTask("hopper", episode_length=args.steps)
    rates = jnp.array([0.05, 0.05])
    population = variation.random_population(jax.random.key(0), task, args.population, rates)
    key = jax.random.key(3)
    batch = jax.jit(task.evaluate)(key, population).fitness
    replay_task = dataclasses.replace(task, keep_trajectories=True)
    evaluate = jax.jit(replay_task.evaluate)
    alone_equal = padded_equal = 0
    for index in range(min(args.replays, args.population)):
        one = jax.tree.map(lambda leaf, i=index: leaf[i : i + 1], population)
        copies = jax.tree.map(
            lambda leaf, i=index: jnp.broadcast_to(leaf[i], leaf.shape), population
        )
        alone = float(evaluate(key, one).fitness[0])
        padded = float(evaluate(key, copies).fitness[0])
        archived = float(batch[index])
        alone_equal += alone == archived
        padded_equal += padded == archived
        record = {"policy": index, "batch": archived, "alone": alone, "padded": padded}
        print(
            json.dumps(
                {**record, "alone_equal": alone == archived, "padded_equal": padded == archived}
            )
        )
    replays = min(args.replays, args.population)
    print(
        json.dumps(
            {
                "benchmark": "replay_exactness",
                "population": args.population,
                "steps": args.steps,
                "replays": replays,
                "alone_equal": alone_equal,
                "padded_equal": padded_equal,
                "jax": jax.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
