"""The end-of-run export: a run's outputs of one state (``model.ply`` and the viewer's copy, ``turntable.mp4``,
``views/*.png`` and, on request, ``mesh.glb``), written through :mod:`lucid_app.io` (every file atomically).

A skip request (the app's "Skip export") ends it between two frames or stages: what was written stays, a turntable
in the making is discarded (its atomic write never lands), and ``model.ply`` is always written first.

The views are the turntable's own frames when its first ring (the default polar angle, from the front) passes
through every view's camera, i.e. when that ring's frame count is a multiple of ``export.eval_views``: the same
cameras at the same size, so the same pixels, rendered once (the views are then written as the turntable goes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lucid_app.io.media import write_png, write_video
from lucid_app.io.ply import GaussianPly, write_gaussian_ply
from lucid_app.io.run_layout import (
    MESH_NAME,
    MESH_ZIP_NAME,
    PLY_NAME,
    TURNTABLE_NAME,
    VIEW_MESH_NAME,
    VIEW_PLY_NAME,
    VIEWS_DIR,
    view_file,
)
from lucid_app.io.splat_view import framed_for_viewer
from lucid_app.render.base import Renderer, Splats
from lucid_app.render.cameras import turntable, turntable_rings
from lucid_app.render.frames import render_frames
from lucid_app.train.events import ExportEvent

if TYPE_CHECKING:
    from lucid_app.config import TrainConfig

logger = logging.getLogger(__name__)


class _ExportSkipped(Exception):
    """Raised between two frames once the skip is requested; ends :func:`export_run` early."""


def export_run(
    run_dir: Path,
    raw: GaussianPly,
    splats: Splats,
    renderer: Renderer,
    config: TrainConfig,
    on_stage: Callable[[ExportEvent], None] | None = None,
    progress: Callable[[int], None] | None = None,
    skip: Callable[[], bool] = lambda: False,
) -> dict[str, str]:
    """Write a run's outputs of one state: ``model.ply`` (and its copy framed for the app's viewer,
    ``model_view.ply``), ``turntable.mp4``, ``views/*.png`` and, with ``export.mesh``, ``mesh.glb`` (and the app
    viewer's unlit copy ``mesh_view.glb``, and with a texture ``mesh_obj.zip``).

    Args:
        run_dir: the run's folder.
        raw: the Gaussians as stored (``GaussianModel.to_raw()``); splats: the same, activated, for rendering.
        renderer: renders the turntable and the views; config: the run's config (``export``, ``cameras``, ``render``).
        on_stage: receives an :class:`ExportEvent` as each stage starts (and per turntable frame).
        progress: called as turntable frames are rendered (``render_frames``' progress).
        skip: asked between frames and stages; True ends the export there (module docstring).

    Returns:
        {output name: path} of what was written.
    """
    stage = on_stage or (lambda event: None)
    exp, cams = config.export, config.cameras
    stage(ExportEvent(stage=PLY_NAME))
    files = {"ply": str(write_gaussian_ply(run_dir / PLY_NAME, raw))}
    # The app's splat viewer shows this copy, centred and scaled in the viewer's axes (splat_view.py).
    files["view_ply"] = str(write_gaussian_ply(run_dir / VIEW_PLY_NAME, framed_for_viewer(raw)))
    try:
        _check(skip)
        views_in_turntable = views_from_turntable(exp.turntable_frames, exp.turntable_rings, exp.eval_views)
        files["video"] = str(_export_turntable(run_dir, splats, renderer, config, stage, progress, skip,
                                               views_in_turntable))
        if not views_in_turntable:
            size = exp.turntable_size
            stage(ExportEvent(stage=VIEWS_DIR))
            ring = turntable(exp.eval_views, size, size, cams.default_radius, cams.default_fovy_rad,
                             (cams.default_polar_deg,))
            for i, frame in enumerate(render_frames(renderer, splats, ring, config.render.background)):
                _check(skip)
                write_png(run_dir / view_file(i), frame)
        files["views"] = str(run_dir / VIEWS_DIR)
        _check(skip)
    except _ExportSkipped:
        logger.info("export of %s skipped after %s", run_dir.name, ", ".join(sorted(files)))
        return files
    if exp.mesh:
        mesh = _export_mesh(run_dir, splats, config, stage)
        if mesh is not None:
            files["mesh"] = str(mesh)
    return files


def _check(skip: Callable[[], bool]) -> None:
    if skip():
        raise _ExportSkipped


def first_ring_frames(frames: int, rings: int) -> int:
    """The frames of the turntable's first ring (``frames`` split over ``rings`` as
    :func:`~lucid_app.render.cameras.turntable` splits them: the first rings take the remainder)."""
    return frames // rings + (1 if frames % rings else 0)


def views_from_turntable(frames: int, rings: int, views: int) -> bool:
    """Whether the turntable's first ring holds the ``views`` evenly spaced eval cameras: its frame count is a
    multiple of ``views``."""
    first_ring = first_ring_frames(frames, rings)
    return first_ring >= views and first_ring % views == 0


def _export_turntable(run_dir: Path, splats: Splats, renderer: Renderer, config: TrainConfig,
                      stage: Callable[[ExportEvent], None], progress: Callable[[int], None] | None,
                      skip: Callable[[], bool], write_views: bool) -> Path:
    """``turntable.mp4`` of :func:`export_run`, its frames split over ``export.turntable_rings`` orbits; with
    ``write_views``, every k-th frame of the first ring is also written as eval view (:func:`views_from_turntable`)."""
    exp, cams = config.export, config.cameras
    frames = exp.turntable_frames  # split over the rings (cameras.turntable)
    rendered = 0

    def frames_done(count: int) -> None:
        # ``render_frames`` reports each batch's size (an increment, as tqdm's ``update`` takes); the stage event
        # carries the running total.
        nonlocal rendered
        _check(skip)  # raised inside the video writer: its temporary file is removed, nothing lands
        rendered += count
        stage(ExportEvent(stage="turntable", done=rendered, total=frames))
        if progress is not None:
            progress(count)

    size = exp.turntable_size
    rings = turntable_rings(exp.turntable_rings, cams.default_polar_deg)
    path = turntable(exp.turntable_frames, size, size, cams.default_radius, cams.default_fovy_rad, rings)
    stage(ExportEvent(stage="turntable", done=0, total=frames))
    rendered_frames = render_frames(renderer, splats, path, config.render.background, progress=frames_done)
    if write_views:
        every = first_ring_frames(frames, exp.turntable_rings) // exp.eval_views
        rendered_frames = _keeping_views(rendered_frames, run_dir, every, exp.eval_views)
    write_video(run_dir / TURNTABLE_NAME, rendered_frames, exp.turntable_fps, (size, size))
    return run_dir / TURNTABLE_NAME


def _keeping_views(frames: Iterator[np.ndarray], run_dir: Path, every: int, views: int) -> Iterator[np.ndarray]:
    """``frames`` passed through, frames 0, ``every``, 2·``every``, … (``views`` of them) also written as the eval
    views."""
    for i, frame in enumerate(frames):
        if i % every == 0 and i // every < views:
            write_png(run_dir / view_file(i // every), frame)
        yield frame


def _export_mesh(run_dir: Path, splats: Splats, config: TrainConfig,
                 stage: Callable[[ExportEvent], None]) -> Path | None:
    """``mesh.glb`` of :func:`export_run` (at most ``export.mesh_faces`` faces, textured unless ``export.mesh_texture``
    is 0; baked by ``export.mesh_bake``), the app viewer's copy ``mesh_view.glb`` and, textured, the ``.obj`` set zipped
    (``mesh_obj.zip``), written last, ``mesh.glb`` after the others (the app shows the mesh once it exists): a mesh that
    cannot be made (e.g. nothing above the iso-level) is logged and skipped (None), and every other output is already on
    disk."""
    from lucid_app.mesh import MeshError, mesh_from_splats, write_mesh_files

    stage(ExportEvent(stage="mesh"))
    exp = config.export
    try:
        mesh = mesh_from_splats(splats, exp.mesh_resolution, exp.mesh_iso, max_faces=exp.mesh_faces or None).mesh
        written = write_mesh_files(run_dir / MESH_NAME, mesh, splats, exp.mesh_texture, exp.mesh_bake,
                                   viewer=run_dir / VIEW_MESH_NAME, obj_zip=run_dir / MESH_ZIP_NAME)
        return Path(written["files"][0])
    except (MeshError, MemoryError) as err:
        logger.warning("mesh export skipped: %s", err)
        return None
