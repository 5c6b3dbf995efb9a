"""Feature names: renaming a dataset's features to the names policies use, and checking
that a dataset offers those names before anything is trained on it.

Datasets exported by other stacks call their features `state`, `actions` or `image`;
robotrain's policies (like LeRobot's) read `observation.state`, `action` and
`observation.images.<camera>`. A rename map, `{name in the dataset: name to use}`,
presents the dataset under the policy's names while its files are read by their own
(`DatasetMeta.stored_name`). LeRobot's `rename_map` is the same idea for observations;
here actions can be renamed too. The map a run trained with is saved in its config, so
evaluation and resumed runs read the dataset the same way.

Example:
    robotrain train --dataset exported/ --policy act \
        --rename state=observation.state,actions=action,image=observation.images.front
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from robotrain.constants import ACTION, DEFAULT_FRAME_COLUMNS, OBS_IMAGES_PREFIX, OBS_STATE
from robotrain.data.format import DatasetMeta
from robotrain.errors import ConfigError

log = logging.getLogger(__name__)


def rename_features(meta: DatasetMeta, rename: Mapping[str, str] | None) -> DatasetMeta:
    """`meta` with its features (and their stats, cameras and video spans) renamed by
    `rename` = {name in the dataset: new name}; None or {} returns `meta` unchanged.

    Raises ConfigError naming the entry when a name is not a feature of the dataset, is one
    of the bookkeeping columns every LeRobot frame has, or would clash with another feature,
    and when a camera would not be `observation.images.<name>` (or a non-camera would).
    """
    if not rename:
        return meta
    if meta.stored_names:
        raise ConfigError("the dataset's features are already renamed; rename once")
    features = meta.features
    for old, new in rename.items():
        where = f"--rename {old}={new}"
        if old not in features:
            raise ConfigError(f"{where}: {old!r} is not a feature of the dataset (it has {', '.join(features)})",
                              meta.root)
        if old in DEFAULT_FRAME_COLUMNS or new in DEFAULT_FRAME_COLUMNS:
            raise ConfigError(f"{where}: {', '.join(DEFAULT_FRAME_COLUMNS)} are LeRobot's own frame columns and "
                              f"keep their names")
        is_camera = old in meta.camera_keys
        if is_camera != new.startswith(OBS_IMAGES_PREFIX) or new == OBS_IMAGES_PREFIX:
            expected = f"a camera is named {OBS_IMAGES_PREFIX}<name>" if is_camera else \
                f"only cameras are named {OBS_IMAGES_PREFIX}<name>"
            raise ConfigError(f"{where}: {old!r} is {'a camera' if is_camera else 'not a camera'}; {expected}")
    new_names = [rename.get(k, k) for k in features]
    clashes = sorted({n for n in new_names if new_names.count(n) > 1})
    if clashes:
        raise ConfigError(f"--rename: two features would be named {clashes[0]!r}")
    renamed = {rename.get(k, k): v for k, v in features.items()}
    return dataclasses.replace(
        meta,
        features=renamed,
        camera_keys=tuple(sorted(rename.get(k, k) for k in meta.camera_keys)),
        stats={rename.get(k, k): v for k, v in meta.stats.items()},
        episodes=[dataclasses.replace(e, videos={rename.get(k, k): span for k, span in e.videos.items()})
                  for e in meta.episodes],
        stored_names={new: old for old, new in rename.items() if new != old},
    )


def check_policy_names(meta: DatasetMeta) -> None:
    """Refuse a dataset whose names no policy reads, before anything is built: without
    `action` there is nothing to learn, and a camera not named `observation.images.<name>`
    would reach the policy as raw bytes. A missing `observation.state` only warns (a
    policy may use cameras alone), naming the features that might be the state."""
    names = ", ".join(meta.features)
    if ACTION not in meta.features:
        raise ConfigError(f"the dataset has no {ACTION!r} feature (features: {names}); if one holds the actions, "
                          f"map it with --rename NAME={ACTION}", meta.root)
    for key in meta.camera_keys:
        if not key.startswith(OBS_IMAGES_PREFIX):
            raise ConfigError(f"camera {key!r} is not named {OBS_IMAGES_PREFIX}<name>, the names policies read "
                              f"cameras by; map it with --rename {key}={OBS_IMAGES_PREFIX}{key.split('.')[-1]}",
                              meta.root)
    if OBS_STATE not in meta.features:
        log.warning("%s: the dataset has no %r feature (features: %s); training without the robot state "
                    "(if one holds it: --rename NAME=%s)", meta.root, OBS_STATE, names, OBS_STATE)


def parse_rename(text: str, flag: str = "--rename") -> dict[str, str]:
    """'state=observation.state,actions=action' (or a JSON object) -> {old: new}."""
    from robotrain.config.flags import convert

    value = convert(text, dict[str, str], flag)
    return {str(k): str(v) for k, v in value.items()}
