"""Tests for synprune_jax.tasks: the kinematic arm (exact values) and Brax tasks (tiny sizes)."""

from __future__ import annotations

import contextlib
import functools
import io
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import exact_jit
from hypothesis import given, settings
from hypothesis import strategies as st

jax.config.update("jax_numpy_rank_promotion", "raise")

# brax prints "Failed to import warp" on stdout and warns on import / env creation: silence it here
# only (the library does not hide it globally).
with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import brax.envs  # noqa: F401

from synprune_jax import masks as masks_lib  # noqa: E402
from synprune_jax.tasks import (  # noqa: E402
    FEET,
    BraxTask,
    KinematicArm,
    Task,
    make_env,
    make_task,
)
from synprune_jax.types import EvalResult, Population  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make_population(task, key, size, density=1.0):
    keys = jax.random.split(key, size)
    params = jax.vmap(task.init_params)(keys)
    masks = jax.vmap(lambda k, p: masks_lib.init_masks(k, p, task.maskable(), density))(
        keys, params
    )
    return Population(params=params, masks=masks, rates=jnp.zeros((size, 2), jnp.float32))


def angles_population(angles, masks=None):
    angles = jnp.asarray(angles, jnp.float32)
    if masks is None:
        masks = jnp.ones(angles.shape, jnp.bool_)
    return Population(
        params={"angles": angles},
        masks={"angles": jnp.asarray(masks)},
        rates=jnp.zeros((angles.shape[0], 2), jnp.float32),
    )


def assert_in_bounds(task, descriptors):
    lower, upper = task.descriptor_bounds()
    descriptors = np.asarray(descriptors)
    assert descriptors.shape[-1] == len(task.descriptor_names) == lower.shape[0] == upper.shape[0]
    assert np.all(np.isfinite(descriptors))
    assert np.all(descriptors >= lower) and np.all(descriptors <= upper)


# ----- kinematic arm ----------------------------------------------------------------------------

ARM = KinematicArm(num_joints=8)
ARM_EVALUATE = jax.jit(ARM.evaluate)


def test_arm_is_a_task_with_documented_defaults():
    assert isinstance(ARM, Task)
    assert ARM.spec is None
    assert ARM.descriptor_names == ("end_effector_x", "end_effector_y")
    lower, upper = ARM.descriptor_bounds()
    np.testing.assert_array_equal(lower, [0.0, 0.0])
    np.testing.assert_array_equal(upper, [1.0, 1.0])
    assert ARM.env_steps_per_individual == 0
    assert ARM.maskable() == {"angles": True}
    genes = ARM.init_params(jax.random.key(0))["angles"]
    assert genes.shape == (8,) and genes.dtype == jnp.float32
    assert bool(jnp.all(jnp.abs(genes) <= 1.0))


def test_arm_straight_arm_exact():
    result = ARM_EVALUATE(jax.random.key(0), angles_population(jnp.zeros((2, 8))))
    assert isinstance(result, EvalResult)
    np.testing.assert_array_equal(np.asarray(result.fitness), [0.0, 0.0])
    np.testing.assert_allclose(np.asarray(result.descriptors), [[1.0, 0.5], [1.0, 0.5]], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(result.extras["density"]), [1.0, 1.0])


def test_arm_two_joints_exact():
    # First joint at +90 degrees, second straight: both links point up, tip (0, 1) -> (0.5, 1).
    task = KinematicArm(num_joints=2)
    result = task.evaluate(jax.random.key(0), angles_population([[0.5, 0.0], [-1.0, 1.0]]))
    np.testing.assert_allclose(float(result.fitness[0]), -((math.pi / 4) ** 2), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(result.descriptors[0]), [0.5, 1.0], atol=1e-6)
    # Angles -pi then +pi: first link to (-0.5, 0), second back to (0, 0) -> (0.5, 0.5).
    np.testing.assert_allclose(float(result.fitness[1]), -(math.pi**2), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(result.descriptors[1]), [0.5, 0.5], atol=1e-6)


def test_arm_masked_joint_is_straight_and_genes_clip():
    genes = jnp.array([[0.3, 1e6, -0.2, 0.1, 0.0, 0.5, -0.7, 0.9]])
    mask = genes != 1e6
    masked = ARM_EVALUATE(jax.random.key(0), angles_population(genes, mask))
    zeroed = ARM_EVALUATE(jax.random.key(0), angles_population(jnp.where(mask, genes, 0.0)))
    np.testing.assert_array_equal(np.asarray(masked.fitness), np.asarray(zeroed.fitness))
    np.testing.assert_array_equal(np.asarray(masked.descriptors), np.asarray(zeroed.descriptors))
    np.testing.assert_allclose(float(masked.extras["density"][0]), 7 / 8)
    # Unmasked, the huge gene is clipped to 1 (angle pi).
    clipped = ARM_EVALUATE(jax.random.key(0), angles_population(genes))
    at_one = ARM_EVALUATE(jax.random.key(0), angles_population(jnp.where(mask, genes, 1.0)))
    np.testing.assert_array_equal(np.asarray(clipped.fitness), np.asarray(at_one.fitness))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0, allow_nan=False, width=32), min_size=8, max_size=8))
def test_arm_descriptors_in_bounds_and_fitness_nonpositive(genes):
    result = ARM_EVALUATE(jax.random.key(0), angles_population([genes]))
    assert_in_bounds(ARM, result.descriptors)
    assert float(result.fitness[0]) <= 0.0


def test_arm_mlp_genotype():
    task = KinematicArm(
        num_joints=5, genotype="mlp", descriptors=("end_effector", "sparsity", "layer_density")
    )
    assert task.spec.input_size == 4 and task.spec.output_size == 5
    assert task.spec.hidden_sizes == (16,)
    assert task.descriptor_names == (
        "end_effector_x",
        "end_effector_y",
        "sparsity",
        "layer_density_0",
        "layer_density_1",
    )
    population = make_population(task, jax.random.key(1), 6, density=0.5)
    evaluate = jax.jit(task.evaluate)
    result = evaluate(jax.random.key(0), population)
    assert result.fitness.shape == (6,) and result.fitness.dtype == jnp.float32
    assert result.descriptors.shape == (6, 5) and result.descriptors.dtype == jnp.float32
    assert_in_bounds(task, result.descriptors)
    density = jax.vmap(masks_lib.density, in_axes=(0, None))(population.masks, task.maskable())
    np.testing.assert_allclose(np.asarray(result.extras["density"]), np.asarray(density))
    np.testing.assert_allclose(
        np.asarray(result.descriptors[:, 2]), 1.0 - np.asarray(density), atol=1e-6
    )

    # All kernels masked (biases start at 0): every angle is 0 -> straight arm.
    empty = population.replace(masks=jax.tree_util.tree_map(jnp.zeros_like, population.masks))
    result = evaluate(jax.random.key(0), empty)
    np.testing.assert_array_equal(np.asarray(result.fitness), np.zeros(6))
    np.testing.assert_allclose(np.asarray(result.descriptors[:, :2]), [[1.0, 0.5]] * 6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(result.descriptors[:, 2:]), [[1.0, 0.0, 0.0]] * 6)


def test_arm_validation():
    with pytest.raises(ValueError, match="end_effector"):
        KinematicArm(descriptors=("sparsity",))  # masks of direct angles: no network
    with pytest.raises(ValueError, match="unknown genotype"):
        KinematicArm(genotype="cnn")
    with pytest.raises(ValueError, match="sequence"):
        KinematicArm(descriptors="end_effector")


def test_make_task():
    task = make_task("arm", num_joints=3)
    assert isinstance(task, KinematicArm) and task.num_joints == 3
    with pytest.raises(ValueError, match=r"\['arm', 'brax', 'gymnax', 'playground', 'reach'\]"):
        make_task("maze")


# ----- Brax: cheap checks (no compile) ------------------------------------------------------------


def test_brax_validation_is_fast_and_lists_valid_names():
    BraxTask("hopper")  # warm up the brax import
    cases = [
        (dict(env_name="hoper"), "hopper"),
        (dict(backend="physx"), "generalized"),
        (dict(descriptors=("sparsity", "speed")), "final_xy"),
        (dict(env_name="inverted_pendulum", descriptors=("feet_contact",)), "final_xy"),
        (dict(mjx_fast_solver=True), "mjx"),
        (dict(episode_length=0), "episode_length"),
    ]
    for kwargs, listed in cases:
        start = time.perf_counter()
        with pytest.raises(ValueError) as error:
            make_task("brax", **kwargs)
        assert time.perf_counter() - start < 1.0, kwargs
        assert listed in str(error.value), (kwargs, str(error.value))
    with pytest.raises(ValueError, match="'spring'"):
        BraxTask(backend="warp")


def test_feet_table_matches_link_names():
    for env_name, feet in FEET.items():
        names = make_env(env_name, "spring").sys.link_names
        for label, link in feet:
            assert names[link] == ("" if env_name == "ant" else label), (env_name, label)


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@pytest.mark.parametrize("env_name", sorted(FEET))
def test_feet_lowest_points_match_rotation_matrices(env_name):
    # The quaternion rotation against full rotation matrices in float64 numpy, for random poses
    # of every link (unit quaternions, as Brax keeps them).
    from synprune_jax.tasks.brax_task import _foot_geometry, feet_lowest_points

    geometry = _foot_geometry(env_name, "spring", False)
    num_links = len(make_env(env_name, "spring").sys.link_names)
    rng = np.random.default_rng(len(env_name))
    positions = rng.normal(size=(num_links, 3)).astype(np.float32)
    quaternions = rng.normal(size=(num_links, 4))
    quaternions = (quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True)).astype(
        np.float32
    )
    expected = np.full(geometry.num_feet, np.inf)
    for g, link in enumerate(geometry.link):
        matrix = _quaternion_matrix(quaternions[link].astype(np.float64))
        centre = positions[link] + matrix @ geometry.position[g]
        half_axis = matrix @ geometry.half_axis[g]
        lowest = centre[2] - abs(half_axis[2]) - geometry.radius[g]
        expected[geometry.foot[g]] = min(expected[geometry.foot[g]], lowest)
    fast = jax.jit(functools.partial(feet_lowest_points, geometry))(positions, quaternions)
    assert fast.shape == (geometry.num_feet,) == (len(FEET[env_name]),)
    np.testing.assert_allclose(np.asarray(fast), expected, rtol=0, atol=2e-6)


def test_brax_static_structure():
    task = BraxTask(
        "hopper",
        episode_length=20,
        num_episodes=3,
        hidden_sizes=(4,),
        descriptors=("sparsity", "layer_density", "final_xy", "feet_contact"),
        xy_bound=2.5,
    )
    assert isinstance(task, Task)
    assert hash(task) == hash(
        BraxTask(
            "hopper",
            episode_length=20,
            num_episodes=3,
            hidden_sizes=[4],
            descriptors=list(task.descriptors),
            xy_bound=2.5,
        )
    )
    assert task.env_steps_per_individual == 60
    assert (task.spec.input_size, task.spec.output_size) == (11, 3)
    assert task.descriptor_names == (
        "sparsity",
        "layer_density_0",
        "layer_density_1",
        "final_x",
        "final_y",
        "feet_contact_foot",
    )
    lower, upper = task.descriptor_bounds()
    np.testing.assert_array_equal(lower, [0, 0, 0, -2.5, -2.5, 0])
    np.testing.assert_array_equal(upper, [1, 1, 1, 2.5, 2.5, 1])
    assert lower.dtype == upper.dtype == np.float32


# ----- Brax: compiled evaluations (shared) -------------------------------------------------------

POPULATION = 4
HOPPER = BraxTask(
    "hopper",
    "spring",
    episode_length=20,
    hidden_sizes=(4,),
    descriptors=("sparsity", "disconnected_fraction", "layer_density", "final_xy", "feet_contact"),
    keep_trajectories=True,
)
PENDULUM = BraxTask("inverted_pendulum", "spring", episode_length=30, hidden_sizes=(4,))


@pytest.fixture(scope="module")
def hopper():
    population = make_population(HOPPER, jax.random.key(1), POPULATION, density=0.6)
    evaluate = jax.jit(HOPPER.evaluate)
    result = evaluate(jax.random.key(0), population)
    return evaluate, population, result


@pytest.fixture(scope="module")
def pendulum():
    population = make_population(PENDULUM, jax.random.key(2), POPULATION, density=0.8)
    # Large weights: a random policy topples the pole within a few steps.
    population = population.replace(
        params=jax.tree_util.tree_map(lambda p: 3.0 * p, population.params)
    )
    evaluate = jax.jit(PENDULUM.evaluate)
    return evaluate, population, evaluate(jax.random.key(3), population)


def test_brax_result_shapes_and_dtypes(hopper):
    _, population, result = hopper
    obs, act, steps = HOPPER.observation_size, HOPPER.action_size, HOPPER.episode_length
    assert result.fitness.shape == (POPULATION,) and result.fitness.dtype == jnp.float32
    assert result.descriptors.shape == (POPULATION, 7)
    assert result.descriptors.dtype == jnp.float32
    trajectory = {"observations", "actions", "alive", "rewards", "qpos", "body_pos", "body_quat"}
    assert set(result.extras) == {"density", "episode_length", *trajectory}
    assert result.extras["density"].shape == (POPULATION,)
    assert result.extras["episode_length"].shape == (POPULATION,)
    assert result.extras["observations"].shape == (POPULATION, 1, steps, obs)
    assert result.extras["actions"].shape == (POPULATION, 1, steps, act)
    assert result.extras["alive"].shape == (POPULATION, 1, steps)
    # the counted rewards, summed in step order, are the return (float32, exactly)
    rewards = np.asarray(result.extras["rewards"])[:, 0]
    np.testing.assert_array_equal(
        np.cumsum(rewards, axis=1, dtype=np.float32)[:, -1], np.asarray(result.fitness)
    )
    assert result.extras["body_pos"].shape[:3] == (POPULATION, 1, steps)
    assert result.extras["body_pos"].shape[-1] == 3 and result.extras["body_quat"].shape[-1] == 4
    assert np.all(np.isfinite(np.asarray(result.fitness)))
    density = jax.vmap(masks_lib.density, in_axes=(0, None))(population.masks, HOPPER.maskable())
    np.testing.assert_allclose(np.asarray(result.extras["density"]), np.asarray(density))
    np.testing.assert_allclose(
        np.asarray(result.descriptors[:, 0]), 1.0 - np.asarray(density), atol=1e-6
    )
    # The alive flags never come back, and count the alive steps.
    alive = np.asarray(result.extras["alive"])
    assert np.all(np.diff(alive.astype(int), axis=-1) <= 0)
    np.testing.assert_array_equal(
        alive.sum(axis=(1, 2)), np.asarray(result.extras["episode_length"])
    )


def test_brax_descriptors_in_bounds(hopper):
    _, _, result = hopper
    assert_in_bounds(HOPPER, result.descriptors)
    feet = np.asarray(result.descriptors[:, -1])
    assert np.all((feet >= 0.0) & (feet <= 1.0))


def test_brax_masked_weight_value_is_irrelevant(hopper):
    evaluate, population, _ = hopper

    def fill_masked(value):
        params = jax.tree_util.tree_map(
            lambda p, m: jnp.where(m, p, value), population.params, population.masks
        )
        return population.replace(params=params)

    huge = evaluate(jax.random.key(0), fill_masked(1e6))
    zero = evaluate(jax.random.key(0), fill_masked(0.0))
    np.testing.assert_array_equal(np.asarray(huge.fitness), np.asarray(zero.fitness))
    np.testing.assert_array_equal(np.asarray(huge.descriptors), np.asarray(zero.descriptors))


def test_brax_all_masked_policy_runs(hopper):
    evaluate, population, _ = hopper
    empty = population.replace(masks=jax.tree_util.tree_map(jnp.zeros_like, population.masks))
    result = evaluate(jax.random.key(0), empty)
    np.testing.assert_array_equal(np.asarray(result.extras["actions"]), 0.0)  # zero biases
    assert np.all(np.isfinite(np.asarray(result.fitness)))
    np.testing.assert_array_equal(np.asarray(result.descriptors[:, 0]), 1.0)  # sparsity
    np.testing.assert_array_equal(np.asarray(result.extras["density"]), 0.0)
    # Standing still on one foot: the foot is on the ground for most of the (alive) steps.
    assert np.all(np.asarray(result.descriptors[:, -1]) > 0.5)


def test_env_first_created_inside_a_trace_is_concrete():
    # Regression: a feet-contact task whose env was first built inside jit cached a Brax system of
    # tracers, and the foot geometry could not read it (TracerArrayConversionError).
    from synprune_jax.tasks import brax_task

    for cached in (brax_task.make_env, brax_task.env_sizes, brax_task._foot_geometry):
        cached.cache_clear()
    task = BraxTask(
        "hopper", "spring", episode_length=3, hidden_sizes=(2,), descriptors=("feet_contact",)
    )
    population = jax.eval_shape(
        lambda k: make_population(task, k, 2, density=1.0), jax.random.key(0)
    )
    result = jax.eval_shape(task.evaluate, jax.random.key(0), population)
    assert result.descriptors.shape == (2, 1)
    system = brax_task.make_env("hopper", "spring").sys
    assert not isinstance(system.geom_pos, jax.core.Tracer)
    assert brax_task._foot_geometry("hopper", "spring", False).num_feet == 1


# both slow (30 s cold each: two exact-mode Brax compiles); the default suite checks the batched
# rollout against a hand-written step loop (test_brax_alive_mask_matches_manual_loop)
@pytest.mark.parametrize(
    "episodes", [pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_batched_rollouts_equal_per_individual_rollouts(episodes):
    # evaluate() scans once over time with the physics on one flat batch of P * E episodes (the
    # usual E = 1 and E > 1); the public per-individual `rollout` under two vmaps must give the
    # same numbers in the same [P, E, ...] order: bit for bit with E = 2; with E = 1 the
    # reference runs its physics on a [P, 1, ...] batch, which XLA:CPU compiles differently
    # from a [P, ...] one, so floats may differ by float32 rounding (measured: 2.4e-7 after 20
    # steps); counts and flags stay exact.
    task = BraxTask(
        "hopper",
        "spring",
        episode_length=20,
        num_episodes=episodes,
        hidden_sizes=(4,),
        descriptors=("final_xy", "feet_contact"),
        keep_trajectories=True,
    )
    population = make_population(task, jax.random.key(4), 3, density=0.7)
    dense = jax.vmap(masks_lib.apply_masks)(population.params, population.masks)
    keys = jax.random.split(jax.random.key(5), episodes)
    with jax.numpy_rank_promotion("allow"):  # Brax broadcasts implicitly (see evaluate)
        per_individual = exact_jit(
            jax.vmap(jax.vmap(task.rollout, in_axes=(None, 0)), in_axes=(0, None))
        )(dense, keys)
        batched = exact_jit(task._rollouts)(dense, keys)
    assert (
        set(per_individual)
        == set(batched)
        == {"return", "steps", "final_xy", "feet_contact_steps", "observations", "actions", "alive"}
    )
    for name in per_individual:
        assert batched[name].shape == per_individual[name].shape, name
        got, want = np.asarray(batched[name]), np.asarray(per_individual[name])
        if episodes == 1 and np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert batched["observations"].shape == (3, episodes, 20, task.observation_size)


def test_brax_determinism(hopper):
    evaluate, population, result = hopper
    again = evaluate(jax.random.key(0), population)
    for a, b in zip(
        jax.tree_util.tree_leaves(result), jax.tree_util.tree_leaves(again), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Common random numbers: an individual's result does not depend on the rest of the batch.
    swapped = evaluate(jax.random.key(0), population[jnp.array([3, 2, 1, 0])])
    np.testing.assert_array_equal(np.asarray(swapped.fitness), np.asarray(result.fitness)[::-1])


def test_brax_alive_mask_matches_manual_loop(pendulum):
    evaluate, population, result = pendulum
    lengths = np.asarray(result.extras["episode_length"])
    assert np.any(lengths < PENDULUM.episode_length), "no episode terminated: test is vacuous"
    env, spec = PENDULUM.env, PENDULUM.spec
    episode_key = jax.random.split(jax.random.key(3), PENDULUM.num_episodes)[0]
    with jax.numpy_rank_promotion("allow"):  # brax broadcasts implicitly
        reset, step = jax.jit(env.reset), jax.jit(env.step)
        for index in range(POPULATION):
            individual = population[index]
            state, total, count = reset(episode_key), 0.0, 0
            for _ in range(PENDULUM.episode_length):
                action = spec.apply(individual.params, individual.masks, state.obs)
                state = step(state, action)
                total += float(state.reward)
                count += 1
                if float(state.done) > 0:
                    break
            assert lengths[index] == count
            np.testing.assert_allclose(float(result.fitness[index]), total, rtol=1e-5)
    assert_in_bounds(PENDULUM, result.descriptors)
    assert PENDULUM.descriptor_names == ("sparsity", "disconnected_fraction")
