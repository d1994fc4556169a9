"""Score-distillation guidance: ISM, SDS and the naive objective (supplementary eq. 2), with CFG, negative
prompts, view prompts and Perp-Neg.

``GUIDANCES`` maps ``GuidanceConfig.method`` to the guidance function; all share one signature
(see :func:`lucid_app.guidance.ism.ism_guidance`) and return a :class:`GuidanceOutput`.
"""

from __future__ import annotations

from collections.abc import Callable

from lucid_app.guidance.ism import GuidanceOutput, ism_guidance
from lucid_app.guidance.naive import naive_guidance
from lucid_app.guidance.sds import sds_guidance

GUIDANCES: dict[str, Callable[..., GuidanceOutput]] = {
    "ism": ism_guidance,
    "sds": sds_guidance,
    "naive": naive_guidance,
}

__all__ = ["GUIDANCES", "GuidanceOutput", "ism_guidance", "naive_guidance", "sds_guidance"]
