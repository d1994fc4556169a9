"""A CLIP byte-level BPE tokenizer built in code from the training captions (no download).

Every byte and every byte + ``</w>`` is a token, so any text tokenizes (unknown words fall back to characters);
each word of the captions and view prompts is one token, through merges that build it character by character.

Merges are added word by word, each time for the pieces the merges so far leave (:func:`bpe_pieces`): a new merge
ranks below every earlier one, and at every point of an earlier word's merging a higher-ranked pair was available,
so adding merges never changes how an earlier word tokenizes — each word stays exactly one token. (Left-to-right
chains alone do not guarantee that: with "at" first, "cat" would split into "c" + "at".)
"""

from __future__ import annotations

import re

from transformers import CLIPTokenizer

from lucid_app.priors.sd_architecture import CONTEXT_LENGTH, byte_symbols

END_OF_WORD = "</w>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# Letters-only runs, as CLIP's pre-tokenizer splits them (digits and punctuation are tokens of their own).
_WORD = re.compile(r"[^\W\d_]+")


def caption_words(texts: list[str]) -> list[str]:
    """The distinct lower-case letter words of ``texts``, in order of first appearance."""
    words: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall(text.lower()):
            words.setdefault(word, None)
    return list(words)


def bpe_pieces(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """The pieces BPE leaves of ``word`` (as ``word</w>``): merge the best-ranked adjacent pair until none applies."""
    pieces = list(word[:-1]) + [word[-1] + END_OF_WORD]
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        ranked = [(rank, i) for rank, i in pairs if rank is not None]
        if not ranked:
            break
        _, i = min(ranked)
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    return pieces


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges (in rank order) under which every one of ``words`` is a single token (module docstring)."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = bpe_pieces(word, ranks)
        current = pieces[0]
        for piece in pieces[1:]:
            pair = (current, piece)
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
            current += piece
    return merges


def build_tokenizer(texts: list[str]) -> CLIPTokenizer:
    """A CLIP tokenizer (context length 77) in which each letter word of ``texts`` is one token.

    Args:
        texts: the captions and the view-prompt words ("front", "side", ..., "view").

    Returns:
        The tokenizer: 512 byte tokens, one token per merge result, then ``<|startoftext|>`` and
        ``<|endoftext|>`` (also the padding token, as in CLIP).
    """
    symbols = byte_symbols()
    vocab: dict[str, int] = {}
    for symbol in symbols + [s + END_OF_WORD for s in symbols]:
        vocab.setdefault(symbol, len(vocab))
    merges = word_merges(caption_words(texts))
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)
