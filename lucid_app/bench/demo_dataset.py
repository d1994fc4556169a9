"""The offline demo dataset: asymmetric objects of coloured primitives, rendered into the NeRF-synthetic layout.

The multi-view prior (``priors/multiview.py``, DESIGN §5) needs posed images of known objects; these are built
here without any download: each object is a list of :class:`~lucid_app.scene.primitives.Primitive` (world z up, the
object's **front faces +y**, i.e. the azimuth-0 camera), sampled into nearly opaque isotropic Gaussians with kNN
scales, and rendered with the project's own torch renderer.

Images are RGBA: alpha is the rendered alpha and RGB the *straight* (un-premultiplied) colour, so compositing a
PNG on any background reproduces the render on that background (the loader composites on white, matching the
white training background). Poses are Blender/OpenGL camera-to-world matrices (x right, y up, looking down -z),
the inverse direction of :func:`lucid_app.render.cameras.viewmats_from_opengl_c2w`.

Cameras: the train split is a deterministic staggered grid over the orbit band the demo preset samples
(:func:`grid_views`); the test split draws seeded, azimuth-stratified random views in the same band
(:func:`random_views`), so test cameras almost surely differ from train cameras.

Randomness: for a given ``seed`` every object samples its points from ``torch.Generator().manual_seed(seed)``
(so one object's points do not depend on the others) and the test cameras from another generator with the same
seed (so all objects share the same held-out cameras).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from lucid_app.config import OptimConfig
from lucid_app.io.files import atomic_path
from lucid_app.render.base import Renderer, Splats
from lucid_app.render.cameras import CameraBatch, orbit_cameras
from lucid_app.scene.gaussians import GaussianModel
from lucid_app.scene.primitives import Primitive, primitives_to_points

logger = logging.getLogger(__name__)

# The orbit band of the demo preset (presets/demo.yaml): fixed radius and field of view.
RADIUS = 4.0
FOVY_RAD = 0.6
POLAR_RANGE_DEG = (60.0, 100.0)
AZIMUTH_RANGE_DEG = (-180.0, 180.0)
DEFAULT_SIZE_PX = 64
DEFAULT_TRAIN_VIEWS = 300
DEFAULT_TEST_VIEWS = 20
DEFAULT_NUM_POINTS = 8000
DEFAULT_SEED = 0
# Nearly opaque: GaussianModel needs an opacity in (0, 1).
OPACITY = 0.98
RENDER_BATCH = 8
# Key of the generator's settings inside transforms_*.json (the loader ignores unknown keys).
GENERATOR_KEY = "lucid_demo"

WHITE = (0.95, 0.95, 0.97)
BLACK = (0.05, 0.05, 0.05)
ORANGE = (1.0, 0.45, 0.0)
RED = (0.85, 0.08, 0.08)
BROWN = (0.45, 0.25, 0.1)
YELLOW = (1.0, 0.85, 0.05)
BLUE = (0.1, 0.25, 0.9)
LIGHT_BLUE = (0.6, 0.85, 1.0)
GREEN = (0.15, 0.6, 0.15)
DARK_GREEN = (0.05, 0.35, 0.1)
TERRACOTTA = (0.8, 0.4, 0.2)
PINK = (1.0, 0.4, 0.7)
GREY = (0.35, 0.35, 0.38)
# The flower's head turns from the front towards its left, so its two sides differ.
FLOWER_TURN_DEG = 30.0


@dataclass(frozen=True)
class DemoObject:
    """One demo object: folder ``name``, one-line ``caption`` and its primitives (front towards +y)."""

    name: str
    caption: str
    primitives: tuple[Primitive, ...]


def snowman() -> DemoObject:
    """A snowman: carrot nose, eyes and buttons on the front (+y), a red scarf whose tail hangs on its right (+x)
    side, a black hat, stick arms raised unevenly, and a plain white back."""
    prims = (
        Primitive("ellipsoid", (0.0, 0.0, -0.42), (0.4, 0.4, 0.36), WHITE),
        Primitive("ellipsoid", (0.0, 0.0, 0.12), (0.29, 0.29, 0.27), WHITE),
        Primitive("ellipsoid", (0.0, 0.0, 0.53), (0.2, 0.2, 0.2), WHITE),
        Primitive("cone", (0.0, 0.28, 0.53), (0.05, 0.05, 0.11), ORANGE, axis=(0.0, 1.0, 0.0)),
        Primitive("ellipsoid", (-0.07, 0.17, 0.61), (0.03, 0.025, 0.03), BLACK),
        Primitive("ellipsoid", (0.07, 0.17, 0.61), (0.03, 0.025, 0.03), BLACK),
        Primitive("ellipsoid", (0.0, 0.28, 0.16), (0.035, 0.025, 0.035), BLACK),
        Primitive("ellipsoid", (0.0, 0.28, 0.02), (0.035, 0.025, 0.035), BLACK),
        Primitive("ellipsoid", (0.0, 0.37, -0.3), (0.04, 0.03, 0.04), BLACK),
        Primitive("cylinder", (0.0, 0.0, 0.35), (0.23, 0.23, 0.05), RED),
        Primitive("box", (0.15, 0.17, 0.16), (0.06, 0.025, 0.17), RED),
        Primitive("cylinder", (0.0, 0.0, 0.71), (0.2, 0.2, 0.015), BLACK),
        Primitive("cylinder", (0.0, 0.0, 0.8), (0.13, 0.13, 0.09), BLACK),
        Primitive("cylinder", (0.43, 0.0, 0.3), (0.022, 0.022, 0.22), BROWN, axis=(1.0, 0.0, 1.0)),
        Primitive("cylinder", (-0.45, 0.0, 0.14), (0.022, 0.022, 0.22), BROWN, axis=(-1.0, 0.0, 0.15)),
    )
    return DemoObject("snowman", "a snowman", prims)


def toy_car() -> DemoObject:
    """A red toy car, long along y: yellow headlights and a grey grille at the front (+y), a light-blue cabin
    set towards the back, a blue rear panel, black wheels, and a yellow flag on its left (-x) rear corner."""
    prims = (
        Primitive("box", (0.0, 0.0, -0.12), (0.36, 0.72, 0.16), RED),
        Primitive("box", (0.0, -0.15, 0.17), (0.3, 0.33, 0.14), LIGHT_BLUE),
        Primitive("box", (0.0, -0.15, 0.33), (0.31, 0.35, 0.025), RED),
        Primitive("box", (0.0, -0.735, -0.1), (0.34, 0.02, 0.13), BLUE),
        Primitive("box", (0.0, 0.735, -0.17), (0.16, 0.02, 0.07), GREY),
        Primitive("ellipsoid", (-0.24, 0.73, -0.06), (0.07, 0.03, 0.06), YELLOW),
        Primitive("ellipsoid", (0.24, 0.73, -0.06), (0.07, 0.03, 0.06), YELLOW),
        Primitive("cylinder", (0.38, 0.45, -0.3), (0.15, 0.15, 0.05), BLACK, axis=(1.0, 0.0, 0.0)),
        Primitive("cylinder", (-0.38, 0.45, -0.3), (0.15, 0.15, 0.05), BLACK, axis=(1.0, 0.0, 0.0)),
        Primitive("cylinder", (0.38, -0.45, -0.3), (0.15, 0.15, 0.05), BLACK, axis=(1.0, 0.0, 0.0)),
        Primitive("cylinder", (-0.38, -0.45, -0.3), (0.15, 0.15, 0.05), BLACK, axis=(1.0, 0.0, 0.0)),
        Primitive("cylinder", (-0.3, -0.6, 0.32), (0.012, 0.012, 0.2), GREY),
        Primitive("box", (-0.3, -0.53, 0.45), (0.01, 0.07, 0.06), YELLOW),
    )
    return DemoObject("toy_car", "a red toy car", prims)


def potted_flower() -> DemoObject:
    """A potted flower: a terracotta pot with a blue label on its front (+y), a green stem, a pink flower with a
    yellow centre turned 30 degrees from the front towards its left (-x) (its back is green, so the right side
    sees green), and one big leaf on its left."""
    facing = (-math.sin(math.radians(FLOWER_TURN_DEG)), math.cos(math.radians(FLOWER_TURN_DEG)), 0.0)
    head = (0.0, 0.0, 0.55)

    def along(offset: float) -> tuple[float, float, float]:
        return tuple(h + offset * f for h, f in zip(head, facing))

    prims = (
        Primitive("cylinder", (0.0, 0.0, -0.55), (0.3, 0.3, 0.25), TERRACOTTA),
        Primitive("cylinder", (0.0, 0.0, -0.27), (0.35, 0.35, 0.05), TERRACOTTA),
        Primitive("cylinder", (0.0, 0.0, -0.21), (0.3, 0.3, 0.012), BROWN),
        Primitive("box", (0.0, 0.305, -0.56), (0.14, 0.01, 0.09), BLUE),
        Primitive("cylinder", (0.0, 0.0, 0.1), (0.03, 0.03, 0.33), GREEN),
        Primitive("ellipsoid", (-0.24, 0.0, 0.0), (0.2, 0.05, 0.09), DARK_GREEN),
        # Discs: thin along their local z, which ``axis`` turns onto the facing direction.
        Primitive("ellipsoid", along(0.06), (0.3, 0.3, 0.05), PINK, axis=facing),
        Primitive("ellipsoid", along(0.0), (0.22, 0.22, 0.05), DARK_GREEN, axis=facing),
        Primitive("ellipsoid", along(0.11), (0.1, 0.1, 0.04), YELLOW, axis=facing),
    )
    return DemoObject("potted_flower", "a potted flower", prims)


def demo_objects() -> list[DemoObject]:
    """The demo objects, in folder (alphabetical) order."""
    return sorted([snowman(), toy_car(), potted_flower()], key=lambda obj: obj.name)


def object_splats(obj: DemoObject, num_points: int, generator: torch.Generator) -> Splats:
    """Surface samples of ``obj`` as opaque isotropic Gaussians with kNN scales (detached :class:`Splats`)."""
    points, colors = primitives_to_points(list(obj.primitives), num_points, generator)
    model = GaussianModel.from_points(points, OptimConfig(), colors=colors, opacity=OPACITY)
    splats = model.splats()
    return Splats(*(t.detach() for t in (splats.means, splats.quats, splats.scales, splats.opacities, splats.sh)),
                  sh_degree=splats.sh_degree)


# ---------------------------------------------------------------- cameras (pure)


def grid_views(
    count: int,
    polar_range_deg: tuple[float, float] = POLAR_RANGE_DEG,
    azimuth_range_deg: tuple[float, float] = AZIMUTH_RANGE_DEG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic staggered grid of ``count`` views over the band -> (azimuth_deg [count], polar_deg [count]).

    Rings sit at the centres of equal polar strata (which minimises the largest distance to a ring); their
    number makes the cells roughly square in angle (azimuth steps shrink by sin(polar) on the sphere). Each ring
    holds an equal share of the views at azimuth stratum centres, shifted by ``ring / rings`` of a step so
    neighbouring rings interleave. Azimuths are wrapped to [-180, 180).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    (p_lo, p_hi), (a_lo, a_hi) = polar_range_deg, azimuth_range_deg
    mid_sin = math.sin(math.radians(0.5 * (p_lo + p_hi)))
    aspect = max(p_hi - p_lo, 1e-6) / max((a_hi - a_lo) * mid_sin, 1e-6)
    rings = min(count, max(1, round(math.sqrt(count * aspect))))
    per_ring = [count // rings + (1 if i < count % rings else 0) for i in range(rings)]
    azimuth, polar = [], []
    for i, n in enumerate(per_ring):
        j = torch.arange(n, dtype=torch.float64)
        az = a_lo + (j + 0.5 + i / rings) * (a_hi - a_lo) / n
        azimuth.append(torch.remainder(az + 180.0, 360.0) - 180.0)
        polar.append(torch.full((n,), p_lo + (i + 0.5) * (p_hi - p_lo) / rings, dtype=torch.float64))
    return torch.cat(azimuth).float(), torch.cat(polar).float()


def random_views(
    count: int,
    generator: torch.Generator,
    polar_range_deg: tuple[float, float] = POLAR_RANGE_DEG,
    azimuth_range_deg: tuple[float, float] = AZIMUTH_RANGE_DEG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` seeded views: azimuth uniform in ``count`` equal strata (one each), polar uniform in the range.

    Returns:
        (azimuth_deg [count], polar_deg [count]), azimuth wrapped to [-180, 180).
    """
    (p_lo, p_hi), (a_lo, a_hi) = polar_range_deg, azimuth_range_deg
    u = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    az = a_lo + (torch.arange(count, dtype=torch.float64) + u[:, 0]) * (a_hi - a_lo) / count
    polar = p_lo + u[:, 1] * (p_hi - p_lo)
    return (torch.remainder(az + 180.0, 360.0) - 180.0).float(), polar.float()


def demo_cameras(azimuth_deg: torch.Tensor, polar_deg: torch.Tensor, size_px: int) -> CameraBatch:
    """Square cameras at the demo radius and field of view looking at the origin ([C] angles)."""
    n = azimuth_deg.shape[0]
    return orbit_cameras(
        azimuth_deg, polar_deg, torch.full((n,), RADIUS), torch.full((n,), FOVY_RAD), size_px, size_px
    )


def opengl_c2w_from_viewmats(viewmats: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera [C, 4, 4] -> Blender/OpenGL camera-to-world [C, 4, 4] (x right, y up, -z forward).

    The inverse of :func:`lucid_app.render.cameras.viewmats_from_opengl_c2w`: invert, then flip the camera's y and z
    axes.
    """
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=viewmats.dtype, device=viewmats.device))
    return torch.linalg.inv(viewmats) @ flip


# ---------------------------------------------------------------- rendering (pure)


def render_rgba(
    renderer: Renderer, splats: Splats, cameras: CameraBatch, batch_size: int = RENDER_BATCH
) -> np.ndarray:
    """Render ``cameras`` to uint8 RGBA [C, H, W, 4]: straight colour and rendered alpha.

    Rendering on black gives the premultiplied colour; dividing by alpha gives the straight colour, so that
    ``rgb * a + bg * (1 - a)`` is the render on any background ``bg``. Fully transparent pixels get colour 0.
    """
    chunks = []
    for start in range(0, len(cameras), batch_size):
        batch = cameras[start : start + batch_size]
        with torch.no_grad():
            out = renderer.render(splats, batch, torch.zeros(len(batch), 3))
        alpha = out.alpha.clamp(0.0, 1.0)
        straight = torch.where(alpha > 0, out.rgb / alpha.clamp_min(1e-12), torch.zeros_like(out.rgb))
        rgba = torch.cat([straight.clamp(0.0, 1.0), alpha], dim=-1)
        chunks.append(np.round(rgba.double().numpy() * 255.0).astype(np.uint8))
    images = np.concatenate(chunks)
    images[..., :3][images[..., 3] == 0] = 0
    return images


# ---------------------------------------------------------------- writing


def transforms_dict(split: str, c2w: torch.Tensor, fovx_rad: float, extra: dict | None = None) -> dict:
    """The ``transforms_<split>.json`` content: ``camera_angle_x`` and frames ``./<split>/r_<i>`` (no extension)."""
    frames = [
        {"file_path": f"./{split}/r_{i}", "transform_matrix": [[round(float(v), 7) for v in row] for row in m]}
        for i, m in enumerate(c2w.tolist())
    ]
    meta: dict = {"camera_angle_x": fovx_rad, "frames": frames}
    if extra:
        meta[GENERATOR_KEY] = extra
    return meta


def write_rgba_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 RGBA [H, W, 4] PNG atomically."""
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png", optimize=True)


def write_split(folder: Path, split: str, images: np.ndarray, c2w: torch.Tensor, extra: dict) -> None:
    """Images [N, H, W, 4] as ``<split>/r_<i>.png`` plus ``transforms_<split>.json`` (square images: fovx = fovy)."""
    for i, image in enumerate(images):
        write_rgba_png(folder / split / f"r_{i}.png", image)
    meta = transforms_dict(split, c2w, FOVY_RAD, extra)
    with atomic_path(folder / f"transforms_{split}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")


def build_object(
    obj: DemoObject,
    folder: Path,
    renderer: Renderer,
    size_px: int = DEFAULT_SIZE_PX,
    train_views: int = DEFAULT_TRAIN_VIEWS,
    test_views: int = DEFAULT_TEST_VIEWS,
    num_points: int = DEFAULT_NUM_POINTS,
    seed: int = DEFAULT_SEED,
) -> None:
    """Write one object folder: caption.txt, train split (grid views) and test split (seeded random views)."""
    splats = object_splats(obj, num_points, torch.Generator().manual_seed(seed))
    extra = {"seed": seed, "num_points": num_points, "size_px": size_px, "object": obj.name}
    splits = {"train": grid_views(train_views)}
    if test_views > 0:
        splits["test"] = random_views(test_views, torch.Generator().manual_seed(seed))
    for split, (azimuth, polar) in splits.items():
        cameras = demo_cameras(azimuth, polar, size_px)
        images = render_rgba(renderer, splats, cameras)
        write_split(folder, split, images, opengl_c2w_from_viewmats(cameras.viewmats), extra)
        logger.info("%s: %d %s views at %d px", obj.name, len(cameras), split, size_px)
    with atomic_path(folder / "caption.txt") as tmp:
        tmp.write_text(obj.caption + "\n")


def build_demo_dataset(
    out: Path,
    renderer: Renderer,
    size_px: int = DEFAULT_SIZE_PX,
    train_views: int = DEFAULT_TRAIN_VIEWS,
    test_views: int = DEFAULT_TEST_VIEWS,
    num_points: int = DEFAULT_NUM_POINTS,
    seed: int = DEFAULT_SEED,
    objects: list[DemoObject] | None = None,
) -> list[Path]:
    """Write every object (default :func:`demo_objects`) into ``out/<name>/``; returns the object folders."""
    folders = []
    for obj in demo_objects() if objects is None else objects:
        folder = Path(out) / obj.name
        build_object(obj, folder, renderer, size_px, train_views, test_views, num_points, seed)
        folders.append(folder)
    return folders
