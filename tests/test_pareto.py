"""Pareto fronts: non-dominated sorting, crowding, padded fronts and exact hypervolume vs pymoo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from synprune_jax.archives.pareto import (
    crowding_distance,
    dominance_matrix,
    hypervolume,
    non_dominated_numpy,
    non_dominated_rank,
    padded_front,
    survival_order,
)

rank_jit = jax.jit(non_dominated_rank)


def test_dominance_and_ranks_exact():
    points = jnp.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5], [0.0, 0.0], [jnp.nan, 5.0]])
    dominates = np.asarray(dominance_matrix(points))
    assert dominates[0, 3] and dominates[3, 4] and not dominates[0, 1] and not dominates[3, 3]
    assert not dominates[:, 5].any() and not dominates[5].any()
    np.testing.assert_array_equal(np.asarray(rank_jit(points)), [0, 0, 0, 1, 2, 6])


def test_equal_points_share_a_front():
    points = jnp.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(rank_jit(points)), [0, 0, 1])


@pytest.mark.parametrize("num_objectives", [2, 3, 4])
def test_ranks_match_pymoo(num_objectives):
    rng = np.random.default_rng(num_objectives)
    for _trial in range(5):
        # rounded values create ties and duplicates
        points = np.round(rng.random((40, num_objectives)), 1)
        ours = np.asarray(rank_jit(jnp.asarray(points, jnp.float32)))
        _, theirs = NonDominatedSorting().do(-points, return_rank=True)  # pymoo minimises
        np.testing.assert_array_equal(ours, theirs)


def test_crowding_distance_exact():
    # one front of 4 points on a line, plus a dominated point alone in front 1
    points = jnp.array([[0.0, 3.0], [1.0, 2.0], [3.0, 0.0], [2.0, 1.0], [0.0, 0.0]])
    ranks = non_dominated_rank(points)
    np.testing.assert_array_equal(np.asarray(ranks), [0, 0, 0, 0, 1])
    crowding = np.asarray(crowding_distance(points, ranks))
    # interior points: (2 - 0) / 3 in each of the two objectives
    np.testing.assert_allclose(crowding[[1, 3]], [4.0 / 3.0, 4.0 / 3.0], rtol=1e-6)
    assert np.isinf(crowding[[0, 2, 4]]).all()
    order = np.asarray(survival_order(ranks, jnp.asarray(crowding)))
    np.testing.assert_array_equal(order, [0, 2, 1, 3, 4])


def test_padded_front_keeps_unique_non_dominated_points():
    points = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.2, 0.2], [0.5, 0.5]])
    genomes = jnp.eye(5, dtype=bool)
    front = jax.jit(padded_front, static_argnums=2)(points, genomes, 6)
    assert front.objectives.shape == (6, 2) and front.genomes.shape == (6, 5)
    np.testing.assert_array_equal(np.asarray(front.valid), [True] * 3 + [False] * 3)
    kept = {tuple(row) for row in np.asarray(front.objectives[:3]).tolist()}
    assert kept == {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}
    assert np.isneginf(np.asarray(front.objectives[3:])).all()
    assert not np.asarray(front.genomes[3:]).any()
    small = padded_front(points, genomes, 2)  # capacity below the front size: boundary first
    assert {tuple(r) for r in np.asarray(small.objectives).tolist()} == {(1.0, 0.0), (0.0, 1.0)}


def test_hypervolume_exact_values():
    assert hypervolume(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]), np.zeros(2)) == 0.25
    assert hypervolume(np.array([[2.0, 3.0, 4.0]]), np.ones(3)) == pytest.approx(6.0)
    # two boxes [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1]: union 3
    assert hypervolume(np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]]), np.zeros(3)) == 3.0
    assert hypervolume(np.zeros((0, 3)), np.zeros(3)) == 0.0
    assert hypervolume(np.array([[-1.0, 5.0]]), np.zeros(2)) == 0.0  # not above the reference
    with pytest.raises(ValueError):
        hypervolume(np.ones((2, 3)), np.zeros(2))


@pytest.mark.parametrize("num_objectives", [2, 3, 4, 5])
def test_hypervolume_matches_pymoo(num_objectives):
    rng = np.random.default_rng(10 + num_objectives)
    for trial in range(4):
        points = rng.random((25, num_objectives))
        if trial % 2:  # points on a concave front: mostly non-dominated
            points /= np.linalg.norm(points, axis=1, keepdims=True)
        reference = np.full(num_objectives, -0.1)
        theirs = HV(ref_point=-reference)(-points)
        assert hypervolume(points, reference) == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_non_dominated_numpy_agrees_with_ranks():
    rng = np.random.default_rng(3)
    points = np.round(rng.random((30, 3)), 1)
    np.testing.assert_array_equal(
        non_dominated_numpy(points), np.asarray(non_dominated_rank(jnp.asarray(points))) == 0
    )
