"""Score-distillation guidance: ISM and SDS, with CFG, negative prompts, view prompts and Perp-Neg."""
