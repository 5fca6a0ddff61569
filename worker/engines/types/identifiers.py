"""Generators of the types in `server.core.fieldtypes.identifiers`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from server.core.fieldtypes.identifiers import (
    HEX_ALPHABET,
    NANOID_ALPHABET,
    UNIX_EPOCH,
    HexParams,
    NanoidParams,
    ObjectIdParams,
    RandomStringParams,
    TimeOrderedParams,
)
from worker.engines.rand import mix64, mix64_int
from worker.engines.types.base import Block, generator, join_parts, uuid_array
from worker.engines.types.chars import (
    HEX_LOWER,
    ascii_codes,
    fixed_width_strings,
    hex_codes,
    ragged_strings,
    random_symbols,
)

U64 = npt.NDArray[np.uint64]
CROCKFORD = ascii_codes("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
_LOW = [np.uint64((1 << bits) - 1) for bits in range(65)]


def distinct_bits(block: Block) -> U64:
    """64 bits that are a bijection of the row's counter: distinct rows, distinct values, always."""
    return mix64(block.rand.counters + np.uint64(mix64_int(block.rand.key ^ 0x1D)))


def time_ordered_millis(params: TimeOrderedParams, block: Block) -> U64:
    """start + row * step_ms, in whole milliseconds (float products of ints below 2**53 are exact enough)."""
    offsets = np.floor(block.rows.astype(np.float64) * params.step_ms).astype(np.uint64)
    return offsets + np.uint64(params.start_ms)


@generator("uuid7", TimeOrderedParams)
def _uuid7(params: TimeOrderedParams, block: Block) -> pa.Array:
    # RFC 9562 layout: 48-bit ms time, version 7, 12 bits rand_a, variant 10, 62 bits rand_b.
    # rand_a and 52 bits of rand_b hold a bijection of the row; 10 bits are random.
    millis = time_ordered_millis(params, block)
    distinct = distinct_bits(block)
    random = block.rand.u64()
    hi = (millis << np.uint64(16)) | np.uint64(0x7000) | (distinct >> np.uint64(52))
    lo = np.uint64(0x8000_0000_0000_0000) | ((distinct & _LOW[52]) << np.uint64(10)) | (random & _LOW[10])
    return uuid_array(hi, lo)


@generator("ulid", TimeOrderedParams)
def _ulid(params: TimeOrderedParams, block: Block) -> pa.Array:
    # 48-bit ms time then 80 bits: 16 random, 64 a bijection of the row. 26 base32 digits of
    # 5 bits hold 130 bits, so the first digit carries only the top 3 of the 128.
    millis = time_ordered_millis(params, block)
    hi = (millis << np.uint64(16)) | (block.rand.u64() & _LOW[16])
    lo = distinct_bits(block)
    codes = np.empty((block.size, 26), dtype=np.uint8)
    for digit in range(26):
        shift = 125 - 5 * digit  # of the digit's lowest bit in the 128-bit value
        if shift >= 64:
            value = hi >> np.uint64(shift - 64)
        elif shift > 59:  # straddles the two words
            value = (hi << np.uint64(64 - shift)) | (lo >> np.uint64(shift))
        else:
            value = lo >> np.uint64(shift)
        codes[:, digit] = CROCKFORD[(value & _LOW[5]).astype(np.intp)]
    return fixed_width_strings(codes)


@generator("hex", HexParams)
def _hex(params: HexParams, block: Block) -> pa.Array:
    alphabet = ascii_codes(HEX_ALPHABET.upper() if params.uppercase else HEX_ALPHABET)
    return fixed_width_strings(alphabet[random_symbols(block, 16, params.length)])


@generator("object_id", ObjectIdParams)
def _object_id(params: ObjectIdParams, block: Block) -> pa.Array:
    # 4 bytes of seconds, then 8 bytes (the 5 random and 3 counter bytes of a real ObjectId)
    # that are a bijection of the row, so values are distinct.
    start = int((params.start - UNIX_EPOCH).total_seconds())
    end = int((params.end - UNIX_EPOCH).total_seconds())
    seconds = block.rand.integers(start, end).astype(np.uint64)
    codes = np.concatenate([hex_codes(seconds, 8, HEX_LOWER), hex_codes(distinct_bits(block), 16, HEX_LOWER)], axis=1)
    return fixed_width_strings(codes)


@generator("random_string", RandomStringParams)
def _random_string(params: RandomStringParams, block: Block) -> pa.Array:
    lengths = block.rand.integers(params.min_length, params.max_length, stream=0)
    slots, offsets = block.rand.expand(lengths)
    picks = slots.below(len(params.alphabet), stream=1)
    if params.alphabet.isascii():
        return ragged_strings(ascii_codes(params.alphabet)[picks], offsets)
    return join_parts(pa.array(list(params.alphabet), pa.string()).take(pa.array(picks)), offsets, "")


@generator("nanoid", NanoidParams)
def _nanoid(params: NanoidParams, block: Block) -> pa.Array:
    return fixed_width_strings(ascii_codes(NANOID_ALPHABET)[random_symbols(block, 64, params.size)])
