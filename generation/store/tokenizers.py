"""CLIP and T5 tokenizers built locally from a word list, without a model hub.

The diffusion pipelines need real tokenizer objects (they are saved with the
pipeline and reloaded by ``from_pretrained``). transformers 5 builds both from
Python objects: CLIP from a byte-level BPE vocabulary and its merges, T5 from a
Unigram list of ``(piece, log-probability)`` pairs. Every word of the list
becomes one token; any other text still tokenizes (CLIP falls back to bytes,
T5 to characters), so prompts never fail on an unknown word.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections.abc import Iterable, Sequence

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
CLIP_MAX_LENGTH = 77
END_OF_WORD = "</w>"


def normalise_words(words: Iterable[str]) -> list[str]:
    """Lower-case, split on anything that is not a letter or digit, de-duplicate, keep first-seen order."""
    seen: dict[str, None] = {}
    for word in words:
        for part in re.findall(r"[a-z0-9]+", word.lower()):
            seen.setdefault(part, None)
    return list(seen)


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _apply_bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merge the adjacent pair of lowest rank."""
    while len(symbols) > 1:
        pairs = [
            (ranks.get(pair, math.inf), i) for i, pair in enumerate(itertools.pairwise(symbols))
        ]
        rank, i = min(pairs)
        if rank == math.inf:
            break
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def clip_bpe_tables(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a byte-level BPE in which every word is a single token.

    The base vocabulary is the 256 byte symbols, alone and word-final (``x</w>``).
    Merges are added word by word until the word encodes to one symbol; a merge
    appended later has a lower priority, so it never changes how an
    already-learnt word encodes.
    """
    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(a + END_OF_WORD for a in alphabet), CLIP_BOS, CLIP_EOS]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in normalise_words(words):
        while len(symbols := _apply_bpe([*word[:-1], word[-1] + END_OF_WORD], ranks)) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
    return vocab, merges


def build_clip_tokenizer(words: Sequence[str], *, max_length: int = CLIP_MAX_LENGTH):
    """A ``CLIPTokenizer`` whose vocabulary holds every word of ``words`` as one token."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_tables(words)
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        unk_token=CLIP_EOS,
        pad_token=CLIP_EOS,
        model_max_length=max_length,
    )


def t5_unigram_pieces(words: Sequence[str]) -> list[tuple[str, float]]:
    """Unigram pieces in T5's order: <pad>, </s>, <unk>, the words, then single characters.

    Whole words get a higher log-probability than any spelling of them in
    characters, so a known word always encodes as one piece.
    """
    pieces: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0}
    for word in normalise_words(words):
        pieces.setdefault("▁" + word, -1.0)
    pieces.setdefault("▁", -5.0)
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(char, -10.0)
        pieces.setdefault("▁" + char, -10.0)
    return list(pieces.items())


def build_t5_tokenizer(words: Sequence[str], *, max_length: int = 512):
    """A ``T5Tokenizer`` (Unigram) whose vocabulary holds every word of ``words`` as one piece."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=t5_unigram_pieces(words), extra_ids=0, model_max_length=max_length)
