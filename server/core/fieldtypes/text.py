"""Text: words, sentences and paragraphs of the locale's words."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field

from server.core.fieldtypes.base import FieldParams, FieldType, IntParam, LocaleListParams, declare


class WordParams(LocaleListParams):
    list_name: ClassVar[str] = "word"


class SentenceParams(FieldParams):
    """min_words..max_words words, the first capitalized, ending with a period."""

    min_words: IntParam = Field(3, ge=1, le=200, description="fewest words")
    max_words: IntParam = Field(12, ge=1, le=200, description="most words")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min_words > self.max_words:
            yield "max_words", f"must be >= min_words ({self.min_words})"


class ParagraphParams(SentenceParams):
    """min_sentences..max_sentences sentences of min_words..max_words words each."""

    min_sentences: IntParam = Field(2, ge=1, le=50, description="fewest sentences")
    max_sentences: IntParam = Field(6, ge=1, le=50, description="most sentences")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        yield from super().problems(rows=rows)
        if self.min_sentences > self.max_sentences:
            yield "max_sentences", f"must be >= min_sentences ({self.min_sentences})"


declare(
    FieldType("word", "text", "one word of the locale", WordParams, "text", "text", True),
    FieldType("sentence", "text", "a sentence of the locale's words", SentenceParams, "text", "text"),
    FieldType("paragraph", "text", "sentences of the locale's words", ParagraphParams, "text", "text"),
)
