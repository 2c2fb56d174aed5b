"""The environment suites beyond Brax: the reach-and-avoid arm, gymnax, MuJoCo Playground, and the
rollout they share with Brax (tasks/rollout.py).

Small and fast: a 2-joint reach arm, gymnax Pendulum / CartPole, Playground CartpoleBalance over
a few steps. Each rollout is checked against a hand-written step loop, masks that cut every
input must give constant actions, descriptors equal hand-computed values.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax import config as config_lib
from synprune_jax import masks as masks_lib
from synprune_jax.experiments import get_experiment
from synprune_jax.tasks import (
    EpisodeTask,
    GymnaxTask,
    PlaygroundTask,
    ReachAvoidArm,
    clearance,
    joint_positions,
    joint_positions_3d,
    make_task,
    task_section,
)
from synprune_jax.types import Population
from synprune_jax.variation import random_population


def _population(task, size=3, seed=0):
    return random_population(jax.random.key(seed), task, size, jnp.zeros(2), forward_prune=False)


def _hand_rollout(task: EpisodeTask, dense, key):
    """The episode of one individual, step by step in Python (what EpisodeTask.rollout means)."""
    if task.step_keys:
        key, reset_key = jax.random.split(key)
    else:
        reset_key = key
    state = task._reset(reset_key)
    alive, total, steps, actions = True, 0.0, 0, []
    for _ in range(task.episode_length):
        action = task.policy(dense, task._observation(state))
        actions.append(np.asarray(action))
        step_key = None
        if task.step_keys:
            key, step_key = jax.random.split(key)
        state = task._step(state, action, step_key)
        if alive:
            total += float(task._reward(state))
            steps += 1
            last = state
        alive = alive and not bool(task._done(state))
    return total, steps, last, np.stack(actions)


# ----- the reach-and-avoid arm: geometry ------------------------------------------------------


def test_joint_positions_are_exact_for_right_angles():
    points = joint_positions(jnp.array([math.pi / 2, -math.pi / 2]), jnp.array([0.5, 0.5]))
    np.testing.assert_allclose(points, [[0, 0], [0, 0.5], [0.5, 0.5]], atol=1e-7)
    points = joint_positions(jnp.zeros(3), jnp.array([0.2, 0.3, 0.5]))
    np.testing.assert_allclose(points, [[0, 0], [0.2, 0], [0.5, 0], [1.0, 0]], atol=1e-7)


def test_clearance_is_the_segment_circle_distance():
    link = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    above = jnp.array([[0.5, 0.3, 0.1]])  # closest point (0.5, 0): 0.3 - 0.1
    beyond = jnp.array([[1.5, 0.0, 0.1]])  # closest point the tip (1, 0): 0.5 - 0.1
    across = jnp.array([[0.5, 0.05, 0.1]])  # the link passes through: 0.05 - 0.1
    assert float(clearance(link, above)) == pytest.approx(0.2, abs=1e-6)
    assert float(clearance(link, beyond)) == pytest.approx(0.4, abs=1e-6)
    assert float(clearance(link, across)) == pytest.approx(-0.05, abs=1e-6)
    both = jnp.concatenate([above, beyond])  # the nearer obstacle counts
    assert float(clearance(link, both)) == pytest.approx(0.2, abs=1e-6)


def test_the_3d_arm_turns_its_plane_and_clears_spheres():
    lengths = jnp.array([0.5, 0.5])
    # yaw a quarter turn, the first link straight up: the whole arm stands on the z axis
    points = joint_positions_3d(jnp.array([math.pi / 2, math.pi / 2, 0.0]), lengths)
    np.testing.assert_allclose(points, [[0, 0, 0], [0, 0, 0.5], [0, 0, 1.0]], atol=1e-7)
    # yaw a quarter turn, flat: along +y
    points = joint_positions_3d(jnp.array([math.pi / 2, 0.0, 0.0]), lengths)
    np.testing.assert_allclose(points, [[0, 0, 0], [0, 0.5, 0], [0, 1.0, 0]], atol=1e-7)
    sphere = jnp.array([[0.0, 0.5, 0.3, 0.1]])  # above the first joint: 0.3 - 0.1
    assert float(clearance(points, sphere)) == pytest.approx(0.2, abs=1e-6)
    task = ReachAvoidArm(
        num_joints=2,
        dims=3,
        num_obstacles=2,
        episode_length=6,
        hidden_sizes=(4,),
        num_episodes=1,
        descriptors=("final_end_effector", "obstacle_distance"),
    )
    assert task.num_controls == 3 and task.spec.input_size == 2 * 3 + 6 + 2 * 4
    assert task.descriptor_names == (
        "final_end_effector_x",
        "final_end_effector_y",
        "final_end_effector_z",
        "obstacle_distance",
    )
    target, obstacles = task.scene(jax.random.key(3))
    assert target.shape == (3,) and obstacles.shape == (2, 4)
    result = jax.jit(task.evaluate)(jax.random.key(0), _population(task, 2))
    assert result.descriptors.shape == (2, 4)
    assert np.all(np.isfinite(np.asarray(result.fitness)))
    with pytest.raises(ValueError, match="planar"):
        ReachAvoidArm(dims=3, backend="mjx")


def test_reach_scene_puts_the_obstacle_between_the_arm_and_the_target():
    task = ReachAvoidArm(num_joints=3, num_obstacles=2)
    for seed in range(20):
        target, obstacles = task.scene(jax.random.key(seed))
        distance = float(jnp.linalg.norm(target))
        assert 0.5 <= distance <= 0.9 + 1e-6
        assert 0.5 * math.pi - 1e-5 <= abs(math.atan2(target[1], target[0])) <= 0.9 * math.pi
        for x, y, radius in np.asarray(obstacles):
            assert 0.08 <= radius <= 0.15 + 1e-6
            assert np.sign(y) == np.sign(float(target[1]))  # on the target's side
            assert math.hypot(x - target[0], y - target[1]) > radius  # the target stays free
        # the stretched arm at the start touches nothing
        assert float(clearance(joint_positions(jnp.zeros(3), jnp.full(3, 1 / 3)), obstacles)) > 0


def test_reach_rollout_equals_the_step_loop_and_its_descriptors():
    task = ReachAvoidArm(
        num_joints=2,
        episode_length=30,
        num_episodes=2,
        hidden_sizes=(8,),
        tolerance=0.2,
        keep_trajectories=True,
        descriptors=("sparsity", "final_end_effector", "obstacle_distance"),
    )
    assert task.spec.input_size == 2 * 2 + 4 + 3 and task.spec.output_size == 2
    population = _population(task, 3)
    key = jax.random.key(7)
    result = jax.jit(task.evaluate)(key, population)
    dense = jax.vmap(masks_lib.apply_masks)(population.params, population.masks)
    for i in range(3):
        one = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], dense)
        returns, tips, gaps, successes = [], [], [], []
        for e, episode_key in enumerate(jax.random.split(key, 2)):
            total, steps, last, actions = _hand_rollout(task, one, episode_key)
            returns.append(total)
            tips.append(np.asarray(last["tip"]))
            successes.append(float(last["done"]))
            # the smallest clearance over the reset state and the alive steps
            state, gap = task._reset(episode_key), []
            gap.append(float(state["clearance"]))
            for t in range(steps):
                state = task._step(state, jnp.asarray(actions[t]), None)
                gap.append(float(state["clearance"]))
            gaps.append(min(gap))
            np.testing.assert_allclose(
                result.extras["actions"][i, e, :steps], actions[:steps], atol=1e-5
            )
        assert float(result.fitness[i]) == pytest.approx(np.mean(returns), abs=1e-4)
        tip = np.clip(np.mean(tips, axis=0), -1, 1)
        np.testing.assert_allclose(result.descriptors[i, 1:3], tip, atol=1e-5)
        assert float(result.descriptors[i, 3]) == pytest.approx(
            float(np.clip(np.min(gaps), 0, 1)), abs=1e-5
        )
        assert float(result.extras["success"][i]) == pytest.approx(np.mean(successes))
    sparsity = 1 - result.extras["density"]
    np.testing.assert_allclose(result.descriptors[:, 0], sparsity, atol=1e-6)


def test_reaching_the_target_ends_the_episode_with_the_bonus():
    # a target drawn where the stretched arm's tip already is: the first step reaches it
    task = ReachAvoidArm(num_joints=2, num_obstacles=0, episode_length=5, tolerance=0.05)
    state = task._reset(jax.random.key(0))
    state = {**state, "target": jnp.array([1.0, 0.0]), "distance": jnp.asarray(0.01)}
    after = task._step(state, jnp.zeros(2), None)
    # progress 0.01 (the distance before) - 0 (after), and the bonus
    assert bool(after["done"]) and float(after["reward"]) == pytest.approx(0.01 + 1.0, abs=1e-6)
    # a link inside an obstacle is a collision, and costs the penalty (no progress: no move)
    task = ReachAvoidArm(num_joints=2, num_obstacles=1, episode_length=5, collision_penalty=0.5)
    state = task._reset(jax.random.key(0))
    blocked = {**state, "obstacles": jnp.array([[1.0, 0.05, 0.1]])}
    after = task._step(blocked, jnp.zeros(2), None)
    assert bool(after["collided"]) and not bool(after["done"])
    assert float(after["reward"]) == pytest.approx(-0.5, abs=1e-6)


# ----- masks that cut every input -------------------------------------------------------------


def _cut_inputs(population: Population) -> Population:
    masks = population.masks
    layers = dict(masks["params"])
    layers["Dense_0"] = {**layers["Dense_0"], "kernel": jnp.zeros_like(layers["Dense_0"]["kernel"])}
    return population.replace(masks={**masks, "params": layers})


@pytest.mark.parametrize(
    "make",
    [
        lambda: ReachAvoidArm(
            num_joints=2,
            episode_length=8,
            hidden_sizes=(4,),
            num_episodes=1,
            keep_trajectories=True,
        ),
        pytest.param(
            lambda: GymnaxTask(
                "Pendulum-v1", episode_length=8, hidden_sizes=(4,), keep_trajectories=True
            ),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["reach", "gymnax"],
)
def test_masks_that_cut_every_input_give_constant_actions(make):
    task = make()
    population = _cut_inputs(_population(task, 2))
    result = jax.jit(task.evaluate)(jax.random.key(1), population)
    actions = np.asarray(result.extras["actions"])  # [P, E, T, act]
    np.testing.assert_array_equal(actions, np.broadcast_to(actions[:, :, :1], actions.shape))


# ----- gymnax ---------------------------------------------------------------------------------


def test_gymnax_continuous_actions_are_scaled_to_the_bounds_and_discrete_ones_are_argmax():
    pendulum = GymnaxTask("Pendulum-v1")  # torque in [-2, 2]
    np.testing.assert_allclose(pendulum._action(jnp.array([1.0])), 2.0)
    np.testing.assert_allclose(pendulum._action(jnp.array([-1.0])), -2.0)
    np.testing.assert_allclose(pendulum._action(jnp.array([0.5])), 1.0)
    cartpole = GymnaxTask("CartPole-v1")
    assert cartpole.spec.output_size == 2 and cartpole.discrete
    assert int(cartpole._action(jnp.array([-0.3, 0.2]))) == 1


@pytest.mark.parametrize(
    "env_name", ["Pendulum-v1", pytest.param("CartPole-v1", marks=pytest.mark.slow)]
)
def test_gymnax_rollout_equals_the_step_loop(env_name):
    task = GymnaxTask(env_name, episode_length=40, num_episodes=2, hidden_sizes=(4,))
    population = _population(task, 2, seed=3)
    key = jax.random.key(5)
    result = jax.jit(task.evaluate)(key, population)
    dense = jax.vmap(masks_lib.apply_masks)(population.params, population.masks)
    for i in range(2):
        one = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], dense)
        runs = [_hand_rollout(task, one, k) for k in jax.random.split(key, 2)]
        assert float(result.fitness[i]) == pytest.approx(
            np.mean([r[0] for r in runs]), rel=1e-5, abs=1e-4
        )
        assert float(result.extras["episode_length"][i]) == np.mean([r[1] for r in runs])
    if env_name == "CartPole-v1":  # a pole falls: episodes end before 40 steps for some
        assert float(jnp.min(result.extras["episode_length"])) < 40


# ----- MuJoCo Playground ------------------------------------------------------------------------


@pytest.mark.slow  # MJX compiles for ~30 s in the suite's cheap mode
def test_playground_rollout_equals_the_step_loop():
    task = PlaygroundTask(
        "CartpoleBalance", episode_length=6, hidden_sizes=(4,), descriptors=("sparsity", "final_xy")
    )
    assert (task.spec.input_size, task.spec.output_size) == (5, 1)
    population = _population(task, 2)
    key = jax.random.key(2)
    result = jax.jit(task.evaluate)(key, population)
    dense = jax.vmap(masks_lib.apply_masks)(population.params, population.masks)
    step = jax.jit(task._step)
    for i in range(2):
        one = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], dense)
        with jax.numpy_rank_promotion("allow"):  # Playground broadcasts implicitly
            state, total = task._reset(jax.random.split(key, 1)[0]), 0.0
            for _ in range(6):
                state = step(state, task.policy(one, state.obs), None)
                total += float(state.reward)
        assert float(result.fitness[i]) == pytest.approx(total, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(result.descriptors[i, 1:], state.data.xpos[1, :2], atol=1e-5)


def test_playground_feet_are_the_foot_geoms_and_the_floor_is_the_plane():
    import mujoco

    from synprune_jax.tasks.playground_task import feet, make_env

    labels, foot_ids, floor_ids = feet("CheetahRun")
    assert labels == ("bfoot", "ffoot")
    model = make_env("CheetahRun").mj_model
    assert [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, int(i)) for i in floor_ids] == [
        "ground"
    ]
    assert feet("CartpoleBalance")[0] == ()
    task = PlaygroundTask("CheetahRun", descriptors=("feet_contact",))
    assert task.descriptor_names == ("feet_contact_bfoot", "feet_contact_ffoot")
    with pytest.raises(ValueError, match="feet_contact"):
        PlaygroundTask("CartpoleBalance", descriptors=("feet_contact",))


@pytest.mark.slow  # MJX hopper compiles for half a minute in the suite's cheap mode
def test_playground_feet_contact_counts_floor_contacts():
    # zero policies (zero actions): the fraction of steps the foot touches equals a step loop's
    task = PlaygroundTask(
        "HopperStand", episode_length=80, hidden_sizes=(4,), descriptors=("feet_contact",)
    )
    population = _population(task, 1)
    population = population.replace(
        params=jax.tree_util.tree_map(jnp.zeros_like, population.params)
    )
    evaluate, counts = jax.jit(task.evaluate), []
    step = jax.jit(lambda state: task._step(state, jnp.zeros(task.spec.output_size), None))
    summed = jax.jit(task._summed)
    for seed in range(3):
        result = evaluate(jax.random.key(seed), population)
        with jax.numpy_rank_promotion("allow"):
            state, count = task._reset(jax.random.split(jax.random.key(seed), 1)[0]), 0.0
            for _ in range(80):
                state = step(state)
                count += float(summed(state)["feet_contact_steps"][0])
        assert float(result.descriptors[0, 0]) == pytest.approx(count / 80, abs=1e-6)
        counts.append(count)
    assert max(counts) > 0  # it lands in some episodes (in others it ends on its back)


# ----- names, errors and the CLI ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: GymnaxTask("Nope-v0"), ["unknown gymnax env 'Nope-v0'", "Pendulum-v1"]),
        (lambda: GymnaxTask("Pendulum-v1", backend="spring"), ["unknown gymnax backend", "'jax'"]),
        (lambda: PlaygroundTask("Nope"), ["unknown Playground env 'Nope'", "CartpoleBalance"]),
        (
            lambda: PlaygroundTask("CartpoleBalance", backend="mjx"),
            ["unknown Playground backend 'mjx'", "'warp'"],
        ),
        (lambda: PlaygroundTask("CartpoleBalance", backend="warp"), ["needs an NVIDIA GPU"]),
        (lambda: ReachAvoidArm(backend="mujoco"), ["unknown reach backend 'mujoco'"]),
        (lambda: ReachAvoidArm(num_joints=2, link_lengths=(1.0,)), ["link_lengths"]),
        (lambda: ReachAvoidArm(descriptors=("final_xy",)), ["final_xy", "obstacle_distance"]),
        (lambda: GymnaxTask("Pendulum-v1", descriptors=("final_xy",)), ["final_xy", "sparsity"]),
    ],
    ids=[
        "gymnax-env",
        "gymnax-backend",
        "playground-env",
        "playground-backend",
        "warp-on-cpu",
        "reach-backend",
        "reach-lengths",
        "reach-descriptor",
        "gymnax-descriptor",
    ],
)
def test_unknown_names_give_the_valid_ones(make, words):
    with pytest.raises(ValueError) as caught:
        make()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_playground_robot_envs_fail_offline_with_a_clear_error(monkeypatch):
    from synprune_jax.tasks import playground_task

    registry = playground_task._registry()

    def load(name, config_overrides=None):
        raise RuntimeError("Command '['git', 'clone']' returned non-zero exit status 128.")

    monkeypatch.setattr(registry, "load", load)
    playground_task.make_env.cache_clear()
    try:
        with pytest.raises(
            ValueError,
            match="Go1JoystickFlatTerrain.*clone mujoco_menagerie from git.*needs the network",
        ):
            playground_task.make_env("Go1JoystickFlatTerrain")
    finally:
        playground_task.make_env.cache_clear()


def test_task_name_override_brings_that_tasks_section():
    config = get_experiment("es-prune").default_config()  # a Brax task section
    changed = config_lib.apply_overrides(
        config, ["task.env_name=Pendulum-v1", "task.name=gymnax", "task.episode_length=20"]
    )
    assert changed["task"] == {
        **task_section("gymnax"),
        "env_name": "Pendulum-v1",
        "episode_length": 20,
        "devices": config["task"]["devices"],
    }
    reach = config_lib.apply_overrides(
        get_experiment("me-prune").default_config(), ["task.name=reach", "task.num_joints=2"]
    )
    assert reach["task"]["num_joints"] == 2 and "env_name" not in reach["task"]
    with pytest.raises(config_lib.ConfigError, match="unknown task 'nope'"):
        config_lib.apply_overrides(config, ["task.name=nope"])
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'task.genotype'"):
        config_lib.apply_overrides(config, ["task.name=gymnax", "task.genotype=mlp"])


@pytest.mark.parametrize(
    "name, overrides",
    [
        (
            "es-prune",
            [
                "task.name=reach",
                "task.num_joints=2",
                "task.episode_length=10",
                "task.hidden_sizes=[4]",
                "es.population_size=4",
                "task.devices=1",
            ],
        ),
        pytest.param(
            "ga-pruned-init",
            [
                "task.name=gymnax",
                "task.env_name=Pendulum-v1",
                "task.episode_length=10",
                "task.hidden_sizes=[4]",
                "ga.population_size=4",
                "task.devices=1",
            ],
            marks=pytest.mark.slow,
        ),
    ],
    ids=["es-reach", "ga-gymnax"],
)
def test_the_rl_algorithms_run_on_the_new_suites(name, overrides, tmp_path):
    from synprune_jax import runner

    config = config_lib.apply_overrides(
        get_experiment(name).default_config(),
        [*overrides, "run.num_generations=2", "run.progress=false"],
    )
    config["experiment"] = name
    built = get_experiment(name).build(config)
    config_lib.save(config, tmp_path / "config.json")
    state, metrics = runner.run(built.algorithm, tmp_path, built.run_config, hyper=built.hyper)
    assert len(metrics["generation"]) == 2
    assert all(np.all(np.isfinite(values)) for values in metrics.values())


def test_make_task_knows_every_suite():
    assert isinstance(make_task("reach", num_joints=2), ReachAvoidArm)
    assert isinstance(make_task("gymnax", env_name="Pendulum-v1"), GymnaxTask)


# ----- the reach arm in MuJoCo (MJX) ---------------------------------------------------------


def test_mjx_arm_model_has_the_kinematic_arms_geometry():
    # MuJoCo's own forward kinematics of the model (C, no compile) against joint_positions
    import mujoco

    task = ReachAvoidArm(num_joints=3, link_lengths=(0.5, 0.3, 0.2), num_obstacles=1, backend="mjx")
    model, _ = task._model()
    data = mujoco.MjData(model)
    angles = np.array([0.3, -1.1, 0.7])
    data.qpos[:] = angles
    mujoco.mj_forward(model, data)
    points = np.concatenate([data.xpos[1:4, :2], data.site_xpos[:1, :2]])
    np.testing.assert_allclose(
        points, joint_positions(jnp.asarray(angles), jnp.array([0.5, 0.3, 0.2])), atol=1e-6
    )
    assert model.nmocap == 1 and model.nu == 3
    # a link and a pillar overlapping: one contact with negative distance
    data.mocap_pos[0] = [0.6, 0.0, 0.0]
    data.qpos[:] = 0
    mujoco.mj_forward(model, data)
    assert data.ncon >= 1 and min(data.contact.dist[: data.ncon]) < 0


@pytest.mark.slow  # MJX compiles for ~30 s in the suite's cheap mode
def test_mjx_arm_collides_through_mujoco_contacts_and_evaluates():
    task = ReachAvoidArm(
        num_joints=2,
        num_obstacles=1,
        backend="mjx",
        episode_length=4,
        num_episodes=1,
        hidden_sizes=(4,),
        descriptors=("sparsity", "obstacle_distance"),
    )
    state = task._reset(jax.random.key(0))
    assert not bool(state["collided"]) and float(state["clearance"]) > 0
    # a pillar on the second link: the next step is a collision (MuJoCo's contact)
    data = state["data"].replace(mocap_pos=jnp.array([[0.75, 0.0, 0.0]]))
    after = task._step(
        {**state, "data": data, "obstacles": jnp.array([[0.75, 0.0, 0.115]])}, jnp.zeros(2), None
    )
    assert bool(after["collided"]) and float(after["clearance"]) < 0
    assert float(after["reward"]) < 0  # the penalty
    result = jax.jit(task.evaluate)(jax.random.key(1), _population(task, 2))
    assert np.all(np.isfinite(np.asarray(result.fitness)))
    low, high = task.descriptor_bounds()
    descriptors = np.asarray(result.descriptors)
    assert np.all((descriptors >= low) & (descriptors <= high))
