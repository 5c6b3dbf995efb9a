"""Well-formed but self-inconsistent datasets do not pass `dataset validate` nor train
(issue 22, family 1): video time ranges, timestamps, task rows and stats. Each case
mutates a copy of a LeRobot-written fixture; validate names the episode and field, and
`train` stops with the same cause in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import one_line_error, run_cli
from dataset_helpers import FRONT, V21, V30, rewrite_v30_episodes, v30_data, writable_copy

from robotrain.data.format import validate_dataset
from train_helpers import TINY_ACT_FLAGS

TASKS = ["Pick up the cube and place it in the bowl", "Push the cube to the left"]


def _set_column(path: Path, name: str, values: list) -> None:
    table = pq.read_table(path)
    i = table.schema.get_field_index(name)
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type)),
                   path)


def _edit_stats(root: Path, key: str, edit) -> None:
    path = root / "meta" / "stats.json"
    stats = json.loads(path.read_text())
    edit(stats[key])
    path.write_text(json.dumps(stats))


def _overlap(root: Path) -> None:  # episode 1 starts 2 frames before episode 0 ends
    rewrite_v30_episodes(root, **{f"videos/{FRONT}/from_timestamp": [0.0, 1.3, 2.7666666666666666]})


def _past_the_file(root: Path) -> None:  # the last episode's range shifted 2 frames past the end
    rewrite_v30_episodes(root, **{f"videos/{FRONT}/from_timestamp": [0.0, 1.3666666666666667, 2.8333333333333335],
                                  f"videos/{FRONT}/to_timestamp": [1.3666666666666667, 2.7666666666666666,
                                                                   4.166666666666667]})


def _short_range(root: Path) -> None:  # episode 0's range holds 30 of its 41 frames
    rewrite_v30_episodes(root, **{f"videos/{FRONT}/to_timestamp": [1.0, 2.7666666666666666, 4.1]})


def _shifted_timestamps(root: Path) -> None:  # episode 1 starts 3 frames late, steady 1/30 steps
    ts = pq.read_table(v30_data(root)).column("timestamp").to_pylist()
    _set_column(v30_data(root), "timestamp", [t + 3 / 30 if 41 <= i < 83 else t for i, t in enumerate(ts)])


def _shifted_timestamps_v21(root: Path) -> None:
    path = root / "data" / "chunk-000" / "episode_000002.parquet"
    ts = pq.read_table(path).column("timestamp").to_pylist()
    _set_column(path, "timestamp", [t + 2 / 30 for t in ts])


def _task_rows(root: Path) -> None:  # three rows of episode 0 say episode 1's task
    tasks = pq.read_table(v30_data(root)).column("task_index").to_pylist()
    _set_column(v30_data(root), "task_index", [1 if 5 <= i < 8 else t for i, t in enumerate(tasks)])


def _mean_outside(root: Path) -> None:
    _edit_stats(root, "action", lambda s: s["mean"].__setitem__(2, s["max"][2] + 10.0))


def _nan_std(root: Path) -> None:
    _edit_stats(root, "observation.state", lambda s: s["std"].__setitem__(0, math.nan))


def _wrong_shape(root: Path) -> None:
    _edit_stats(root, "action", lambda s: s.__setitem__("mean", s["mean"][:5]))


def _scale(stats: dict, factor: float) -> None:
    for name in ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99"):
        if name in stats:
            stats[name] = (np.asarray(stats[name]) * factor).tolist()


def _stale_narrow(root: Path) -> None:  # stats in other units: 100x narrower than the data
    _edit_stats(root, "action", lambda s: _scale(s, 0.01))


def _stale_wide(root: Path) -> None:  # stats 100x wider than the data
    _edit_stats(root, "observation.state", lambda s: _scale(s, 100.0))


# case: (fixture, damage, text that validate and train both show)
CASES = {
    "video_ranges_overlap": (V30, _overlap, f"episode 1: videos/{FRONT}/from_timestamp 1.300000 lies inside "
                                            "episode 0's range (to 1.366667) in the same file"),
    "video_range_past_the_file": (V30, _past_the_file, f"episode 2: videos/{FRONT}/to_timestamp is 4.166667s but "
                                                       "file-000.mp4 lasts 4.100000s"),
    "video_range_too_short": (V30, _short_range, "holds 30.0 frames at 30 fps but the episode has 41"),
    "timestamps_shifted": (V30, _shifted_timestamps, "episode 1: column 'timestamp' is 0.100000s at frame 0 but "
                                                     "frame_index / fps is 0.000000s (shifted by +3.00 frames)"),
    "timestamps_shifted_v21": (V21, _shifted_timestamps_v21, "episode 2: column 'timestamp' is 0.066667s at frame 0"),
    "task_rows": (V30, _task_rows, f"episode 0: column 'task_index' is 1 ({TASKS[1]!r}) at frame 5 (3 frame(s) "
                                   f"in all) but the episode's tasks are [{TASKS[0]!r}]"),
    "stats_mean_outside": (V30, _mean_outside, "field 'action.mean' is "),
    "stats_nan": (V30, _nan_std, "field 'observation.state.std' holds NaN or inf"),
    "stats_shape": (V30, _wrong_shape, "field 'action.mean' has shape [5], expected [6]"),
    "stats_stale_narrow": (V30, _stale_narrow, "stats of 'action' do not describe the data (stale? other units?): "
                                               "dimension 0 spans"),
    "stats_stale_wide": (V30, _stale_wide, "stats of 'observation.state' do not describe the data"),
}

TINY_ACT = [*TINY_ACT_FLAGS, "--steps", "1", "--batch-size", "2", "--num-workers", "0", "--eval-freq", "0"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_inconsistent_dataset_is_refused_by_validate_and_train(lerobot_fixtures: Path, tmp_path: Path,
                                                               case: str) -> None:
    fixture, damage, text = CASES[case]
    root = writable_copy(lerobot_fixtures / fixture, tmp_path / "ds")
    damage(root)
    problems = validate_dataset(root)
    assert any(text in p for p in problems), problems
    out = run_cli("train", "--dataset", str(root), *TINY_ACT, "--output-dir", str(tmp_path / "run"))
    assert text in one_line_error(out)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_stats_of_a_selection_may_span_more_than_its_data(lerobot_fixtures: Path) -> None:
    """A selection covers part of the data the stats were computed on: narrower is no alarm."""
    from robotrain.data.format import load_frame_table, load_meta

    assert load_frame_table(load_meta(lerobot_fixtures / V30, [1]))["action"].shape == (42, 6)
