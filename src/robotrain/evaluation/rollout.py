"""Closed-loop evaluation of a policy in the SO-101 simulation: success rate with a 95%
Wilson interval, time to success, LeRobot-shaped `eval_info.json`, and videos.

Episode i is always reset with seed `seed + i`, whatever the number of parallel envs, so
two policies evaluated with the same `seed` face the same episodes and their results can
be compared pair by pair (report.py runs an exact McNemar test on them).

Observations become the raw batch every policy takes (house contract,
`policies/base.py`): state float (B, 6) in joint units, each camera float (B, 3, H, W)
in [0, 1] fitted to the policy's image input by `robotrain.data.images`, the function the
frame cache uses (so closed loop and training see the same pixels), and `task` strings. The envs of one batch run in lockstep, so `policy.reset()`
is called once per batch of episodes, at the start of each.

Example (once a checkpoint exists):
    python -c "from robotrain.evaluation.rollout import evaluate_in_sim; ..."
    robotrain eval --checkpoint outputs/act/checkpoints/last/pretrained_model --sim
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from robotrain.checkpoints import store
from robotrain.constants import EVAL_INFO_JSON, OBS_STATE, SO101_FPS, SO101_TASK, TASK, is_image_key
from robotrain.data.images import fit_uint8, hwc_to_chw, to_unit_float
from robotrain.errors import ConfigError, SimulationError
from robotrain.evaluation.statistics import wilson_interval
from robotrain.system.environment import software_versions
from robotrain.system.files import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

SIM_ENV_ID = "robotrain/SO101PickPlace-v0"
"""Registered by `import robotrain.sim` (the sim package)."""
VIDEO_HOLD_S = 0.5
"""The last frame is held this long at the end of a video, so the outcome is readable."""
SUCCESS_RGB = (40, 170, 60)
FAIL_RGB = (200, 40, 40)
RUNNING_RGB = (90, 90, 90)


# ----------------------------------------------------------------------- env batch
class _EnvBatch:
    """B environments stepped together: a gymnasium vector env or one plain env.

    Gives stacked observations (dict of (B, ...) arrays) and per-env info dicts, and
    hides the vector-API differences that matter here (`final_info` in gymnasium 0.29 and
    same-step autoreset; nothing to do for next-step autoreset, the default of 1.x).
    """

    def __init__(self, env: Any, vector: bool) -> None:
        self.env = env
        self.vector = vector
        self.num_envs = int(env.num_envs) if vector else 1
        self.broken = False
        """A worker process died: gymnasium's close() would wait on it, so close() ends them all."""

    def reset(self, seeds: list[int]) -> dict[str, np.ndarray]:
        if self.vector:
            with self._sim_process_deaths_as_errors():
                obs, _ = self.env.reset(seed=seeds)
            return dict(obs)
        obs, _ = self.env.reset(seed=seeds[0])
        return {k: np.asarray(v)[None] for k, v in obs.items()}

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if not self.vector:
            obs, rew, term, trunc, info = self.env.step(actions[0])
            stacked = {k: np.asarray(v)[None] for k, v in obs.items()}
            return stacked, np.array([float(rew)]), np.array([bool(term or trunc)]), [dict(info)]
        with self._sim_process_deaths_as_errors():
            obs, rew, term, trunc, info = self.env.step(actions)
        done = np.logical_or(term, trunc)
        obs = dict(obs)
        final_obs = info.get("final_obs", info.get("final_observation"))
        if final_obs is not None:  # same-step autoreset: obs already holds the next episode
            obs = {k: np.array(v) for k, v in obs.items()}
            for j in np.flatnonzero(done):
                if final_obs[j] is not None:
                    for k in obs:
                        obs[k][j] = final_obs[j][k]
        return obs, np.asarray(rew, dtype=float), done, _split_vector_info(info, self.num_envs, done)

    def close(self) -> None:
        if not self.vector:
            self.env.close()
            return
        if not self.broken:
            try:
                self.env.close()
                return
            except (BrokenPipeError, EOFError, ConnectionResetError):
                pass
        # A worker died, possibly mid-step: gymnasium's close() would wait for its answer
        # (forever on a live pipe that already answered) or raise on the dead one; end them.
        for process in getattr(self.env, "processes", []):
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
        for pipe in getattr(self.env, "parent_pipes", []):
            with contextlib.suppress(OSError):
                pipe.close()
        self.env.closed = True  # nothing left for gymnasium's __del__ to close

    @contextlib.contextmanager
    def _sim_process_deaths_as_errors(self) -> Iterator[None]:
        """A vector env whose worker process died (OOM killer, a signal) shows it as a broken
        pipe or EOF on the next step, or in the middle of one; say what happened instead."""
        try:
            yield
        except (BrokenPipeError, EOFError, ConnectionResetError) as exc:
            self.broken = True
            raise SimulationError("a simulation process died (killed by the system, out of memory?); "
                                  "no eval_info.json was written, run the evaluation again") from exc


def _split_vector_info(info: Mapping[str, Any], n: int, done: np.ndarray) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in info.items():
        if key.startswith("_") or key in ("final_info", "final_obs", "final_observation"):
            continue
        mask = info.get("_" + key)
        for i in range(n):
            if mask is None or bool(mask[i]):
                try:
                    out[i][key] = value[i]
                except (TypeError, IndexError, KeyError):
                    pass
    final = info.get("final_info")
    if final is not None:
        for i in range(n):
            if not done[i]:
                continue
            if isinstance(final, Mapping):  # gymnasium 1.x same-step: dict of arrays
                fmask = info.get("_final_info")
                if fmask is None or bool(fmask[i]):
                    out[i].update({k: v[i] for k, v in final.items() if not k.startswith("_")})
            elif final[i] is not None:  # gymnasium 0.29: array of dicts
                out[i].update(final[i])
    return out


def make_env_batch(n_envs: int, env_id: str = SIM_ENV_ID, env_kwargs: Mapping[str, Any] | None = None) -> _EnvBatch:
    """Parallel envs over processes when `n_envs > 1`, falling back to a single env."""
    kwargs = dict(env_kwargs or {})
    make_vector_env = None
    if env_id == SIM_ENV_ID:
        try:  # here: MuJoCo is loaded only to make an env, and a broken install is a SimulationError
            import robotrain.sim  # noqa: F401  (registers the env id)
            from robotrain.sim.env import make_vector_env  # type: ignore[no-redef]
        except ImportError as exc:
            if env_id not in gym.registry:
                raise SimulationError(f"the simulation is not available ({exc})") from exc
    if n_envs > 1:
        try:
            if make_vector_env is not None:
                return _EnvBatch(make_vector_env(n_envs, **kwargs), vector=True)
            return _EnvBatch(gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="async", **kwargs), vector=True)
        except (OSError, RuntimeError, EOFError) as exc:  # e.g. no fork / no GL in workers
            logger.warning("parallel envs unavailable (%s); using one env", exc)
    try:
        return _EnvBatch(gym.make(env_id, **kwargs), vector=False)
    except gym.error.Error as exc:
        raise SimulationError(f"cannot make env {env_id!r}: {exc}") from exc


# --------------------------------------------------------------------- observations
def obs_to_batch(
    obs: Mapping[str, np.ndarray],
    camera_keys: tuple[str, ...],
    image_size: tuple[int, int] | None,
    device: torch.device,
    resize_mode: str = "resize",
) -> dict[str, Any]:
    """Stacked env observations -> the raw policy batch (see module docstring); frames are
    fitted by `robotrain.data.images`, exactly as the frame cache fits recorded ones."""
    if OBS_STATE not in obs:
        raise SimulationError(f"env observation has no {OBS_STATE!r} (keys: {sorted(obs)})")
    state = torch.as_tensor(np.asarray(obs[OBS_STATE]), dtype=torch.float32)  # (B, 6)
    batch: dict[str, Any] = {OBS_STATE: state.to(device)}
    for key in camera_keys:
        if key not in obs:
            raise SimulationError(f"env observation has no camera {key!r} (keys: {sorted(obs)})")
        img = fit_uint8(hwc_to_chw(np.asarray(obs[key])), image_size, resize_mode)  # (B, 3, H, W) uint8
        batch[key] = to_unit_float(img.to(device)).contiguous()  # (B, 3, H, W) in [0, 1]
    batch[TASK] = [SO101_TASK] * state.shape[0]
    return batch


# --------------------------------------------------------------------------- videos
def _fit_height(img: np.ndarray, height: int) -> np.ndarray:
    """Nearest-neighbour resize of (h, w, 3) to `height` rows, keeping the aspect ratio."""
    h, w = img.shape[:2]
    if h == height:
        return img
    width = max(1, round(w * height / h))
    rows = (np.arange(height) * h / height).astype(int)
    cols = (np.arange(width) * w / width).astype(int)
    return img[rows][:, cols]


def _text_rgba(text: str, height: int, width: int) -> np.ndarray:
    """`text` rasterised by matplotlib (its bundled font) as (height, width, 4) uint8."""
    # matplotlib and PyAV (data.mp4) are imported only when videos are asked for (--videos).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    fig.patch.set_alpha(0.0)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.01, 0.5, text, color="white", fontsize=max(6, 0.55 * height * 72 / 100),
             va="center", ha="left", fontweight="bold", family="DejaVu Sans")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:height, :width].copy()


class EpisodeVideo:
    """Streams one episode to an mp4 (H.264 via robotrain.data.mp4): both cameras side by side, and a
    status bar below them that fills with time, turns green once the episode succeeds,
    and red at the end of a failed episode; the last frame is also saved as a PNG."""

    def __init__(self, path: Path, fps: int, camera_keys: tuple[str, ...], label: str, max_steps: int) -> None:
        self.path, self.fps, self.camera_keys, self.label, self.max_steps = path, fps, camera_keys, label, max_steps
        self._encoder: Any = None  # robotrain.data.mp4.ClipEncoder, opened on the first frame
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._text: dict[str, np.ndarray] = {}
        self.n_frames = 0
        self.last: np.ndarray | None = None
        self._last_obs: dict[str, np.ndarray] | None = None
        self._last_step = -1
        self._closing = False

    def _compose(self, obs_i: Mapping[str, np.ndarray], step: int, status: str) -> np.ndarray:
        imgs = [np.asarray(obs_i[k]) for k in self.camera_keys if k in obs_i]
        height = max(im.shape[0] for im in imgs)
        cams = np.concatenate([_fit_height(im, height) for im in imgs], axis=1).astype(np.uint8)  # (H, W, 3)
        h, w = cams.shape[:2]
        bar_h = max(16, (h // 14) // 2 * 2)
        colour = {"success": SUCCESS_RGB, "fail": FAIL_RGB}.get(status, RUNNING_RGB)
        bar = np.zeros((bar_h, w, 3), np.uint8)
        bar[:] = (30, 30, 30)
        # The bar fills with elapsed time; the final (held) frame shows the outcome full width.
        final = status in ("success", "fail") and step == self._last_step and self._closing
        filled = w if final else max(1, min(w, round(w * (step + 1) / self.max_steps)))
        bar[:, :filled] = colour
        text = f"{self.label}  {status.upper()}"  # the bar's fill shows the time
        if text not in self._text:
            self._text[text] = _text_rgba(text, bar_h, w)  # rasterised once per status
        rgba = self._text[text]
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        bar = (bar * (1 - alpha) + rgba[..., :3] * alpha).astype(np.uint8)
        frame = np.concatenate([cams, bar], axis=0)
        # yuv420p needs even sizes
        return np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))

    def add(self, obs_i: Mapping[str, np.ndarray], step: int, status: str) -> None:
        from robotrain.data.mp4 import PREVIEW_ENCODER, PREVIEW_OPTIONS, ClipEncoder

        # Copy: vector envs may reuse their observation buffers.
        self._last_obs = {k: np.array(obs_i[k]) for k in self.camera_keys if k in obs_i}
        self._last_step = step
        frame = self._compose(obs_i, step, status)
        if self._encoder is None:
            self._encoder = ClipEncoder(self._tmp, frame.shape[0], frame.shape[1], self.fps,
                                        PREVIEW_ENCODER, PREVIEW_OPTIONS)
        self._write(frame)

    def _write(self, frame: np.ndarray) -> None:
        self._encoder.add_frame(frame)
        self.n_frames += 1
        self.last = frame

    def close(self, success: bool) -> Path | None:
        """Hold the last frame with the outcome for VIDEO_HOLD_S, finish the file, save the PNG."""
        if self._encoder is None or self._last_obs is None:
            return None
        self._closing = True
        final = self._compose(self._last_obs, self._last_step, "success" if success else "fail")
        for _ in range(max(1, round(VIDEO_HOLD_S * self.fps))):
            self._write(final)
        self._encoder.close()
        os.replace(self._tmp, self.path)
        import matplotlib.image

        with atomic_path(self.path.with_suffix(".png")) as tmp:
            matplotlib.image.imsave(tmp, self.last, format="png")
        return self.path

    def abort(self) -> None:
        """Drop an unfinished video (an error mid-episode): no half-written mp4 remains."""
        if self._encoder is not None:
            self._encoder.abort()
            self._encoder = None
        self._tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------ evaluation
def _progress(enabled: bool):
    return Progress(
        TextColumn("[bold]sim eval"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False,
    )


def evaluate_in_sim(
    policy: torch.nn.Module,
    n_episodes: int,
    seed: int = 0,
    n_envs: int | None = None,
    videos: int = 0,
    out_dir: str | Path | None = None,
    image_size: tuple[int, int] | None = None,
    max_steps: int = 300,
    *,
    env_id: str = SIM_ENV_ID,
    env_kwargs: Mapping[str, Any] | None = None,
    resize_mode: str | None = None,
    fps: int = SO101_FPS,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `policy` closed-loop for `n_episodes` (episode i seeded `seed + i`).

    `n_envs` parallel envs (default: one per CPU core; 1 = a single in-process env);
    `image_size` (H, W) and `resize_mode`, how rendered frames are fitted, default to the
    policy config's `image_input()` (the frames' own size when it has none); `videos` is how
    many of the first episodes to record; `out_dir` (if given) receives `eval_info.json`
    and `videos/eval_episode_<i>.mp4|png`. `metadata` (e.g. the inference settings used)
    is stored in the result as-is. Returns the eval_info dict:
    `{"per_episode": [...], "aggregated": {...}, "video_paths": [...], **metadata}`.
    """
    if n_episodes < 1:
        raise ConfigError(f"n_episodes must be >= 1, got {n_episodes}")
    if n_envs is None:  # one env process per core; the policy shares them
        n_envs = os.cpu_count() or 1
    if n_envs < 1:
        raise ConfigError(f"n_envs must be >= 1, got {n_envs}")
    if max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
    if videos > 0 and out_dir is None:
        raise ConfigError("videos need an out_dir")
    features = getattr(policy, "features", None)
    camera_keys = tuple(getattr(features, "camera_keys", ()) or ())
    config = getattr(policy, "config", None)
    if hasattr(config, "image_input"):
        policy_size, policy_mode = config.image_input()  # type: ignore[union-attr]
        image_size = image_size or policy_size
        resize_mode = resize_mode or policy_mode
    resize_mode = resize_mode or "resize"
    params = list(policy.parameters())
    device = params[0].device if params else torch.device("cpu")
    out = Path(out_dir) if out_dir is not None else None

    envs = make_env_batch(min(n_envs, n_episodes), env_id, env_kwargs)
    B = envs.num_envs
    per_episode: list[dict[str, Any]] = []
    video_paths: list[str] = []
    t0 = time.perf_counter()
    was_training = policy.training
    policy.eval()
    recorders: dict[int, EpisodeVideo] = {}
    try:
        with _progress(progress) as bar, torch.no_grad():
            task = bar.add_task("", total=n_episodes)
            for first in range(0, n_episodes, B):
                eps = list(range(first, min(first + B, n_episodes)))
                # Extra envs of a short last batch run spare seeds and are discarded.
                seeds = [seed + first + j for j in range(B)]
                obs = envs.reset(seeds)
                if not camera_keys:
                    camera_keys = tuple(sorted(k for k in obs if is_image_key(k)))
                policy.reset()
                recorders = {
                    i: EpisodeVideo(out / "videos" / f"eval_episode_{i}.mp4",  # type: ignore[operator]
                                    fps, camera_keys, f"ep {i} seed {seed + i}", max_steps)
                    for i in eps if i < videos
                }
                sum_r, max_r = np.zeros(B), np.full(B, -np.inf)
                steps = np.zeros(B, int)
                success_step: list[int | None] = [None] * B
                last_info: list[Mapping[str, Any]] = [{} for _ in range(B)]
                done = np.zeros(B, bool)
                done[len(eps):] = True
                for j, i in enumerate(eps):
                    if i in recorders:
                        recorders[i].add({k: v[j] for k, v in obs.items()}, -1, "running")
                for t in range(max_steps):
                    batch = obs_to_batch(obs, camera_keys, image_size, device, resize_mode)
                    action = policy.select_action(batch)  # (B, 6) joint units
                    action_np = action.detach().to("cpu", torch.float32).numpy()
                    if action_np.ndim != 2 or action_np.shape[0] != B:
                        raise SimulationError(
                            f"policy.select_action must return ({B}, action_dim) for {B} envs, "
                            f"got shape {tuple(action_np.shape)}")
                    obs, rew, env_done, infos = envs.step(action_np)
                    for j in np.flatnonzero(~done):
                        sum_r[j] += rew[j]
                        max_r[j] = max(max_r[j], rew[j])
                        steps[j] = t + 1
                        last_info[j] = infos[j]
                        if success_step[j] is None and bool(infos[j].get("is_success", False)):
                            success_step[j] = t + 1
                        i = eps[j]
                        if i in recorders:
                            status = "success" if success_step[j] is not None else "running"
                            recorders[i].add({k: v[j] for k, v in obs.items()}, t, status)
                    done |= env_done
                    if done.all():
                        break
                for j, i in enumerate(eps):
                    ok = success_step[j] is not None
                    if i in recorders:
                        path = recorders[i].close(ok)
                        if path is not None:
                            video_paths.append(str(path))
                    per_episode.append({
                        "episode_ix": i,
                        "sum_reward": float(sum_r[j]),
                        "max_reward": float(max_r[j]) if steps[j] else 0.0,
                        "success": ok,
                        "seed": seed + i,
                        "steps": int(steps[j]),
                        "time_to_success_s": (success_step[j] / fps) if ok else None,  # type: ignore[operator]
                        **grasp_diagnostics(last_info[j]),
                    })
                n_ok = sum(e["success"] for e in per_episode)
                bar.update(task, advance=len(eps), description=f"success {n_ok}/{len(per_episode)}")
    except BaseException:
        for rec in recorders.values():
            rec.abort()
        if out is not None:
            with contextlib.suppress(OSError):  # only if empty: finished videos stay
                (out / "videos").rmdir()
        raise
    finally:
        envs.close()
        policy.train(was_training)  # callable from inside a training loop

    eval_s = time.perf_counter() - t0
    info = summarize(per_episode, eval_s)
    info["video_paths"] = video_paths
    info["settings"] = {  # what it takes to rerun this evaluation exactly
        "seed": seed, "n_episodes": n_episodes, "max_steps": max_steps, "n_envs": B, "env_id": env_id,
        "env_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in (env_kwargs or {}).items()},
        "image_size": list(image_size) if image_size else None, "resize_mode": resize_mode, "fps": fps,
    }
    info["software"] = software_versions()
    info.update(metadata or {})
    if out is not None:
        atomic_write_json(out / EVAL_INFO_JSON, info)
    agg = info["aggregated"]
    logger.info("sim success %.1f%% (95%% CI %.1f-%.1f) over %d episodes in %.1fs", agg["pc_success"],
                *agg["pc_success_ci95"], n_episodes, eval_s)
    if "n_cube_lifted" in agg:
        logger.info("cube lifted in %d/%d episodes; median |grasp offset| (closing, across, vertical) mm: %s; "
                    "median |jaw yaw off the cube's faces| deg: %s", agg["n_cube_lifted"], n_episodes,
                    agg.get("median_abs_grasp_offset_mm"), agg.get("median_abs_grasp_yaw_error_deg"))
    return info


def grasp_diagnostics(info: Mapping[str, Any]) -> dict[str, Any]:
    """The env's grasp diagnostics from an episode's last info, JSON-ready: `cube_lifted`,
    `grasp_offset_mm` and `grasp_yaw_error_deg` (None when the policy never commanded a
    close). Empty for envs that do not report them (see robotrain.sim.env)."""
    out: dict[str, Any] = {}
    if "cube_lifted" in info:
        out["cube_lifted"] = bool(info["cube_lifted"])
    if "grasp_offset_mm" in info:
        offset = np.asarray(info["grasp_offset_mm"], dtype=float).reshape(-1)
        out["grasp_offset_mm"] = None if not np.all(np.isfinite(offset)) else [round(float(v), 2) for v in offset]
    if "grasp_yaw_error_deg" in info:
        yaw_error = float(np.asarray(info["grasp_yaw_error_deg"], dtype=float).reshape(-1)[0])
        out["grasp_yaw_error_deg"] = round(yaw_error, 2) if np.isfinite(yaw_error) else None
    return out


def _grasp_summary(per_episode: list[dict[str, Any]]) -> dict[str, Any]:
    """How many episodes lifted the cube, and the median absolute grasp offset (mm; along
    the closing axis, across it, vertical) and jaw-to-cube yaw error (deg) of the episodes
    that commanded a close."""
    out: dict[str, Any] = {}
    if any("cube_lifted" in e for e in per_episode):
        out["n_cube_lifted"] = sum(bool(e.get("cube_lifted")) for e in per_episode)
    offsets = [e["grasp_offset_mm"] for e in per_episode if e.get("grasp_offset_mm") is not None]
    if offsets:
        out["median_abs_grasp_offset_mm"] = [round(float(v), 2) for v in np.median(np.abs(offsets), axis=0)]
    yaw_errors = [e["grasp_yaw_error_deg"] for e in per_episode if e.get("grasp_yaw_error_deg") is not None]
    if yaw_errors:
        out["median_abs_grasp_yaw_error_deg"] = round(float(np.median(np.abs(yaw_errors))), 2)
    return out


def summarize(per_episode: list[dict[str, Any]], eval_s: float) -> dict[str, Any]:
    """LeRobot's eval_info shape plus our interval, time-to-success and (where the env
    reports them) grasp fields."""
    n = len(per_episode)
    k = sum(bool(e["success"]) for e in per_episode)
    lo, hi = wilson_interval(k, n)
    tts = [e["time_to_success_s"] for e in per_episode if e.get("time_to_success_s") is not None]
    return {
        "per_episode": per_episode,
        "aggregated": {
            "avg_sum_reward": float(np.mean([e["sum_reward"] for e in per_episode])),
            "avg_max_reward": float(np.mean([e["max_reward"] for e in per_episode])),
            "pc_success": 100.0 * k / n,
            "n_episodes": n,
            "n_successes": k,
            "eval_s": eval_s,
            "eval_ep_s": eval_s / n,
            "pc_success_ci95": [100.0 * lo, 100.0 * hi],
            "avg_time_to_success_s": float(np.mean(tts)) if tts else None,
            "seeds": [e["seed"] for e in per_episode],
            **_grasp_summary(per_episode),
        },
    }


def default_eval_dir(checkpoint: str | Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """Where sim results of a checkpoint go so `robotrain report RUN` finds them:
    `<run>/checkpoints/<step>[/pretrained_model]` -> `<run>/eval/<step>/`; with inference
    `overrides` a separate `<step>_<key>=<value>...` directory, so variants never overwrite."""
    ckpt = Path(checkpoint)
    if ckpt.name == "pretrained_model":
        ckpt = ckpt.parent
    suffix = "".join(f"_{k}={v}" for k, v in sorted((overrides or {}).items()))
    if ckpt.parent.name == "checkpoints":
        step = ckpt.resolve().name if ckpt.is_symlink() else ckpt.name  # "last" -> its step
        return ckpt.parent.parent / "eval" / (step + suffix)
    return ckpt / ("eval" + suffix)


def evaluate_checkpoint_in_sim(
    checkpoint: str | Path,
    n_episodes: int,
    seed: int = 0,
    n_envs: int | None = None,
    videos: int = 0,
    out_dir: str | Path | None = None,
    device: str = "auto",
    render_size: tuple[int, int] | None = None,
    overrides: Mapping[str, int | float] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Load a checkpoint (`<run>/checkpoints/<step>` or its `pretrained_model/`) with the
    inference `overrides` (e.g. `{"n_action_steps": 1}`) and run `evaluate_in_sim`.

    The sim renders at `render_size`, by default the size the policy's training frames
    were recorded at (`features.image_shape`); the rendered frames are then fitted to the
    policy's input exactly as the frame cache fitted the recorded ones. Results go to `out_dir` (default:
    `default_eval_dir(checkpoint, overrides)`, where `robotrain report RUN` finds them).

    Example:
        python -c "from robotrain.evaluation.rollout import evaluate_checkpoint_in_sim as e; e('outputs/act/checkpoints/last', 20)"
    """
    ckpt = store.resolve_checkpoint(checkpoint)  # `last` resolved once: the result is filed under that step
    pretrained = store.find_pretrained_dir(ckpt)
    identity = store.checkpoint_identity(pretrained)  # before loading: the hash is of the weights loaded
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = store.load_policy(pretrained, device=device, overrides=dict(overrides) if overrides else None)
    if render_size is None and policy.features.camera_keys:
        render_size = tuple(policy.features.image_shape[-2:])  # type: ignore[assignment]
    if render_size is not None:
        kwargs["env_kwargs"] = {"image_size": render_size, **(kwargs.get("env_kwargs") or {})}
    kwargs["metadata"] = {"policy": identity, "policy_overrides": dict(overrides or {}),
                          **(kwargs.get("metadata") or {})}
    out = Path(out_dir) if out_dir is not None else default_eval_dir(ckpt, overrides)  # under the resolved step
    return evaluate_in_sim(policy, n_episodes, seed=seed, n_envs=n_envs, videos=videos, out_dir=out, **kwargs)


def format_sim_result(info: Mapping[str, Any]) -> str:
    """One line: successes, rate, 95% Wilson interval, mean time to success, wall time."""
    agg = info["aggregated"]
    lo, hi = agg["pc_success_ci95"]
    tts = agg.get("avg_time_to_success_s")
    tts_text = f"   mean time to success {tts:.1f} s" if tts is not None else ""
    return (f"success {agg['n_successes']}/{agg['n_episodes']} = {agg['pc_success']:.1f}% "
            f"(95% Wilson CI {lo:.1f}-{hi:.1f}%){tts_text}   eval {agg['eval_s']:.0f} s")
