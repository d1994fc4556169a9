"""A model reference, parsed once: what ``--model``, ``model.id`` and the app's ``--models`` file name.

Kinds (:data:`ModelKind`):

- ``hub``: a Hugging Face hub id (``owner/name``), loaded as Stable Diffusion;
- ``diffusers``: a local diffusers folder (``model_index.json``), loaded as Stable Diffusion;
- ``single_file``: one ``.safetensors`` (or, with ``--allow-pickle``, ``.ckpt``) checkpoint;
- ``multiview``: ``multiview:DIR``, the analytic multi-view prior on a NeRF-synthetic style folder (DESIGN §5);
- ``learned``: a folder holding ``lucid_prior.json``, the learned miniature prior (DESIGN §5b);

each with an optional LoRA, textual-inversion embeddings and a ControlNet (Stable Diffusion kinds only).

:func:`parse_model_ref` is the one place that tells the kinds apart and makes local paths absolute; a relative
``multiview:`` folder or learned-prior folder that is not found from the working folder is looked up in the
repository, so ``presets/demo.yaml`` works from anywhere. Parsing reads the file system only for text that names a
local path, and never for a hub id — and the app parses only its own server configuration, never a client's text.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lucid_app.config import ConfigError, ModelConfig, replace
from lucid_app.config.presets import REPO_ROOT
from lucid_app.priors.learned_folder import is_prior_folder

ModelKind = Literal["hub", "diffusers", "single_file", "multiview", "learned"]
MULTIVIEW_PREFIX = "multiview:"
# File name endings of single-file checkpoints (the pickle one only loads with --allow-pickle).
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# The kinds that load through Stable Diffusion (and so may carry a LoRA, embeddings and a ControlNet).
SD_KINDS: tuple[ModelKind, ...] = ("hub", "diffusers", "single_file")


@dataclass(frozen=True)
class ModelRef:
    """One parsed model reference.

    Attributes:
        kind: what it is (module docstring).
        location: the hub id, or the local path (absolute when it was found), without the ``multiview:`` prefix.
        lora, textual_inversion, controlnet: adapter sources (hub ids or local paths; empty = none).
    """

    kind: ModelKind
    location: str
    lora: str = ""
    textual_inversion: tuple[str, ...] = ()
    controlnet: str = ""

    @property
    def id(self) -> str:
        """The reference as ``model.id`` spells it (``multiview:DIR`` for the multi-view prior)."""
        return MULTIVIEW_PREFIX + self.location if self.kind == "multiview" else self.location

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"

    @property
    def has_adapters(self) -> bool:
        return bool(self.lora or self.textual_inversion or self.controlnet)

    def applied(self, model: ModelConfig) -> ModelConfig:
        """``model`` loading this reference: its id and adapters replace the config's (a LoRA belongs to the model
        it was trained for); the other settings (dtype, scales, the multi-view kernel) stay."""
        return replace(model, id=self.id, lora=self.lora, textual_inversion=self.textual_inversion,
                       controlnet=self.controlnet)


def looks_like_path(text: str) -> bool:
    """Whether ``text`` is written as a local path rather than a hub id (``./x``, ``/x``, ``~/x``, ``a/b/c``, or a
    checkpoint file name)."""
    return (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
        or text.lower().endswith(SINGLE_FILE_SUFFIXES)
    )


def parse_model_ref(text: str, lora: str = "", textual_inversion: tuple[str, ...] = (),
                    controlnet: str = "") -> ModelRef:
    """The :class:`ModelRef` that ``text`` names, with the given adapters (local adapter paths made absolute).

    Anything that is neither ``multiview:DIR`` nor a local path is taken for a hub id: the loader says when the hub
    has no such model.

    Raises:
        ConfigError: empty text, or ``multiview:`` without a folder.
    """
    text = str(text).strip()
    if not text:
        raise ConfigError("model: empty (give a hub id, a local folder or file, or multiview:DIR)")
    adapters = {"lora": _absolute_if_local(lora), "controlnet": _absolute_if_local(controlnet),
                "textual_inversion": tuple(_absolute_if_local(p) for p in textual_inversion)}
    if text.startswith(MULTIVIEW_PREFIX):
        folder = text[len(MULTIVIEW_PREFIX):].strip()
        if not folder:
            raise ConfigError(f"model {text!r}: give the dataset folder after {MULTIVIEW_PREFIX}")
        found = _found(folder, in_repo=lambda p: p.is_dir())
        return ModelRef("multiview", str(found) if found is not None else folder, **adapters)
    local = _found(text, in_repo=is_prior_folder)
    if local is None and not looks_like_path(text):
        return ModelRef("hub", text, **adapters)
    path = local or Path(text).expanduser()
    location = str(local) if local is not None else text
    if is_prior_folder(path):
        return ModelRef("learned", location, **adapters)
    if path.name.lower().endswith(SINGLE_FILE_SUFFIXES) or path.is_file():
        return ModelRef("single_file", location, **adapters)
    return ModelRef("diffusers", location, **adapters)


def model_ref_of(model: ModelConfig) -> ModelRef:
    """The reference a model config names: its ``id`` with its LoRA, embeddings and ControlNet."""
    return parse_model_ref(model.id, model.lora, tuple(model.textual_inversion), model.controlnet)


def multiview_ref(folder: str | Path) -> ModelRef:
    """``multiview:FOLDER`` (relative folders found as :func:`parse_model_ref` finds them)."""
    return parse_model_ref(MULTIVIEW_PREFIX + str(folder))


def _found(value: str, in_repo: Callable[[Path], bool] | None = None) -> Path | None:
    """The absolute path ``value`` names when it exists from the working folder; else, for a relative ``value``,
    the repository's path when ``in_repo`` accepts it; else None."""
    path = Path(value).expanduser()
    if path.exists():
        return Path(os.path.abspath(path))
    if in_repo is not None and not path.is_absolute() and in_repo(REPO_ROOT / path):
        return REPO_ROOT / path
    return None


def _absolute_if_local(value: str) -> str:
    """``value`` as an absolute path when it names an existing file or folder, else unchanged (a hub id, empty)."""
    if not value.strip():
        return value
    found = _found(value)
    return str(found) if found is not None else value


__all__ = ["MULTIVIEW_PREFIX", "ModelKind", "ModelRef", "SD_KINDS", "SINGLE_FILE_SUFFIXES",
           "looks_like_path", "model_ref_of", "multiview_ref", "parse_model_ref"]
