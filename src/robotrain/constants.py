"""Names shared by data, policies, training, evaluation and reports.

Batch keys follow LeRobot so that datasets and checkpoints move between the two projects
unchanged. Metric keys are namespaced (`train/...`, `eval/...`) and used by train.py,
evaluate.py and report.py alike.
"""

from __future__ import annotations

# --- batch / dataset keys (LeRobot names) -------------------------------------------
OBS_PREFIX = "observation."
OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
OBS_IMAGES_PREFIX = "observation.images."
# ImageNet per-channel RGB statistics; lerobot-train (dataset.use_imagenet_stats, default
# true) puts them in place of every camera's mean/std before normalising.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ACTION = "action"
TASK = "task"
TIMESTAMP = "timestamp"
FRAME_INDEX = "frame_index"
EPISODE_INDEX = "episode_index"
INDEX = "index"
TASK_INDEX = "task_index"
PAD_SUFFIX = "_is_pad"
ACTION_IS_PAD = ACTION + PAD_SUFFIX

# Columns every LeRobot frame carries besides the features a robot defines.
DEFAULT_FRAME_COLUMNS = (TIMESTAMP, FRAME_INDEX, EPISODE_INDEX, INDEX, TASK_INDEX)


def pad_key(key: str) -> str:
    """The boolean mask name LeRobot uses for a temporal window of `key`."""
    return key + PAD_SUFFIX


FRAME_INDEX_PREFIX = "frame_index."


def frame_index_key(camera_key: str) -> str:
    """Batch key for a camera's frame-cache row indices (datasets built with frames="indices")."""
    return FRAME_INDEX_PREFIX + camera_key


def is_image_key(key: str) -> bool:
    return key.startswith(OBS_IMAGES_PREFIX)


# --- metric keys: metrics.jsonl lines, written by training/loop.py and ----------------
# evaluation/offline.py, read by reports/. Users' runs hold these names on disk: renaming
# one makes `robotrain report` blind to every older run.
LOGGED_AT = "time"
"""Every metrics.jsonl line: the wall clock (seconds since the epoch) when it was written."""
TRAIN_PREFIX = "train/"
# train/<name> is the mean over a log interval of what train_step returns under <name>:
# "loss", the policy's loss components (e.g. train/l1_loss), "grad_norm", "lr".
TRAIN_LOSS = "train/loss"
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_LR = "train/lr"
TRAIN_UPDT_S = "train/updt_s"
TRAIN_DATA_S = "train/data_s"
TRAIN_SAMPLES_PER_S = "train/samples_per_s"
TRAIN_PEAK_MEM_MB = "train/peak_mem_mb"
EVAL_ACTION_ERROR = "eval/action_error"
EVAL_FIRST_ACTION_ERROR = "eval/first_action_error"
EVAL_ACTION_ERROR_PER_JOINT = "eval/action_error_per_joint"
EVAL_NUM_SAMPLES = "eval/num_samples"
EVAL_BASELINE_ACTION_ERROR = "eval/baseline_action_error"
EVAL_BASELINE_FIRST_ACTION_ERROR = "eval/baseline_first_action_error"


# --- the SO-101 arm ---------------------------------------------------------------
SO101_JOINT_NAMES = (
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
)
SO101_ROBOT_TYPE = "so101_follower"
SO101_TASK = "Pick up the cube and place it in the bowl"
SO101_FPS = 30
# Widest cube-placement margin the sim accepts (m): `sim record --cube-margin-mm` and the
# env's `cube_margin` check against this one bound.
SIM_MAX_CUBE_MARGIN_M = 0.05
# Widest cube-yaw margin (deg): the +-30 deg yaw range widened by at most 15 deg stays within
# +-45 deg, where the expert grasps across the same pair of faces.
SIM_MAX_CUBE_YAW_MARGIN_DEG = 15.0

# --- checkpoint layout (LeRobot's, see shared docs §6) ------------------------------
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last"
PRETRAINED_MODEL_DIR = "pretrained_model"
TRAINING_STATE_DIR = "training_state"
CONFIG_JSON = "config.json"
MODEL_SAFETENSORS = "model.safetensors"
TRAIN_CONFIG_JSON = "train_config.json"
# Our own config fields, beside train_config.json (which LeRobot parses strictly: an extra
# "robotrain" key there makes TrainPipelineConfig.from_pretrained refuse the file).
ROBOTRAIN_CONFIG_JSON = "robotrain_config.json"
ROBOTRAIN_SECTION = "robotrain"
METRICS_JSONL = "metrics.jsonl"
EVAL_INFO_JSON = "eval_info.json"
