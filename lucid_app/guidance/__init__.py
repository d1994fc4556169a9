"""Score-distillation guidance: ISM, SDS, SDI (Score Distillation via Inversion) and the naive objective
(supplementary eq. 2), with CFG, negative prompts, view prompts and Perp-Neg.

``GUIDANCES`` maps ``GuidanceConfig.method`` to the guidance function; each is a :class:`Guidance` (one
signature, :mod:`lucid_app.guidance.base`) and returns a :class:`GuidanceOutput`.
"""

from __future__ import annotations

from lucid_app.guidance.base import Guidance, GuidanceOutput
from lucid_app.guidance.ism import ism_guidance
from lucid_app.guidance.naive import naive_guidance
from lucid_app.guidance.sdi import sdi_guidance
from lucid_app.guidance.sds import sds_guidance

GUIDANCES: dict[str, Guidance] = {
    "ism": ism_guidance,
    "sds": sds_guidance,
    "naive": naive_guidance,
    "sdi": sdi_guidance,
}

__all__ = ["GUIDANCES", "Guidance", "GuidanceOutput", "ism_guidance", "naive_guidance", "sdi_guidance", "sds_guidance"]
