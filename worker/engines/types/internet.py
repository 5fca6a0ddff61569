"""Generators of the types in `server.core.fieldtypes.internet`."""

from __future__ import annotations

import string
from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core import vocab
from server.core.fieldtypes import NoParams
from server.core.fieldtypes.internet import (
    GLOBAL,
    HOST_PREFIXES,
    PASSWORD_SYMBOLS,
    PRIVATE_IPV4,
    ColorHexParams,
    DomainNameParams,
    FileNameParams,
    HttpStatusParams,
    Ipv4Params,
    Ipv4PrivateParams,
    Ipv6Params,
    MacAddressParams,
    PasswordParams,
    PortParams,
    RgbColorParams,
    SemverParams,
    SlugParams,
    UrlParams,
    host_words,
)
from worker.engines.rand import Rand
from worker.engines.types.base import Block, generator, join_parts, vocab_array
from worker.engines.types.chars import (
    HEX_LOWER,
    HEX_UPPER,
    Codes,
    ascii_codes,
    fixed_width_strings,
    hex_codes,
    int_strings,
    list_generators,
    random_symbols,
    sample_index,
    sample_list,
)
from worker.engines.types.identifiers import distinct_bits
from worker.engines.types.numbers import draw_range

I64 = npt.NDArray[np.int64]
_BYTE = np.int64(255)


def _join(*parts: pa.Array | str) -> pa.Array:
    """Concatenate arrays and constant strings element-wise."""
    return pc.binary_join_element_wise(*parts, "")


def with_separators(codes: Codes, group: int, separator: str) -> Codes:
    """Insert `separator` after every `group` codes of each row (not at the end)."""
    rows, width = codes.shape
    groups = codes.reshape(rows, width // group, group)
    sep = np.full((rows, width // group, 1), ord(separator), dtype=np.uint8)
    joined: Codes = np.concatenate([groups, sep], axis=2).reshape(rows, width // group * (group + 1))[:, :-1]
    return joined


# -- addresses ----------------------------------------------------------------------


def ipv4_strings(addresses: I64) -> pa.Array:
    octets = [int_strings((addresses >> shift) & _BYTE) for shift in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*octets, ".")


@generator("ipv4", Ipv4Params)
def _ipv4(params: Ipv4Params, block: Block) -> pa.Array:
    network = params.network
    return ipv4_strings(block.pick(network.num_addresses) + int(network.network_address))


@generator("ipv4_private", Ipv4PrivateParams)
def _ipv4_private(params: Ipv4PrivateParams, block: Block) -> pa.Array:
    # One index over the three ranges together, so each address is equally likely (and unique works).
    sizes = [network.num_addresses for network in PRIVATE_IPV4]
    index = block.pick(sum(sizes))
    ends = np.cumsum(sizes)
    which = np.searchsorted(ends, index, side="right")
    starts = np.array([int(n.network_address) for n in PRIVATE_IPV4], dtype=np.int64)
    before = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return ipv4_strings(starts[which] + index - before[which])


@generator("ipv6", Ipv6Params)
def _ipv6(params: Ipv6Params, block: Block) -> pa.Array:
    network = params.network
    base = int(network.network_address)
    host_bits = 128 - network.prefixlen
    hi = np.full(block.size, base >> 64, dtype=np.uint64)
    if host_bits >= 64:
        lo = distinct_bits(block)  # a bijection of the row: distinct with or without unique
        if host_bits > 64:
            hi |= block.rand.below(1 << (host_bits - 64), stream=1).astype(np.uint64)
    else:
        lo = block.pick(1 << host_bits).astype(np.uint64) | np.uint64(base & ((1 << 64) - 1))
    codes = np.concatenate([hex_codes(hi, 16), hex_codes(lo, 16)], axis=1)
    return fixed_width_strings(with_separators(codes, 4, ":"))


@generator("mac_address", MacAddressParams)
def _mac_address(params: MacAddressParams, block: Block) -> pa.Array:
    codes = hex_codes(block.pick(2**48).astype(np.uint64), 12, HEX_UPPER if params.uppercase else HEX_LOWER)
    return fixed_width_strings(with_separators(codes, 2, params.separator))


@generator("port", PortParams)
def _port(params: PortParams, block: Block) -> pa.Array:
    return pa.array(draw_range(block, params.min, params.max), pa.int64())


# -- names ----------------------------------------------------------------------------


@cache
def _host_word_array(locale: str) -> pa.Array:
    return pa.array(host_words(locale), pa.string())


def domain_names(block: Block, stream: int) -> pa.Array:
    """word.tld, with streams `stream` and `stream + 1`; each pair once when the field is unique."""
    words = _host_word_array(block.locale)
    tlds = vocab_array(block.locale, "tld")
    if block.unique:
        index = block.pick(len(words) * len(tlds), stream)
        word, tld = index // len(tlds), index % len(tlds)
    else:
        word = block.rand.below(len(words), stream)
        tld = sample_index(block, block.locale, "tld", stream + 1)
    return pc.binary_join_element_wise(words.take(pa.array(word)), tlds.take(pa.array(tld)), ".")


def joined_words(rand: Rand, locale: str, *, low: int, high: int, separator: str, stream: int) -> pa.Array:
    """low to high host words joined by separator, with streams `stream` and `stream + 1`."""
    counts = rand.integers(low, high, stream)
    slots, offsets = rand.child("words", stream).expand(counts)
    words = _host_word_array(locale)
    return join_parts(words.take(pa.array(slots.below(len(words), stream + 1))), offsets, separator)


@generator("domain_name", DomainNameParams)
def _domain_name(params: DomainNameParams, block: Block) -> pa.Array:
    return domain_names(block, stream=0)


@generator("url", UrlParams)
def _url(params: UrlParams, block: Block) -> pa.Array:
    schemes = pa.array(params.schemes, pa.string()).take(pa.array(block.rand.below(len(params.schemes), 0)))
    path = joined_words(
        block.rand, block.locale, low=params.min_path_segments, high=params.max_path_segments, separator="/", stream=3
    )
    return _join(schemes, "://", domain_names(block, stream=1), "/", path)


@generator("hostname", NoParams)
def _hostname(params: NoParams, block: Block) -> pa.Array:
    prefixes = pa.array(HOST_PREFIXES, pa.string()).take(pa.array(block.rand.below(len(HOST_PREFIXES), 0)))
    numbers = pc.utf8_lpad(int_strings(block.rand.integers(1, 99, 1)), 2, "0")
    return _join(prefixes, "-", numbers, ".", domain_names(block, stream=2))


@generator("slug", SlugParams)
def _slug(params: SlugParams, block: Block) -> pa.Array:
    return joined_words(block.rand, block.locale, low=params.min_words, high=params.max_words, separator="-", stream=0)


# -- web vocabularies -------------------------------------------------------------------


@cache
def _status_codes() -> pa.Array:
    return pa.array([int(line.split(" ", 1)[0]) for line in vocab.load(GLOBAL, "http_status").values], pa.int64())


@generator("http_status", HttpStatusParams)
def _http_status(params: HttpStatusParams, block: Block) -> pa.Array:
    index = pa.array(sample_index(block, GLOBAL, "http_status"))
    if params.reason:
        return vocab_array(GLOBAL, "http_status").take(index)
    return _status_codes().take(index)


@generator("file_name", FileNameParams)
def _file_name(params: FileNameParams, block: Block) -> pa.Array:
    words = _host_word_array(block.locale).take(pa.array(block.rand.below(len(_host_word_array(block.locale)), 0)))
    if params.extensions is None:
        extensions = sample_list(block, GLOBAL, "file_extension", stream=1)
    else:
        extensions = pa.array(params.extensions, pa.string()).take(
            pa.array(block.rand.below(len(params.extensions), 1))
        )
    return pc.binary_join_element_wise(words, extensions, ".")


# -- other ------------------------------------------------------------------------------

_CLASSES = {
    "lowercase": string.ascii_lowercase,
    "uppercase": string.ascii_uppercase,
    "digits": string.digits,
    "symbols": PASSWORD_SYMBOLS,
}
_FORCED_STREAM = 1000  # above the streams random_symbols uses for 128 characters


@generator("password", PasswordParams)
def _password(params: PasswordParams, block: Block) -> pa.Array:
    classes = [ascii_codes(chars) for name, chars in _CLASSES.items() if getattr(params, name)]
    everything = np.concatenate(classes)
    codes = everything[random_symbols(block, len(everything), params.length)]
    # One character of each class at consecutive positions from a random offset: distinct positions.
    offset = block.rand.below(params.length, _FORCED_STREAM)
    rows = np.arange(block.size)
    for number, chars in enumerate(classes):
        position = (offset + number) % params.length
        codes[rows, position] = chars[block.rand.below(len(chars), _FORCED_STREAM + 1 + number)]
    return fixed_width_strings(codes)


_PRERELEASE = pa.array(["-alpha.", "-beta.", "-rc."], pa.string())


@generator("semver", SemverParams)
def _semver(params: SemverParams, block: Block) -> pa.Array:
    parts = [int_strings(block.rand.integers(0, high, stream)) for stream, high in
             enumerate((params.max_major, params.max_minor, params.max_patch))]  # fmt: skip
    version = pc.binary_join_element_wise(*parts, ".")
    if params.prerelease_probability == 0.0:
        return version
    label = _PRERELEASE.take(pa.array(block.rand.below(len(_PRERELEASE), 3)))
    suffix = _join(label, int_strings(block.rand.integers(1, 9, 4)))
    has_suffix = pa.array(block.rand.chance(params.prerelease_probability, 5))
    return _join(version, pc.if_else(has_suffix, suffix, ""))


@generator("color_hex", ColorHexParams)
def _color_hex(params: ColorHexParams, block: Block) -> pa.Array:
    codes = hex_codes(block.pick(2**24).astype(np.uint64), 6, HEX_UPPER if params.uppercase else HEX_LOWER)
    return fixed_width_strings(np.concatenate([np.full((block.size, 1), ord("#"), np.uint8), codes], axis=1))


@generator("rgb_color", RgbColorParams)
def _rgb_color(params: RgbColorParams, block: Block) -> pa.Array:
    color = block.pick(2**24)
    red, green, blue = (int_strings((color >> shift) & _BYTE) for shift in (16, 8, 0))
    return _join("rgb(", red, ", ", green, ", ", blue, ")")


list_generators("user_agent", "http_method", "mime_type", "file_extension")
