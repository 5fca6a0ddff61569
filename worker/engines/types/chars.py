"""Building string columns from character codes, digits and list entries, without a loop per row.

Fixed-width ASCII values (hex digests, card numbers, MAC addresses) are made
as a numpy matrix of byte codes, one row per value, whose buffer becomes an
Arrow string array's data as it is; ragged ones add their offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from server.core import vocab
from server.core.fieldtypes import FIELD_TYPES
from server.core.fieldtypes.base import ListParams
from worker.engines.rand import Rand
from worker.engines.types.base import Block, generator, vocab_array

Codes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]
_MAX_STRING_BYTES = 2**31 - 1  # a string array's 32-bit offsets
_DRAW_LIMIT = 2**60  # a group of symbols drawn at once has at most this many values
DIGIT_CODES = np.frombuffer(b"0123456789", dtype=np.uint8)
HEX_LOWER = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
# Entry n holds the four ASCII digits of n (leading zeros) in memory order: one gather moves four bytes.
_FOUR_DIGITS = np.frombuffer(b"".join(f"{n:04d}".encode() for n in range(10_000)), dtype=np.uint32)


def ascii_codes(alphabet: str) -> Codes:
    return np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)


def fixed_width_strings(codes: Codes) -> pa.Array:
    """One string per row of a 2-D matrix of ASCII codes."""
    rows, width = codes.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(codes, dtype=np.uint8)
    return pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def ragged_strings(codes: Codes, offsets: Ints) -> pa.Array:
    """codes[offsets[i]:offsets[i + 1]] as string i (UTF-8 bytes)."""
    if offsets[-1] > _MAX_STRING_BYTES:
        raise ValueError(f"{offsets[-1]} bytes of text in one column of one chunk; make the chunks smaller")
    rows = len(offsets) - 1
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(np.ascontiguousarray(codes))]
    return pa.Array.from_buffers(pa.string(), rows, buffers)


def prefix_strings(codes: Codes, lengths: Ints) -> pa.Array:
    """The first lengths[i] codes of row i of a matrix, as string i."""
    keep = np.arange(codes.shape[1]) < lengths[:, None]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return ragged_strings(codes[keep], offsets)


def base_digits(values: Ints, base: int, width: int) -> Ints:
    """The `width` lowest digits of each value in `base`, most significant first: shape (n, width)."""
    powers = np.array([base**k for k in range(width - 1, -1, -1)], dtype=np.int64)
    digits: Ints = (values[:, None] // powers) % base
    return digits


def symbols_per_draw(base: int) -> int:
    """How many symbols of an alphabet of `base` one draw of at most 2**60 values makes."""
    count = 1
    while base ** (count + 1) <= _DRAW_LIMIT:
        count += 1
    return count


def random_symbols(block: Block, base: int, length: int, stream: int = 0) -> Ints:
    """(n, length) indexes into an alphabet of `base` symbols.

    The first symbols (as many as one draw makes) are `block.pick`: distinct
    across the dataset when the field is unique; the rest are independent.
    Uses the streams from `stream` on, one per draw of `symbols_per_draw` symbols.
    """
    per_draw = symbols_per_draw(base)
    symbols = np.empty((block.size, length), dtype=np.int64)
    for group, start in enumerate(range(0, length, per_draw)):
        width = min(per_draw, length - start)
        count = base**width
        values = block.pick(count, stream) if group == 0 else block.rand.below(count, stream + group)
        symbols[:, start : start + width] = base_digits(values, base, width)
    return symbols


def hex_codes(values: npt.NDArray[np.uint64], nibbles: int, alphabet: Codes = HEX_LOWER) -> Codes:
    """The lowest `nibbles` hex digits of each uint64, most significant first: shape (n, nibbles)."""
    shifts = np.array([4 * k for k in range(nibbles - 1, -1, -1)], dtype=np.uint64)
    indexes = (values[:, None] >> shifts) & np.uint64(0xF)
    codes: Codes = alphabet[indexes.astype(np.intp)]
    return codes


def decimal_codes(values: Ints, width: int) -> Codes:
    """The `width` lowest decimal digits of each non-negative value, as ASCII with leading zeros: shape (n, width).

    Four digits per lookup, and `//` by a constant rather than np.divmod (several times slower).
    """
    groups = -(-width // 4)
    words = np.empty((len(values), groups), dtype=np.uint32)
    rest = values
    for group in range(groups - 1, -1, -1):
        higher = rest // 10_000
        words[:, group] = _FOUR_DIGITS[rest - higher * 10_000]
        rest = higher
    codes: Codes = words.view(np.uint8)[:, 4 * groups - width :]
    return codes


def random_digit_codes(block: Block, count: int, stream: int = 0) -> Codes:
    """(n, count) random ASCII digits: DIGIT_CODES[random_symbols(block, 10, count, stream)], made faster.

    The first draw is `block.pick`, so rows are distinct when the field is unique.
    """
    per_draw = symbols_per_draw(10)
    codes = np.empty((block.size, count), dtype=np.uint8)
    for group, start in enumerate(range(0, count, per_draw)):
        width = min(per_draw, count - start)
        draw = block.pick(10**width, stream) if group == 0 else block.rand.below(10**width, stream + group)
        codes[:, start : start + width] = decimal_codes(draw, width)
    return codes


def int_strings(values: Ints) -> pa.Array:
    return pa.array(values, pa.int64()).cast(pa.string())


def scatter(parts: Sequence[tuple[Ints, pa.Array]], size: int, kind: pa.DataType) -> pa.Array:
    """Put each part's values at its positions: the inverse of splitting rows into groups."""
    if not parts:
        return pa.array([], kind)
    positions = np.concatenate([where for where, _ in parts])
    order = np.empty(size, dtype=np.int64)
    order[positions] = np.arange(size, dtype=np.int64)
    return pa.concat_arrays([values.cast(kind) for _, values in parts]).take(pa.array(order))


def mixed_radix(index: Ints, radices: tuple[int, ...]) -> list[Ints]:
    """The digits of each index below prod(radices), most significant first: a bijection onto the digit tuples."""
    digits = []
    for radix in reversed(radices):
        higher = index // radix  # `//` by a constant: much faster than np.divmod
        digits.append(index - higher * radix)
        index = higher
    return digits[::-1]


def list_index(rand: Rand, locale: str, name: str, stream: int = 0) -> Ints:
    """Indexes into a vocabulary list (of any locale, "_global" included), by its weights when it has them."""
    entries = vocab.load(locale, name)
    if entries.weights is not None:
        return rand.weighted(entries.weights, stream)
    return rand.below(len(entries.values), stream)


def list_entries(rand: Rand, locale: str, name: str, stream: int = 0) -> pa.Array:
    """Entries of a vocabulary list, by its weights when it has them (for any set of counters)."""
    return vocab_array(locale, name).take(pa.array(list_index(rand, locale, name, stream)))


def sample_index(block: Block, locale: str, name: str, stream: int = 0) -> Ints:
    """Indexes into a vocabulary list for a block: `list_index`, or each entry once when unique."""
    if block.unique:
        return block.pick(len(vocab.load(locale, name).values), stream)
    return list_index(block.rand, locale, name, stream)


def sample_list(block: Block, locale: str, name: str, stream: int = 0) -> pa.Array:
    """Entries of a vocabulary list: by weight unless unique."""
    return vocab_array(locale, name).take(pa.array(sample_index(block, locale, name, stream)))


def list_generators(*names: str) -> None:
    """Register one generator for types whose params are `ListParams`: an entry of their list, by `sample_list`."""
    for name in names:
        params = FIELD_TYPES[name].params
        if not issubclass(params, ListParams):
            raise TypeError(f"{name} is declared with {params.__name__}, not a ListParams")
        generator(name, params)(_list_entry)


def _list_entry(params: ListParams, block: Block) -> pa.Array:
    return sample_list(block, params.list_locale(block.locale), params.list_name)
