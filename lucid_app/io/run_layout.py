"""The files of a run folder, named once: the trainer and ``render`` write them; the CLI, batch runs, the app's
run folders and its tabs read them. Names only (nothing of lucid_app imported, no I/O): the run folder's name
(:func:`slug`), its files (``RUN_FILES``) and which of them exist (:func:`run_files`); the io writers and the
end-of-run export do the writing.
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
CHECKPOINT_NAME = "checkpoint.pt"
PLY_NAME = "model.ply"
# The copy of model.ply framed for the app's splat viewer (``splat_view.py``).
VIEW_PLY_NAME = "model_view.ply"
TURNTABLE_NAME = "turntable.mp4"
MESH_NAME = "mesh.glb"
# The copy of mesh.glb for the app's mesh viewer (unlit, see ``mesh/write.py``).
VIEW_MESH_NAME = "mesh_view.glb"
# The textured mesh as .obj + .mtl + .png, zipped (written with a textured mesh.glb).
MESH_ZIP_NAME = "mesh_obj.zip"
# The ring of evaluation views: ``views/view_000.png``, ``views/view_001.png``, ...
VIEWS_DIR = "views"
VIEW_GLOB = f"{VIEWS_DIR}/view_*.png"


def view_file(index: int) -> str:
    """The ``index``-th evaluation view, relative to the run folder (``views/view_000.png`` for 0)."""
    return f"{VIEWS_DIR}/view_{index:03d}.png"


# The first evaluation view, which the A/B tab shows for each run.
EVAL_VIEW = Path(view_file(0))

# Output files of a run folder, by the names the UI and the API use.
RUN_FILES = {"ply": PLY_NAME, "video": TURNTABLE_NAME, "config": CONFIG_NAME, "mesh": MESH_NAME,
             "metrics": METRICS_NAME, "view_ply": VIEW_PLY_NAME, "view_mesh": VIEW_MESH_NAME, "mesh_zip": MESH_ZIP_NAME}
# Every file a run writes into its folder, as globs relative to it: what ``generate --overwrite`` removes (and
# nothing else, so a user's own files in the folder survive).
RUN_OUTPUT_PATTERNS = (CONFIG_NAME, METRICS_NAME, CHECKPOINT_NAME, PLY_NAME, VIEW_PLY_NAME, TURNTABLE_NAME,
                       MESH_NAME, VIEW_MESH_NAME, MESH_ZIP_NAME, VIEW_GLOB)


def run_files(run_dir: Path) -> dict[str, str]:
    """The run's output files that exist, by name (see ``RUN_FILES``)."""
    return {name: str(run_dir / file) for name, file in RUN_FILES.items() if (run_dir / file).is_file()}


def slug(text: str, max_len: int = 40) -> str:
    """A short lowercase file-name part of a prompt ("run" when nothing is left)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "run"
