"""The multi-view dataset reader: NeRF-synthetic object folders → images and cameras at a given resolution.

Layout: an object folder holds ``transforms_train.json`` (+ optional ``transforms_test.json``) with
``camera_angle_x`` and ``frames[].file_path`` (relative, extension optional) / ``transform_matrix`` (4×4
Blender/OpenGL camera-to-world), RGBA or RGB images, and ``caption.txt`` (the folder name, underscores as spaces,
when missing); a dataset is one object folder or a folder of object folders.

Used by the multi-view prior (:mod:`lucid_app.priors.multiview`), the learned prior's training data and the
quality benchmark.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from lucid_app.priors.base import PriorError
from lucid_app.render.cameras import CameraBatch, cameras_from_opengl_c2w

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".PNG", ".jpg", ".jpeg")


@dataclass
class MultiViewObject:
    """One object of the dataset at the prior's resolution R.

    Attributes:
        caption: its caption.
        train_images: [N, R, R, 3] in [0, 1], alpha composited on the background.
        train_cameras: N cameras at R × R (from ``camera_angle_x`` and the poses).
        test_images, test_cameras: the same for ``transforms_test.json`` (None when absent).
    """

    caption: str
    train_images: torch.Tensor
    train_cameras: CameraBatch
    test_images: torch.Tensor | None = None
    test_cameras: CameraBatch | None = None


def resize_images(images: torch.Tensor, size_px: int) -> torch.Tensor:
    """[N, H, W, 3] → [N, size_px, size_px, 3], bilinear with antialiasing, differentiable."""
    if images.shape[1] == size_px and images.shape[2] == size_px:
        return images
    chw = images.permute(0, 3, 1, 2)
    out = F.interpolate(chw, size=(size_px, size_px), mode="bilinear", antialias=True, align_corners=False)
    return out.permute(0, 2, 3, 1)


def image_file(folder: Path, file_path: str) -> Path:
    """The image of a frame's ``file_path`` (relative to ``folder``, extension optional)."""
    path = folder / file_path
    if path.is_file():
        return path
    for ext in IMAGE_EXTENSIONS:
        candidate = path.with_name(path.name + ext)
        if candidate.is_file():
            return candidate
    raise PriorError(f"multi-view dataset: image {file_path!r} not found under {folder}")


def read_image(path: Path, background: tuple[float, float, float]) -> torch.Tensor:
    """An RGB(A) image file → [H, W, 3] float32 in [0, 1], alpha composited on ``background``."""
    array = np.asarray(iio.imread(path))
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    pixels = torch.from_numpy(array.astype(np.float32) / scale)
    rgb = pixels[..., :3]
    if pixels.shape[-1] == 4:
        alpha = pixels[..., 3:4]
        rgb = rgb * alpha + torch.tensor(background, dtype=torch.float32) * (1.0 - alpha)
    return rgb


def read_transforms(folder: Path, split_file: str) -> tuple[float, list[dict[str, Any]]]:
    """``camera_angle_x`` (rad) and the frames of one ``transforms_*.json`` of an object folder.

    Raises:
        PriorError: no ``camera_angle_x`` or no frames.
    """
    meta = json.loads((folder / split_file).read_text())
    frames = meta.get("frames") or []
    if "camera_angle_x" not in meta or not frames:
        raise PriorError(f"{folder / split_file}: needs 'camera_angle_x' and a non-empty 'frames' list")
    return float(meta["camera_angle_x"]), frames


def load_split(
    folder: Path, split_file: str, resolution: int, background: tuple[float, float, float]
) -> tuple[torch.Tensor, CameraBatch]:
    """Images [N, R, R, 3] and cameras of one ``transforms_*.json`` of an object folder."""
    fovx_rad, frames = read_transforms(folder, split_file)
    images = []
    for frame in frames:
        image = read_image(image_file(folder, frame["file_path"]), background)
        if image.shape[0] != image.shape[1]:
            logger.warning("%s: non-square image %s is squashed to %d px", folder, frame["file_path"], resolution)
        images.append(resize_images(image[None], resolution)[0])
    c2w = torch.tensor([frame["transform_matrix"] for frame in frames], dtype=torch.float32)
    cameras = cameras_from_opengl_c2w(c2w, fovx_rad, resolution, resolution)
    return torch.stack(images).clamp(0.0, 1.0), cameras


def load_object(folder: Path, resolution: int, background: tuple[float, float, float]) -> MultiViewObject:
    """One object folder (module docstring) at ``resolution`` pixels."""
    caption_file = folder / "caption.txt"
    caption = caption_file.read_text().strip() if caption_file.is_file() else folder.name.replace("_", " ")
    train_images, train_cameras = load_split(folder, "transforms_train.json", resolution, background)
    test_images = test_cameras = None
    if (folder / "transforms_test.json").is_file():
        test_images, test_cameras = load_split(folder, "transforms_test.json", resolution, background)
    return MultiViewObject(caption, train_images, train_cameras, test_images, test_cameras)


def object_folders(path: Path) -> list[Path]:
    """The object folders of a dataset: ``path`` itself, or its sub-folders that hold ``transforms_train.json``."""
    if (path / "transforms_train.json").is_file():
        return [path]
    if path.is_dir():
        folders = sorted(p for p in path.iterdir() if (p / "transforms_train.json").is_file())
        if folders:
            return folders
    raise PriorError(
        f"multi-view dataset {str(path)!r}: expected transforms_train.json there or in its sub-folders "
        "(NeRF-synthetic layout, DESIGN §5)"
    )
