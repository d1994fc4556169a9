"""What a client of the app may ask for, and what it is shown of a config (DESIGN §6b, docs/SECURITY.md).

Deny by default: a client sets only the config keys of :data:`CLIENT_SECTIONS` and :data:`CLIENT_KEYS`, none of which
names a file on the server — every ``section.key=value`` the app builds from the form, the free overrides box and
every API parameter goes through :func:`check_client_overrides` before the strict loader reads it. The model is a
name from the server's list (:mod:`lucid_app.app.model_registry`), presets are picked by name, an avatar's pose is
one of the shipped poses and the SMPL folder is the server's own (``app.py --smpl-dir``). Weights follow
:mod:`lucid_app.config.trust` (never a pickle). What a client is shown of a config names no server folder
(:func:`public_config_yaml`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lucid_app.config import ConfigError, PathText, TrainConfig, from_yaml, parse_override, replace, to_yaml
from lucid_app.config.presets import REPO_ROOT
from lucid_app.priors.model_ref import MULTIVIEW_PREFIX

# Sections a client may set whole: none of their keys names a file.
CLIENT_SECTIONS = ("prompt", "guidance", "cameras", "render", "optim", "densify", "loss", "export")
# Single keys a client may set in the other sections. ``avatar.pose`` is a pose *name* (checked against the shipped
# poses by :func:`check_client_config`); no other key here is a path.
CLIENT_KEYS = (
    "seed", "prompt_schedule", "control_schedule",
    "model.dtype", "model.lora_scale", "model.controlnet_scale", "model.multiview_resolution",
    "model.multiview_kernel", "model.multiview_keep_t", "model.multiview_keep_sharpness",
    "model.multiview_camera_sigma_deg", "model.multiview_sigma", "model.vae_checkpointing", "model.channels_last",
    "init.shape", "init.num_points", "init.size", "init.prompt", "init.shape_fallback", "init.color",
    "init.use_file_colors", "init.opacity", "init.sh_degree",
    "avatar.enabled", "avatar.pose", "avatar.gender",
)
# Why a key is refused, for the keys a client is most likely to try.
_REFUSED_BECAUSE = {
    "model": "models are picked by name from this server's list (the Model field, the API's model)",
    "init.path": "the app reads no server file for the initial Gaussians",
    "avatar.smpl_dir": "the SMPL folder is the server's setting (app.py --smpl-dir)",
}


def client_may_set(key: str) -> bool:
    """Whether a client of the app may set the config key ``key`` (dotted, e.g. ``guidance.delta_t``)."""
    return key.split(".")[0] in CLIENT_SECTIONS or key in CLIENT_KEYS


def override_keys(override: str) -> list[str]:
    """The leaf config keys one ``section.key=value`` override sets (a whole section's mapping counts as each of
    its keys: ``model={id: x}`` sets ``model.id``).

    Raises:
        ConfigError: a malformed override or an unknown key (as the loader says it).
    """
    return list(_leaves(parse_override(override), TrainConfig, ""))


def check_client_overrides(overrides: Sequence[str]) -> None:
    """Refuse any override that sets a key a client may not set (:func:`client_may_set`).

    Raises:
        ConfigError: one line naming the first such key and why.
    """
    for text in overrides:
        for key in override_keys(text):
            if not client_may_set(key):
                reason = next((why for prefix, why in _REFUSED_BECAUSE.items()
                               if key == prefix or key.startswith(prefix + ".")), "")
                raise ConfigError(f"{key}: a client of this app cannot set this key; "
                                  + (reason or "it names a file on the server"))


def check_client_config(config: TrainConfig, smpl_dir: str = "") -> None:
    """Refuse what the values of a client's resolved config may not hold (module docstring), before it is queued.

    Args:
        config: the config resolved from a server preset, the client's checked overrides and a model name.
        smpl_dir: the server's SMPL folder ("" = none); a client's config must not name another one.

    Raises:
        ConfigError: the message names the key and what is allowed.
    """
    if config.avatar.smpl_dir and config.avatar.smpl_dir != smpl_dir:
        raise ConfigError("avatar.smpl_dir is the server's setting (app.py --smpl-dir), not a client's")
    from lucid_app.avatar.body import pose_names

    if config.avatar.pose not in pose_names():
        raise ConfigError(f"avatar.pose: pick one of the poses {', '.join(pose_names())} (the app reads no "
                          "pose files)")


def path_keys() -> list[str]:
    """Every config key whose value is a file or folder path (typed ``PathText`` in the schema), dotted."""
    return [key for key, tp in _schema_fields(TrainConfig, "") if _is_path_type(tp)]


def public_path(value: str, outputs: Path) -> str:
    """How a client is shown a path the server recorded: relative to the outputs folder when inside it, relative to
    the repository when inside it, else its last part only; ``multiview:`` keeps its prefix; hub ids, names and
    relative paths are unchanged."""
    prefix = MULTIVIEW_PREFIX if value.startswith(MULTIVIEW_PREFIX) else ""
    path = Path(value[len(prefix):])
    if not path.is_absolute():
        return value
    for root in (Path(outputs).resolve(), REPO_ROOT):
        if path.is_relative_to(root):
            return prefix + (path.relative_to(root).as_posix() or ".")
    return prefix + path.name


def public_config(config: TrainConfig, outputs: Path) -> TrainConfig:
    """``config`` with every path it holds shown as :func:`public_path` shows it."""
    changes: dict[str, dict[str, Any]] = {}
    for key in path_keys():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        shown = tuple(public_path(v, outputs) for v in value) if isinstance(value, tuple) else public_path(value,
                                                                                                             outputs)
        if shown != value:
            changes.setdefault(section, {})[name] = shown
    for section, fields in changes.items():
        config = replace(config, **{section: replace(getattr(config, section), **fields)})
    return config


def public_config_yaml(config_yaml: str, outputs: Path) -> str:
    """A run's ``config.yaml`` as a client may see it (:func:`public_config`); a comment line when it cannot be
    read."""
    try:
        return to_yaml(public_config(from_yaml(config_yaml), outputs))
    except ConfigError:
        return "# this run's config.yaml cannot be read\n"


def _schema_fields(cls: type, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, annotation) of every leaf field of the config class ``cls``."""
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            yield from _schema_fields(tp, key + ".")
        else:
            yield key, tp


def _is_path_type(tp: Any) -> bool:
    """``PathText``, or a (length-bounded) tuple of ``PathText``."""
    if tp == PathText:
        return True
    inner = typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp
    return typing.get_origin(inner) is tuple and typing.get_args(inner)[:1] == (PathText,)


def _leaves(node: Any, cls: Any, prefix: str) -> Iterator[str]:
    """The dotted leaf keys of an override's nested mapping ``node`` over the config class ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for name, value in node.items():
        key = f"{prefix}{name}"
        tp = hints.get(name)
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            yield from _leaves(value, tp, key + ".")
        else:
            yield key
