"""Atomic file and directory writes: a killed process never leaves a half-written file
that looks complete (house rule). Write to a temporary sibling, fsync, then rename.
And the one way to read a JSON / JSON Lines file a user gave us (`read_json`,
`read_jsonl`): every failure is one line naming the file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, overload

from robotrain.errors import RobotrainError


def process_exists(pid: int) -> bool:
    """Whether process `pid` is running (also when it belongs to another user): how a
    leftover temporary file tells a live owner from a killed one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _raise_disk_error(exc: OSError, path: Path) -> None:
    reason = exc.strerror or str(exc)
    texts = [reason]
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        texts = [str(why) for *_, why in exc.args[0]]  # copytree: (src, dst, str(why)) per failed file
        reason = texts[0] + (f" (and {len(texts) - 1} more)" if len(texts) > 1 else "")
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or any(
        os.strerror(errno.ENOSPC) in t or os.strerror(errno.EDQUOT) in t for t in texts)
    if full:
        raise RobotrainError("no space left on device; nothing was overwritten", path) from exc
    raise RobotrainError(f"cannot write: {reason}", path) from exc


def write_safetensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, with its I/O failures as OSError: the Rust writer
    reports a full disk as a SafetensorError ("... (os error 28)" in 0.5+, "Os { code: 28
    ... }" in 0.4), which the atomic writers would otherwise not recognise as a disk error."""
    # safetensors.torch imports torch; this module is imported by the CLI on start-up.
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as exc:
        code = re.search(r"\(os error (\d+)\)|Os \{ code: (\d+)", str(exc))
        if code is None:
            raise
        number = int(code.group(1) or code.group(2))
        raise OSError(number, os.strerror(number), str(path)) from exc


def read_utf8(path: Path, error: type[RobotrainError] = RobotrainError) -> str:
    """The file's text. Bytes that are not UTF-8 are `error` naming the first bad one: a
    UnicodeDecodeError is a ValueError, which a reader's JSON handling would mislabel or miss.
    OSError (missing, unreadable) is left to the caller, whose messages differ."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from exc


def _read_text(path: Path, error: type[RobotrainError], missing: str) -> str:
    try:
        return read_utf8(path, error)
    except FileNotFoundError:
        raise error(missing, path) from None
    except OSError as exc:  # a folder, no permission, an I/O error
        raise error(f"cannot read: {exc.strerror or exc}", path) from None


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words ("an array"), for type errors."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return "a number"


@overload
def read_json(path: Path, error: type[RobotrainError] = ..., *, missing: str = ...,
              expect: type[dict]) -> dict[str, Any]: ...


@overload
def read_json(path: Path, error: type[RobotrainError] = ..., *, missing: str = ...,
              expect: type[list]) -> list[Any]: ...


@overload
def read_json(path: Path, error: type[RobotrainError] = ..., *, missing: str = ...,
              expect: None = None) -> Any: ...


def read_json(path: Path, error: type[RobotrainError] = RobotrainError, *, missing: str = "file is missing",
              expect: type[dict] | type[list] | None = None) -> Any:
    """The parsed JSON file, or `error` naming the file in one line: the `missing` reason,
    unreadable (a folder, no permission), not UTF-8, not valid JSON (with line and column),
    or a top-level value that is not `expect` (dict: an object, list: an array).

    One reader so that every JSON file a user hands us (datasets, checkpoints, configs,
    runs) fails the same way, as the error class of the layer that read it."""
    text = _read_text(path, error, missing)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path) from None
    if expect is not None and not isinstance(data, expect):
        raise error(f"must hold {_json_kind(expect())}, not {_json_kind(data)}", path)
    return data


def read_jsonl(path: Path, error: type[RobotrainError] = RobotrainError, *,
               missing: str = "file is missing") -> list[dict[str, Any]]:
    """The objects of a JSON Lines file (one JSON object a line, blank lines skipped), with
    `read_json`'s errors; a bad line is named by its number. Lines end at line feeds only
    (not `splitlines`): a string holding U+2028, which json.dumps(ensure_ascii=False)
    leaves raw, is not a line break."""
    rows = []
    for lineno, line in enumerate(_read_text(path, error, missing).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"line {lineno}: not valid JSON (column {exc.colno}: {exc.msg})", path) from None
        if not isinstance(row, dict):
            raise error(f"line {lineno}: must be a JSON object, not {_json_kind(row)}", path)
        rows.append(row)
    return rows


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_folder(folder: str | Path) -> Path:
    """`mkdir -p`, with the error a user can act on when a file stands in the way."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise RobotrainError("is a file, not a folder; choose another output path", blocker) from None
    except OSError as exc:
        _raise_disk_error(exc, folder)
    return folder


def _replaceable(path: Path, kind: str) -> Path:
    """The path an atomic write replaces: a symlink's target (the link survives), and only
    what is already of the same kind: renaming over a device node, a folder or a file
    of the other kind would destroy it, not write to it."""
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    is_kind = path.is_file() if kind == "file" else path.is_dir()
    if path.exists() and not is_kind:
        raise RobotrainError(f"exists and is not a {'regular file' if kind == 'file' else 'folder'}; "
                             f"choose another output path", path)
    make_folder(path.parent)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`.

    On any error the temporary file is removed and `path` keeps its old content.
    """
    path = _replaceable(Path(path), "file")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _raise_disk_error(exc, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 4) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; on success rename it to `path`.

    An existing `path` is replaced only after the new one is complete. A killed process
    leaves only a `.<name>.tmp-*` directory, which never looks complete.
    """
    path = _replaceable(Path(path), "folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_disk_error(exc, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def lock_folder(folder: str | Path, lock_name: str, what: str) -> IO[str]:
    """Take `folder/lock_name` exclusively for this process (created, holds our pid) and
    return it open: closing it, or the process dying, releases it. A second process that
    asks gets an error naming the holder's pid instead of writing into the same files
    (two trainings in one run dir interleave their metrics and checkpoints)."""
    folder = make_folder(folder)
    try:
        handle = open(folder / lock_name, "a+")  # noqa: SIM115 - the caller holds it open
    except OSError as exc:
        _raise_disk_error(exc, folder)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        if holder.isdigit() and not process_exists(int(holder)):
            # Its forked DataLoader workers share the lock until they notice it died (~5 s).
            raise RobotrainError(f"{what} is still locked by the children of pid {holder}, which has exited; "
                                 f"they let go within seconds: run the command again", folder) from None
        raise RobotrainError(f"{what} is in use by another process (pid {holder}); wait for it to end or "
                             f"choose another folder", folder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
