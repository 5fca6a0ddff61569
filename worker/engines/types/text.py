"""Generators of the types in `server.core.fieldtypes.text`.

Prose is made with one `take`: every word of the locale exists in six forms
(as it is or capitalized, followed by " ", ". " or "."), and each word slot
picks the form its place in the row calls for. The taken strings already lie
end to end in one buffer, so a row is a slice of it: the column's offsets are
the taken offsets at the rows' first words, and no join or copy follows.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from server.core import vocab
from server.core.fieldtypes.text import ParagraphParams, SentenceParams
from worker.engines.rand import Rand
from worker.engines.types.base import Block, generator
from worker.engines.types.chars import list_generators

I64 = npt.NDArray[np.int64]
_ENDINGS = (" ", ". ", ".")  # within a sentence, between sentences, at the end of the row
_CAPITAL, _SENTENCE_END, _ROW_END = 1, 2, 4  # form = capital + 2 * ending
_HIGH = np.uint64(32)


list_generators("word")


@generator("sentence", SentenceParams)
def _sentence(params: SentenceParams, block: Block) -> pa.Array:
    sentences = np.arange(block.size + 1, dtype=np.int64)  # one per row
    words = block.rand.integers(params.min_words, params.max_words)
    return prose(block.rand, block.locale, sentences, words)


@generator("paragraph", ParagraphParams)
def _paragraph(params: ParagraphParams, block: Block) -> pa.Array:
    sentence_rand, sentences = block.rand.expand(block.rand.integers(params.min_sentences, params.max_sentences))
    words = sentence_rand.integers(params.min_words, params.max_words)
    return prose(sentence_rand, block.locale, sentences, words)


@cache
def _word_forms(locale: str) -> pa.Array:
    words = vocab.load(locale, "word").values
    capitalized = tuple(w[:1].upper() + w[1:] for w in words)
    return pa.array([w + end for end in _ENDINGS for variant in (words, capitalized) for w in variant], pa.string())


def prose(sentence_rand: Rand, locale: str, sentence_offsets: I64, words: I64) -> pa.Array:
    """Row i: sentences sentence_offsets[i] to sentence_offsets[i + 1] (at least one), one space apart.

    Sentence j has words[j] >= 1 words of the locale (drawn from `sentence_rand`,
    one counter per sentence), its first capitalized, and ends with a period.
    """
    rows = len(sentence_offsets) - 1
    if rows == 0:
        return pa.array([], pa.string())
    slots, word_offsets = sentence_rand.expand(words)
    form = np.zeros(len(slots), dtype=np.int64)
    form[word_offsets[:-1]] += _CAPITAL
    form[word_offsets[1:] - 1] += _SENTENCE_END
    form[word_offsets[sentence_offsets[1:]] - 1] += _ROW_END - _SENTENCE_END
    vocab_size = len(vocab.load(locale, "word").values)
    # Each slot's counter is already a uniform draw of its own (see Rand.expand): one use, as the word,
    # scaled from its high 32 bits (a bias below vocab_size / 2**32, far under any sampling noise).
    word = ((slots.counters >> _HIGH) * np.uint64(vocab_size)) >> _HIGH
    index = word.astype(np.int64) + vocab_size * form
    taken = _word_forms(locale).take(pa.array(index))
    taken_offsets = np.frombuffer(taken.buffers()[1], dtype=np.int32, count=len(slots) + 1)
    row_offsets = np.ascontiguousarray(taken_offsets[word_offsets[sentence_offsets]])
    return pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(row_offsets), taken.buffers()[2]])
