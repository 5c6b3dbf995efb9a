"""read_json / read_jsonl: every way a JSON file can be wrong is one line naming the file,
raised as the caller's error class."""

from __future__ import annotations

import os

import pytest

from robotrain.errors import CheckpointError, ConfigError, DatasetError, RobotrainError
from robotrain.system.files import read_json, read_jsonl


def test_reads_json_and_checks_the_top_level_type(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_text('{"fps": 30, "tasks": ["pick"]}')
    assert read_json(path) == {"fps": 30, "tasks": ["pick"]}
    assert read_json(path, expect=dict) == {"fps": 30, "tasks": ["pick"]}
    path.write_text("[1, 2]")
    assert read_json(path, expect=list) == [1, 2]
    with pytest.raises(ConfigError, match="must hold a JSON object, not a JSON array") as exc:
        read_json(path, ConfigError, expect=dict)
    assert exc.value.path == path
    path.write_text('"text"')
    with pytest.raises(CheckpointError, match="must hold a JSON array, not a string"):
        read_json(path, CheckpointError, expect=list)


def test_missing_file_gives_the_callers_reason(tmp_path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match="file is missing") as exc:
        read_json(path, DatasetError)
    assert exc.value.path == path
    assert str(exc.value) == f"{path}: file is missing"
    with pytest.raises(ConfigError, match="config file not found"):
        read_json(path, ConfigError, missing="config file not found")
    with pytest.raises(DatasetError, match=r"is this a LeRobot v2\.1 dataset"):
        read_jsonl(path, DatasetError, missing="missing file (is this a LeRobot v2.1 dataset?)")


def test_unreadable_file(tmp_path) -> None:
    with pytest.raises(RobotrainError, match="cannot read: Is a directory") as exc:
        read_json(tmp_path)
    assert exc.value.path == tmp_path
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.json"
        locked.write_text("{}")
        locked.chmod(0)
        with pytest.raises(CheckpointError, match="cannot read: Permission denied"):
            read_json(locked, CheckpointError)


def test_not_utf8_names_the_byte(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b'{"task": "caf\xe9"}')
    with pytest.raises(CheckpointError, match=r"not UTF-8 text \(invalid continuation byte at byte 13\)") as exc:
        read_json(path, CheckpointError)
    assert exc.value.path == path
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        read_jsonl(path, DatasetError)


def test_bad_json_names_line_and_column(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "steps": 10,\n  "batch_size": 8,,\n}\n')
    with pytest.raises(ConfigError) as exc:
        read_json(path, ConfigError)
    assert str(exc.value) == (f"{path}: not valid JSON "
                              "(line 3, column 19: Expecting property name enclosed in double quotes)")
    path.write_text("")
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1, column 1: Expecting value\)"):
        read_json(path, ConfigError)


def test_jsonl_rows_blank_lines_and_line_separators(tmp_path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"task_index": 0, "task": "pick\u2028place"}\n\n{"task_index": 1, "task": "b"}\r\n')
    assert read_jsonl(path) == [{"task_index": 0, "task": "pick\u2028place"}, {"task_index": 1, "task": "b"}]
    path.write_text("")
    assert read_jsonl(path) == []


def test_jsonl_bad_line_is_named(tmp_path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"episode_index": 0}\n\n{"episode_index": 1\n')
    with pytest.raises(DatasetError) as exc:
        read_jsonl(path, DatasetError)
    assert str(exc.value) == f"{path}: line 3: not valid JSON (column 20: Expecting ',' delimiter)"
    path.write_text('{"episode_index": 0}\n[1]\n')
    with pytest.raises(DatasetError, match="line 2: must be a JSON object, not a JSON array"):
        read_jsonl(path, DatasetError)
