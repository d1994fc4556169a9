"""Prompt encoding shared by every prior with a CLIP-style text encoder (Stable Diffusion, the learned prior).

One job: texts → the text encoder's last hidden states [P, L, D], with L the tokenizer's ``model_max_length``
(77 for CLIP). The conventions both priors rely on live here once:
- tokens are padded to ``max_length`` and cut there (what SD was trained with, and what ``train-prior`` trains
  with: :func:`tokenize_padded` is also its tokenizer call);
- a text longer than the limit is warned about once (encodings are cached per text, so a text reaches the
  tokenizer once), on the *caller's* logger so the message names the prior;
- the text encoder lives on the CPU between calls and moves to the device for the call (it holds no GPU memory
  during training); the attention mask is passed only to encoders configured with ``use_attention_mask``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def tokenize_padded(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, both [P, L] int64, padded and truncated to L = ``model_max_length``."""
    tokens = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return tokens.input_ids, tokens.attention_mask


def warn_over_length(tokenizer: PreTrainedTokenizerBase, texts: list[str], shown: list[str],
                     log: logging.Logger) -> None:
    """Warn on ``log`` for each of ``texts`` longer than the tokenizer's limit (``shown``: the texts to quote).

    Tokenizing with one token of headroom tells a cut without the tokenizer's own too-long warning.
    """
    limit = tokenizer.model_max_length
    for text, ids in zip(shown, tokenizer(texts, truncation=True, max_length=limit + 1).input_ids):
        if len(ids) > limit:
            log.warning("prompt longer than the text encoder's %d tokens, the rest is ignored: %.80r", limit, text)


class PromptEncoder:
    """Cached prompt encoding for one tokenizer and text encoder (module docstring for the conventions).

    Attributes:
        tokenizer, text_encoder: the pair it encodes with (the encoder is kept on the CPU between calls).
        cache: text → [L, D] encoding on ``device`` in ``dtype``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: PreTrainedModel,
        device: torch.device,
        dtype: torch.dtype,
        log: logging.Logger,
        convert: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """``convert`` rewrites texts before tokenizing (SD: textual-inversion tokens expanded); ``log`` is the
        caller's logger, on which the over-length warning is given."""
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.device = device
        self.dtype = dtype
        self.log = log
        self.convert = convert
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Prompts → [P, L, D] last hidden states on ``device`` in ``dtype``; the empty string is unconditional.

        Uncached texts are encoded in one batch with the text encoder moved to ``device`` for the call.
        """
        missing = [text for text in dict.fromkeys(texts) if text not in self.cache]
        if missing:
            converted = self.convert(missing) if self.convert is not None else missing
            ids, mask = tokenize_padded(self.tokenizer, converted)
            warn_over_length(self.tokenizer, converted, missing, self.log)
            use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
            self.text_encoder.to(self.device)
            try:
                hidden = self.text_encoder(
                    ids.to(self.device), attention_mask=mask.to(self.device) if use_mask else None
                )[0]
            finally:
                self.text_encoder.to("cpu")
            for text, row in zip(missing, hidden.to(self.dtype)):
                self.cache[text] = row
        return torch.stack([self.cache[text] for text in texts])
