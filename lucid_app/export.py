"""Writing results: images, turntable videos, configs, checkpoints, metrics, and a run's end outputs
(:func:`export_run`; ``ply.py`` writes splat files).

Every writer is atomic: it writes a temporary file beside the target and renames it, so a crash or Ctrl-C
never leaves a half-written result and never destroys the previous one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lucid_app.cameras import CameraBatch, turntable, turntable_rings
from lucid_app.events import ExportEvent
from lucid_app.ply import GaussianPly, write_gaussian_ply
from lucid_app.render.base import Renderer, Splats
from lucid_app.run_layout import MESH_NAME, PLY_NAME, TURNTABLE_NAME, VIEW_PLY_NAME, VIEWS_DIR, view_file
from lucid_app.splat_view import framed_for_viewer

if TYPE_CHECKING:
    from lucid_app.config import TrainConfig

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) and move it onto ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o644)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_temp_glob(name: str) -> str:
    """The glob of the temporary files :func:`atomic_path` makes for ``name`` (left behind only by a kill)."""
    path = Path(name)
    return str(path.with_name(f".{path.stem}.*{path.suffix}"))


class OutputError(ValueError):
    """An output path that cannot be written, or that would overwrite a run; the message says what to do."""


def _check_creatable_dir(folder: Path, what: str) -> None:
    """The nearest existing folder on the way to ``folder`` is a writable folder (so ``mkdir -p`` works)."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder}: the folder {existing} is not writable")


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Check, before any work, that ``path`` is a folder that exists or can be made, and can be written in.

    Args:
        path: the output folder.
        what: how the message names it (the flag).

    Raises:
        OutputError: ``path`` (or a folder on the way to it) is a file, or the folder is not writable.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    _check_creatable_dir(path, what)
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Check, before any work, that the file ``path`` can be written (replacing a file there is allowed).

    Raises:
        OutputError: ``path`` is a folder, a folder on the way to it is a file, or its folder is not writable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    _check_creatable_dir(path.parent, what)
    return path


def remove_files(paths: list[Path]) -> None:
    """Delete these files (folders are kept, even when left empty)."""
    for path in paths:
        logger.debug("removing %s", path)
        path.unlink(missing_ok=True)


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] (tensor or array) or uint8 -> contiguous uint8 array [H, W, 3]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray((np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def write_png(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    """Write an [H, W, 3] image (float in [0, 1] or uint8) as PNG."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(image), extension=".png")
    return Path(path)


def write_video(path: str | Path, frames: Iterator[np.ndarray], fps: int, size: tuple[int, int]) -> int:
    """Stream uint8 frames [H, W, 3] of ``size`` = (width, height) to an H.264 ``.mp4``; returns the frame count.

    Uses the ffmpeg binary shipped by ``imageio-ffmpeg``. Odd sizes are allowed (no macro-block padding).
    """
    import imageio_ffmpeg

    count = 0
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=8, macro_block_size=1,
            output_params=["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"],
        )
        writer.send(None)
        try:
            for frame in frames:
                writer.send(to_uint8(frame))
                count += 1
        finally:
            writer.close()
    return count


def render_frames(
    renderer: Renderer,
    splats: Splats,
    cameras: CameraBatch,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Render ``cameras`` in batches without gradients, yielding uint8 frames [H, W, 3] one by one."""
    device = splats.means.device
    for start in range(0, len(cameras), batch_size):
        batch = cameras[start : start + batch_size].to(device, splats.means.dtype)
        bg = torch.tensor(background, dtype=splats.means.dtype, device=device).expand(len(batch), 3)
        with torch.no_grad():
            rgb = renderer.render(splats, batch, bg).rgb
        for frame in rgb:
            yield to_uint8(frame)
        if progress is not None:
            progress(len(batch))


def write_turntable(
    path: str | Path,
    renderer: Renderer,
    splats: Splats,
    cameras: CameraBatch,
    fps: int = 30,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    progress: Callable[[int], None] | None = None,
) -> int:
    """Render a camera path and write it as an ``.mp4``; returns the number of frames written."""
    frames = render_frames(renderer, splats, cameras, background, progress=progress)
    return write_video(path, frames, fps, (cameras.width, cameras.height))


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (e.g. ``config.yaml``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` a checkpoint atomically: a crash mid-write keeps the previous checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors, numbers, strings and dicts only).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        OSError: the file cannot be opened (e.g. no permission).
        ValueError: the file is damaged, or not a lucid-app checkpoint (our message; torch's is in the debug log).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    # Opened here so that an unreadable file (permissions) is an OSError of its own, not a damaged checkpoint.
    with path.open("rb") as file:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged file fails anywhere in torch.load (see _unreadable)
            raise _unreadable(path, err) from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} is not a lucid-app checkpoint (it holds a {type(state).__name__})")
    return state


def _unreadable(path: Path, err: Exception) -> ValueError:
    """Our message for a checkpoint ``torch.load`` refused (its own text advises retrying with weights_only=False,
    i.e. running the file's code, or filing an issue: not our advice); the details go to the debug log."""
    logger.debug("torch.load(%s) failed", path, exc_info=err)
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        return ValueError(
            f"checkpoint {path} holds Python objects other than tensors, numbers and strings, so it was not written "
            "by lucid-app; it is not loaded, since unpickling it could run code"
        )
    # KeyError, EOFError, RuntimeError (zip reader), OSError (seek past the end), UnpicklingError (bad opcodes), ...
    return ValueError(f"checkpoint {path} is damaged (truncated or not a checkpoint file)")


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``, flushed at once so a crash loses nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def export_run(
    run_dir: Path,
    raw: GaussianPly,
    splats: Splats,
    renderer: Renderer,
    config: TrainConfig,
    on_stage: Callable[[ExportEvent], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Write a run's outputs of one state: ``model.ply`` (and its copy framed for the app's viewer,
    ``model_view.ply``), ``turntable.mp4``, ``views/*.png`` and, with ``export.mesh``, ``mesh.glb``.

    Args:
        run_dir: the run's folder.
        raw: the Gaussians as stored (``GaussianModel.to_raw()``); splats: the same, activated, for rendering.
        renderer: renders the turntable and the views; config: the run's config (``export``, ``cameras``, ``render``).
        on_stage: receives an :class:`ExportEvent` as each stage starts (and per turntable frame).
        progress: called as turntable frames are rendered (``render_frames``' progress).

    Returns:
        {output name: path} of what was written.
    """
    stage = on_stage or (lambda event: None)
    exp, cams = config.export, config.cameras
    stage(ExportEvent(stage=PLY_NAME))
    files = {"ply": str(write_gaussian_ply(run_dir / PLY_NAME, raw))}
    # The app's splat viewer shows this copy, centred and scaled in the viewer's axes (splat_view.py).
    files["view_ply"] = str(write_gaussian_ply(run_dir / VIEW_PLY_NAME, framed_for_viewer(raw)))
    files["video"] = str(_export_turntable(run_dir, splats, renderer, config, stage, progress))
    size = exp.turntable_size
    ring = turntable(exp.eval_views, size, size, cams.default_radius, cams.default_fovy_rad, (cams.default_polar_deg,))
    for i, frame in enumerate(render_frames(renderer, splats, ring, config.render.background)):
        write_png(run_dir / view_file(i), frame)
    files["views"] = str(run_dir / VIEWS_DIR)
    if exp.mesh:
        mesh = _export_mesh(run_dir, splats, config, stage)
        if mesh is not None:
            files["mesh"] = str(mesh)
    return files


def _export_turntable(run_dir: Path, splats: Splats, renderer: Renderer, config: TrainConfig,
                      stage: Callable[[ExportEvent], None], progress: Callable[[int], None] | None) -> Path:
    """``turntable.mp4`` of :func:`export_run`, its frames split over ``export.turntable_rings`` orbits."""
    exp, cams = config.export, config.cameras
    frames = exp.turntable_frames  # split over the rings (cameras.turntable)
    rendered = 0

    def frames_done(count: int) -> None:
        # ``render_frames`` reports each batch's size (an increment, as tqdm's ``update`` takes); the stage event
        # carries the running total.
        nonlocal rendered
        rendered += count
        stage(ExportEvent(stage="turntable", done=rendered, total=frames))
        if progress is not None:
            progress(count)

    size = exp.turntable_size
    rings = turntable_rings(exp.turntable_rings, cams.default_polar_deg)
    path = turntable(exp.turntable_frames, size, size, cams.default_radius, cams.default_fovy_rad, rings)
    stage(ExportEvent(stage="turntable", done=0, total=frames))
    write_turntable(run_dir / TURNTABLE_NAME, renderer, splats, path, exp.turntable_fps, config.render.background,
                    frames_done)
    return run_dir / TURNTABLE_NAME


def _export_mesh(run_dir: Path, splats: Splats, config: TrainConfig,
                 stage: Callable[[ExportEvent], None]) -> Path | None:
    """``mesh.glb`` of :func:`export_run` (at most ``export.mesh_faces`` faces, textured unless ``export.mesh_texture``
    is 0), written last: a mesh that cannot be made (e.g. nothing above the iso-level) is logged and skipped (None),
    and every other output is already on disk."""
    from lucid_app.mesh import MeshError, mesh_from_splats, write_mesh_files

    stage(ExportEvent(stage="mesh"))
    exp = config.export
    try:
        mesh = mesh_from_splats(splats, exp.mesh_resolution, exp.mesh_iso, max_faces=exp.mesh_faces or None).mesh
        return Path(write_mesh_files(run_dir / MESH_NAME, mesh, splats, exp.mesh_texture)["files"][0])
    except (MeshError, MemoryError) as err:
        logger.warning("mesh export skipped: %s", err)
        return None
