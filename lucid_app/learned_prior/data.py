"""The learned prior's training data: a dataset's *train* views with their captions (DESIGN §5b).

Images come from the multi-view prior's reader (``priors/multiview.py``: NeRF-synthetic layout, composited on
white, resized to R), as x₀ = image·2 − 1 in [-1, 1]. Each image is captioned from its object's ``caption.txt``
and its camera's view word, with exactly the multi-view prior's sector rules (``multiview.view_sector_mask``:
overhead for polar < 30°, else front / side / back by |azimuth|) and the view prompts' phrasing
(``PromptConfig.front_suffix`` = ", front view", ...):

- with probability :data:`DROP_PROB` (0.1) the empty string: classifier-free guidance's unconditional branch;
- otherwise with probability :data:`PLAIN_PROB` (0.2) the plain caption, so a prompt without a view word works;
- otherwise "<caption>, <word> view".

There is no camera input and no augmentation. All captions an image can get are tokenized once
(:attr:`TrainingData.texts`); a batch draws indices into them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lucid_app.priors.base import PriorError
from lucid_app.priors.multiview import VIEW_WORDS, view_sector_mask
from lucid_app.priors.nerf_dataset import load_split, object_folders

logger = logging.getLogger(__name__)

DROP_PROB = 0.1
PLAIN_PROB = 0.2
VIEW_SUFFIX = ", {word} view"
WHITE = (1.0, 1.0, 1.0)
TRAIN_SPLIT = "transforms_train.json"


def view_caption(caption: str, word: str) -> str:
    """"a red toy car" + "front" → "a red toy car, front view" (the view prompts' phrasing)."""
    return caption + VIEW_SUFFIX.format(word=word)


def view_word_index(azimuth_deg: torch.Tensor, polar_deg: torch.Tensor) -> torch.Tensor:
    """[N] index into ``VIEW_WORDS`` of each camera's sector (the sectors partition the sphere)."""
    masks = torch.stack([view_sector_mask(word, azimuth_deg, polar_deg) for word in VIEW_WORDS], dim=1)
    if not bool((masks.sum(dim=1) == 1).all()):
        raise ValueError("view sectors must partition the cameras (multiview.view_sector_mask)")
    return masks.to(torch.long).argmax(dim=1)


@dataclass
class TrainingData:
    """The train views of a dataset at resolution R, with their caption choices.

    Attributes:
        images: [N, 3, R, R] float32 x₀ in [-1, 1].
        captions: one caption per object, in object-folder order.
        texts: every caption string a sample can get: "" first, then per object its plain caption and its four
            view captions (``VIEW_WORDS`` order); index 0 is the unconditional one.
        plain_text: [N] index into ``texts`` of each image's plain caption.
        view_text: [N] index into ``texts`` of each image's view caption.
        object_index: [N] index into ``captions`` of each image's object.
    """

    images: torch.Tensor
    captions: list[str]
    texts: list[str]
    plain_text: torch.Tensor
    view_text: torch.Tensor
    object_index: torch.Tensor

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _caption(folder: Path) -> str:
    path = folder / "caption.txt"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else folder.name.replace("_", " ")


def load_training_data(dataset: str | Path, resolution: int) -> TrainingData:
    """Read the train split of every object of ``dataset`` (one object folder or a folder of them).

    Raises:
        PriorError: not a dataset in the NeRF-synthetic layout (the message says what was expected).
    """
    root = Path(dataset).expanduser()
    if not root.is_dir():
        raise PriorError(f"--dataset {str(root)!r} is not a folder")
    images, plain, view, owner, texts, captions = [], [], [], [], [""], []
    for folder in object_folders(root):
        rgb, cameras = load_split(folder, TRAIN_SPLIT, resolution, WHITE)
        caption = _caption(folder)
        captions.append(caption)
        first = len(texts)
        texts += [caption, *(view_caption(caption, word) for word in VIEW_WORDS)]
        images.append(rgb.permute(0, 3, 1, 2) * 2.0 - 1.0)
        plain.append(torch.full((rgb.shape[0],), first, dtype=torch.long))
        view.append(first + 1 + view_word_index(cameras.azimuth_deg, cameras.polar_deg))
        owner.append(torch.full((rgb.shape[0],), len(captions) - 1, dtype=torch.long))
        logger.info("%s: %d train views, caption %r", folder.name, rgb.shape[0], caption)
    return TrainingData(torch.cat(images).contiguous(), captions, texts, torch.cat(plain), torch.cat(view),
                        torch.cat(owner))


def draw_batch(data: TrainingData, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: image indices [B] (uniform, with replacement) and caption indices [B] into ``texts``.

    Two draws from ``generator``, in this order: the indices, then one uniform number per sample that picks the
    empty (< DROP_PROB), plain (< DROP_PROB + (1 − DROP_PROB)·PLAIN_PROB) or view caption.
    """
    index = torch.randint(0, len(data), (batch_size,), generator=generator)
    u = torch.rand(batch_size, generator=generator)
    plain_below = DROP_PROB + (1.0 - DROP_PROB) * PLAIN_PROB
    text = torch.where(u < plain_below, data.plain_text[index], data.view_text[index])
    text = torch.where(u < DROP_PROB, torch.zeros_like(text), text)
    return index, text
