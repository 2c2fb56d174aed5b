"""The reach-and-avoid task on a real robot arm (tasks/robot_arm.py): loading a serial arm from
an MJCF file or by ``mujoco-menagerie`` name, the scene edits (collision capsules, pillars), the
start pose, and the errors.

``mujoco-menagerie`` downloads a robot's meshes on first use, which cannot happen here: the
tests write a small arm of primitive geoms (three hinge joints on position servos, a gripper
slide, an ``attachment_site``) and serve it the way Menagerie serves a checkout
(``MENAGERIE_ROOT``). The geometry is checked with MuJoCo's own C kinematics; the MJX rollout
(a ~30 s compile) is ``slow``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synprune_jax.tasks import ReachAvoidArm
from synprune_jax.tasks.robot_arm import load_robot_arm, menagerie_arms, robot_spec
from synprune_jax.variation import random_population

mujoco = pytest.importorskip("mujoco")
pytest.importorskip("mujoco_menagerie")

# a shoulder 0.2 m up; links of 0.3 (up), 0.3 and 0.25 m (forward); joint 3's range excludes
# 0, so the start pose clips it to -0.1; the slide joint (a gripper) is not controlled
ARM_XML = """<mujoco model="test_arm">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast"/>
  <default><joint armature="0.05" damping="2"/></default>
  <worldbody>
    <body name="base" pos="0 0 0.1">
      <geom type="cylinder" size="0.05 0.05"/>
      <body name="l1" pos="0 0 0.1">
        <joint name="j1" axis="0 0 1" range="-3 3"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.3" size="0.03"/>
        <body name="l2" pos="0 0 0.3">
          <joint name="j2" axis="0 1 0" range="-2 2"/>
          <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03"/>
          <body name="l3" pos="0.3 0 0">
            <joint name="j3" axis="0 1 0" range="-2.5 -0.1"/>
            <geom type="capsule" fromto="0 0 0 0.25 0 0" size="0.025"/>
            <site name="attachment_site" pos="0.25 0 0"/>
            <body name="finger" pos="0.25 0 0">
              <joint name="slide" type="slide" axis="0 1 0" range="0 0.02"/>
              <geom type="box" size="0.01 0.01 0.01"/>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position joint="j1" kp="100" kv="5" ctrlrange="-3 3"/>
    <position joint="j2" kp="100" kv="5" ctrlrange="-2 2"/>
    <position joint="j3" kp="50" kv="3" ctrlrange="-2.5 -0.1"/>
    <position joint="slide" kp="10"/>
  </actuator>
</mujoco>
"""


@pytest.fixture(scope="module")
def arm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("robot") / "arm.xml"
    path.write_text(ARM_XML)
    return str(path)


def _world_points(model, qpos, names=("l1", "l2", "l3")):
    """Chain body origins and the attachment site from MuJoCo's C forward kinematics."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    bodies = [data.xpos[model.body(name).id] for name in names]
    return np.stack([*bodies, data.site_xpos[model.site("attachment_site").id]])


def test_a_serial_arm_loads_with_its_servos_chain_start_pose_and_reach(arm_file):
    arm, model = load_robot_arm(arm_file, 1, 0.05)
    assert arm.num_controls == 3 and arm.actuators == (0, 1, 2)  # not the gripper's slide
    assert arm.joint_qpos == (0, 1, 2)
    assert [model.body(b).name for b in arm.chain_bodies] == ["l1", "l2", "l3"]
    assert model.body(arm.end_body).name == "l3" and arm.end_offset == (0.25, 0.0, 0.0)
    assert arm.ctrl_low == (-3.0, -2.0, -2.5) and arm.ctrl_high == (3.0, 2.0, -0.1)
    np.testing.assert_allclose(arm.home_qpos, [0.0, 0.0, -0.1, 0.0])  # j3 clipped into range
    np.testing.assert_allclose(arm.home_ctrl, [0.0, 0.0, -0.1, 0.0])
    np.testing.assert_allclose(arm.shoulder, [0.0, 0.0, 0.2], atol=1e-12)
    assert arm.reach == pytest.approx(0.3 + 0.3 + 0.25)
    task = ReachAvoidArm(backend="mjx", dims=3, robot=arm_file, num_obstacles=2)
    assert task.length == pytest.approx(0.85) and task.num_controls == 3
    # [cos q, sin q (3), tip (3), target (3), pillars (2 x [x, y, r])]
    assert task.observation_size == 6 + 3 + 3 + 6 == task.spec.input_size
    assert task.spec.output_size == 3


def test_a_home_keyframe_is_the_start_pose(tmp_path):
    path = tmp_path / "arm.xml"
    path.write_text(
        ARM_XML.replace(
            "</actuator>",
            '</actuator><keyframe><key name="home" qpos="0.5 -0.4 -1.0 0.01" '
            'ctrl="0 0 0 0.02"/></keyframe>',
        )
    )
    arm, _ = load_robot_arm(str(path), 0, 0.05)
    np.testing.assert_allclose(arm.home_qpos, [0.5, -0.4, -1.0, 0.01])
    # the servos hold the pose; the gripper keeps the keyframe's control
    np.testing.assert_allclose(arm.home_ctrl, [0.5, -0.4, -1.0, 0.02])


def test_links_collide_with_pillars_only_through_the_added_capsules(arm_file):
    arm, model = load_robot_arm(arm_file, 1, 0.05)
    capsules = [g for g in range(model.ngeom) if model.geom(g).name.startswith("reach_link")]
    assert len(capsules) == 3  # l1 -> l2, l2 -> l3, l3 -> the site
    pillars = [g for g in range(model.ngeom) if model.body_mocapid[model.geom_bodyid[g]] >= 0]
    assert len(pillars) == 1 and model.geom_conaffinity[pillars[0]] == 2
    own = [g for g in range(model.ngeom) if g not in capsules + pillars]
    assert all(model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0 for g in own)
    data = mujoco.MjData(model)
    qpos = np.array([0.7, -0.5, -1.2, 0.0])
    data.qpos[:] = qpos
    # the capsules follow the links: their ends are the chain points
    points = _world_points(model, qpos)
    mujoco.mj_kinematics(model, data)
    for index, geom in enumerate(capsules):
        half = model.geom_size[geom, 1]
        centre, axis = data.geom_xpos[geom], data.geom_xmat[geom].reshape(3, 3)[:, 2]
        ends = sorted([centre - half * axis, centre + half * axis], key=lambda p: p[2])
        expected = sorted([points[index], points[index + 1]], key=lambda p: p[2])
        np.testing.assert_allclose(ends, expected, atol=1e-9)
    # a pillar through the middle of the second link: contacts with negative distance
    middle = (points[1] + points[2]) / 2
    data.mocap_pos[0] = [middle[0], middle[1], 0.0]
    mujoco.mj_forward(model, data)
    assert data.ncon >= 1 and min(data.contact.dist[: data.ncon]) < 0
    touching = {int(g) for c in data.contact[: data.ncon] for g in (c.geom1, c.geom2)}
    assert touching & set(capsules)
    # far away: none (the robot's own geoms do not collide with each other either)
    data.mocap_pos[0] = [5.0, 5.0, 0.0]
    mujoco.mj_forward(model, data)
    assert data.ncon == 0


def test_robot_arms_by_menagerie_name_load_from_menagerie_root(arm_file, tmp_path, monkeypatch):
    assert {"franka_emika_panda", "kuka_iiwa_14"} <= set(menagerie_arms())
    checkout = tmp_path / "menagerie" / "kuka_iiwa_14"
    checkout.mkdir(parents=True)
    (checkout / "iiwa14.xml").write_text(ARM_XML)  # a stand-in in a checkout's layout
    monkeypatch.setenv("MENAGERIE_ROOT", str(tmp_path / "menagerie"))
    spec = robot_spec("kuka_iiwa_14")  # the default model, iiwa14.xml
    assert spec.compile().nu == 4
    with pytest.raises(ValueError, match="no entry point 'nope'; its entry points: iiwa14, scene"):
        robot_spec("kuka_iiwa_14/nope")
    task = ReachAvoidArm(backend="mjx", dims=3, robot="kuka_iiwa_14", num_obstacles=1)
    assert task.robot_arm.reach == pytest.approx(0.85)


def test_a_robot_that_cannot_be_fetched_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("MENAGERIE_ROOT", raising=False)
    monkeypatch.setenv("MENAGERIE_CACHE_DIR", str(tmp_path / "cache"))
    # where the archives would come from: a folder that does not exist (fails at once, where
    # an unreachable host would be retried with back-off)
    monkeypatch.setenv("MENAGERIE_BASE_URL", (tmp_path / "no_server").as_uri())
    with pytest.raises(ValueError, match="cannot load franka_emika_panda .*MENAGERIE_ROOT"):
        robot_spec("franka_emika_panda")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda f: ReachAvoidArm(dims=3, robot=f), "needs backend='mjx' and dims=3"),
        (lambda f: ReachAvoidArm(backend="mjx", robot=f), "needs backend='mjx' and dims=3"),
        (
            lambda f: ReachAvoidArm(backend="mjx", dims=3, robot="franka_emka_panda"),
            "unknown robot 'franka_emka_panda'; mujoco-menagerie's arms: .*franka_emika_panda",
        ),
        (
            lambda f: ReachAvoidArm(backend="mjx", dims=3, robot="/no/such/arm.xml"),
            "robot file '/no/such/arm.xml' does not exist",
        ),
    ],
)
def test_robot_arm_errors_are_one_clear_line(arm_file, make, message):
    with pytest.raises(ValueError, match=message):
        make(arm_file)


@pytest.mark.parametrize(
    "edit, message",
    [
        (('<position joint="j2" kp="100" kv="5"', '<motor joint="j2"'), "is not a position servo"),
        (('<body name="base" pos="0 0 0.1">', '<body name="base"><freejoint/>'), "fixed base"),
    ],
)
def test_unsuitable_models_are_refused(tmp_path, edit, message):
    path = tmp_path / "arm.xml"
    assert edit[0] in ARM_XML
    path.write_text(ARM_XML.replace(*edit))
    with pytest.raises(ValueError, match=message):
        load_robot_arm(str(path), 0, 0.05)


def test_a_branching_model_is_not_a_serial_arm(tmp_path):
    # j3 moved to a sibling of l2: the controlled bodies no longer form one chain
    xml = ARM_XML.replace(
        '<position joint="j3" kp="50" kv="3" ctrlrange="-2.5 -0.1"/>',
        '<position joint="j4" kp="50"/>',
    ).replace(
        '<body name="l2" pos="0 0 0.3">',
        '<body name="side" pos="0 0.1 0.3"><joint name="j4" axis="1 0 0"/>'
        '<geom type="sphere" size="0.02"/></body><body name="l2" pos="0 0 0.3">',
    )
    path = tmp_path / "arm.xml"
    path.write_text(xml)
    with pytest.raises(ValueError, match="is not a serial arm"):
        load_robot_arm(str(path), 0, 0.05)


@pytest.mark.slow  # MJX compiles the rollout for ~30 s
def test_robot_arm_rollout_measures_through_mjx(arm_file):
    task = ReachAvoidArm(
        backend="mjx",
        dims=3,
        robot=arm_file,
        num_obstacles=1,
        episode_length=4,
        num_episodes=1,
        hidden_sizes=(4,),
        descriptors=("sparsity", "final_end_effector", "obstacle_distance"),
    )
    state = task._reset(jax.random.key(0))
    arm, model = load_robot_arm(arm_file, 1, task.length * sum(task.obstacle_radius) / 2)
    # MJX's points at the start pose are MuJoCo's, relative to the shoulder
    expected = _world_points(model, np.asarray(arm.home_qpos)) - np.asarray(arm.shoulder)
    np.testing.assert_allclose(task._mjx_points(state["data"]), expected, atol=1e-5)
    np.testing.assert_allclose(state["tip"], expected[-1], atol=1e-5)
    # the clearance is MuJoCo's distance between the link capsules and the pillar
    moved = task._step(state, jnp.array([0.5, -0.5, 0.3]), None)
    contact = moved["data"]._impl.contact.dist
    assert float(moved["clearance"]) == pytest.approx(float(jnp.min(contact)), abs=1e-5)
    assert float(moved["clearance"]) > 0 and not bool(moved["collided"])
    # a pillar through the second link: the next step collides (MuJoCo's contact)
    middle = (expected[1] + expected[2]) / 2
    pillar = jnp.array([[middle[0], middle[1], float(state["obstacles"][0, 2])]])
    shoulder = np.asarray(arm.shoulder, np.float32)
    data = state["data"].replace(mocap_pos=jnp.array([[middle[0], middle[1], 0.0]] + shoulder))
    after = task._step({**state, "data": data, "obstacles": pillar}, jnp.zeros(3), None)
    assert bool(after["collided"]) and float(after["clearance"]) < 0
    population = random_population(jax.random.key(0), task, 2, jnp.zeros(2), forward_prune=False)
    result = jax.jit(task.evaluate)(jax.random.key(1), population)
    assert np.all(np.isfinite(np.asarray(result.fitness)))
    low, high = task.descriptor_bounds()
    descriptors = np.asarray(result.descriptors)
    assert np.all((descriptors >= low) & (descriptors <= high))
