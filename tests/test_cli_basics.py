from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from robotrain.cli import main
from robotrain.errors import DatasetError, RobotrainError
from robotrain.system.files import atomic_directory, atomic_write_json

from conftest import LEROBOT_FIXTURES, REPO_ROOT, run_cli


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["train"], ["train", "--policy", "act"], ["train", "--policy", "smolvla"],
                                  ["eval"], ["report"], ["demo"], ["dataset", "info"], ["sim", "record"]])
def test_every_help_text_renders(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse formats help strings with %, so a stray '%' in a docstring breaks --help."""
    try:
        main([*argv, "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "usage:" in capsys.readouterr().out


def test_help_and_dataset_info_load_no_torch() -> None:
    """`robotrain --help` imports every subcommand module and torch alone takes more CPU
    time than all of `--help` (robotrain.cli): it loads none of the heavy libraries.
    `dataset info` reads meta files and the videos' headers (to list ranges past a file's
    end), so PyAV but never torch, MuJoCo or matplotlib."""
    heavy = "{'torch', 'av', 'mujoco', 'matplotlib'}"
    code = (
        "import sys\n"
        "from robotrain.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))\n"
        f"main(['dataset', 'info', {str(LEROBOT_FIXTURES / 'so101_fixture_v30')!r}])\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}, timeout=600)
    assert out.returncode == 0, out.stderr
    loaded = [line for line in out.stdout.splitlines() if line.startswith("LOADED ")]
    assert loaded == ["LOADED []", "LOADED ['av']"]


def test_python_dash_m_entry_point() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("robotrain ")


def test_error_message_names_path_and_reason() -> None:
    err = DatasetError("info.json is missing", "/data/x")
    assert isinstance(err, RobotrainError)
    assert str(err) == "/data/x: info.json is missing"


def test_atomic_write_keeps_old_content_on_failure(tmp_path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_directory(tmp_path / "dir") as d:
            (d / "x").write_text("partial")
            raise Boom
    assert not (tmp_path / "dir").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert target.read_text().strip().startswith("{")


def test_atomic_write_gives_usual_permissions(tmp_path) -> None:
    import os
    import stat

    target = tmp_path / "b.json"
    atomic_write_json(target, {"v": 2})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize(("code", "caught"), [(errno.ENOSPC, True), (errno.EDQUOT, True), (errno.EACCES, False)])
def test_a_full_disk_anywhere_is_one_line_not_a_traceback(code: int, caught: bool, tmp_path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import robotrain.cli.dataset as dataset_cli

    def fails(args) -> int:
        raise OSError(code, os.strerror(code), str(tmp_path / "x.npy"))

    monkeypatch.setattr(dataset_cli, "run_info", fails)
    if not caught:  # other OS errors are bugs to see in full, not to be reworded
        with pytest.raises(PermissionError):
            main(["dataset", "info", str(tmp_path)])
        return
    assert main(["dataset", "info", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"robotrain: error: {tmp_path / 'x.npy'}: no space left on device; free some space and run again")


def test_atomic_writes_refuse_to_destroy_what_they_cannot_write(tmp_path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RobotrainError, match="is a file, not a folder") as exc:
        atomic_write_json(tmp_path / "afile" / "sub" / "x.json", {})
    assert exc.value.path == tmp_path / "afile"
    (tmp_path / "adir").mkdir()
    with pytest.raises(RobotrainError, match="not a regular file"):
        atomic_write_json(tmp_path / "adir", {})
    os.mkfifo(tmp_path / "fifo")  # stands for a device node such as /dev/full
    with pytest.raises(RobotrainError, match="not a regular file"):
        atomic_write_json(tmp_path / "fifo", {})
    with pytest.raises(RobotrainError, match="not a folder"):
        with atomic_directory(tmp_path / "afile"):
            pass
    assert (tmp_path / "afile").read_text() == "x" and (tmp_path / "adir").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "fifo"]


def test_atomic_write_through_a_symlink_keeps_the_link(tmp_path) -> None:
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to("real.json")
    atomic_write_json(tmp_path / "link.json", {"v": 2})
    assert (tmp_path / "link.json").is_symlink() and '"v": 2' in (tmp_path / "real.json").read_text()


def test_an_error_from_a_dataloader_worker_is_printed_without_its_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from torch.utils.data import DataLoader, Dataset

    import robotrain.cli.dataset as dataset_cli

    class Corrupt(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            raise DatasetError("moov atom not found", "/data/videos/file-000.mp4")

    def loads_in_a_worker(args) -> int:
        next(iter(DataLoader(Corrupt(), num_workers=1)))
        return 0

    monkeypatch.setattr(dataset_cli, "run_info", loads_in_a_worker)
    assert main(["dataset", "info", "x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "robotrain: error: /data/videos/file-000.mp4: moov atom not found")


def test_a_copytree_that_ran_out_of_disk_reads_as_a_full_disk(tmp_path) -> None:
    import shutil

    full = shutil.Error([("a", "b", f"[Errno 28] {os.strerror(errno.ENOSPC)}: 'b'")] * 40)
    with pytest.raises(RobotrainError, match="no space left on device; nothing was overwritten"):
        with atomic_directory(tmp_path / "out"):
            raise full
    other = shutil.Error([("a", "b", "[Errno 13] Permission denied: 'b'"), ("c", "d", "x")])
    with pytest.raises(RobotrainError, match=r"cannot write: \[Errno 13\] Permission denied: 'b' \(and 1 more\)"):
        with atomic_directory(tmp_path / "out"):
            raise other
    assert list(tmp_path.iterdir()) == []
