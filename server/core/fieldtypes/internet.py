"""Internet data: addresses, ports, domains and URLs, web vocabularies, file names, passwords, versions, colors."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from functools import cache
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from server.core import vocab
from server.core.fieldtypes.base import (
    ColumnType,
    FieldParams,
    FieldType,
    GlobalListParams,
    IntParam,
    NoParams,
    declare,
)

GLOBAL = "_global"
_HOST_WORD = re.compile(r"[a-z][a-z0-9]*")
_MIN_HOST_WORDS = 100
PRIVATE_IPV4 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)
HOST_PREFIXES = ("www", "mail", "api", "app", "web", "db", "cdn", "srv", "vpn", "git", "ns", "mx", "smtp", "node")
PASSWORD_SYMBOLS = "!#$%&()*+,-./:;<=>?@[]^_{|}~"  # noqa: S105  # an alphabet, not a password


@cache
def host_words(locale: str) -> tuple[str, ...]:
    """The locale's words that are valid DNS labels as they are (en_US's when the locale has too few)."""
    words = tuple(w for w in vocab.load(locale, "word").values if _HOST_WORD.fullmatch(w))
    if len(words) < _MIN_HOST_WORDS and locale != "en_US":
        return host_words("en_US")
    return words


def domain_count(locale: str) -> int:
    return len(host_words(locale)) * len(vocab.load(locale, "tld").values)


def global_list_size(name: str) -> int:
    return len(vocab.load(GLOBAL, name).values)


class _NetworkParams(FieldParams):
    """An address drawn from `cidr`, a network of the subclass's IP version."""

    _version: ClassVar[type[ipaddress.IPv4Network] | type[ipaddress.IPv6Network]]
    _example: ClassVar[str]
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _network(cls, value: str) -> str:
        try:
            cls._version(value)
        except ValueError as exc:
            raise ValueError(
                f"must be an {cls._version.__name__[:4]} network in CIDR notation without host bits,"
                f" e.g. {cls._example}: {exc}"
            ) from None
        return value

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self._version(self.cidr)


class Ipv4Params(_NetworkParams):
    _version = ipaddress.IPv4Network
    _example = "10.0.0.0/8"
    cidr: str = Field("0.0.0.0/0", description="the network to draw addresses from, e.g. 10.20.0.0/16")

    def domain(self, locale: str) -> int | None:
        return self.network.num_addresses


class Ipv4PrivateParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return sum(n.num_addresses for n in PRIVATE_IPV4)


class Ipv6Params(_NetworkParams):
    _version = ipaddress.IPv6Network
    _example = "fd00::/8"
    cidr: str = Field("2000::/3", description="the network to draw addresses from (default: global unicast)")

    def domain(self, locale: str) -> int | None:
        addresses = self.network.num_addresses
        return addresses if addresses < 2**64 else None


class MacAddressParams(FieldParams):
    separator: Literal[":", "-"] = Field(":", description="between the six bytes")
    uppercase: bool = Field(False, description="use A-F instead of a-f")

    def domain(self, locale: str) -> int | None:
        return 2**48


class PortParams(FieldParams):
    min: IntParam = Field(1024, ge=0, le=65535, description="lowest port")
    max: IntParam = Field(65535, ge=0, le=65535, description="highest port")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"

    def domain(self, locale: str) -> int | None:
        return self.max - self.min + 1


class DomainNameParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return domain_count(locale)


class UrlParams(FieldParams):
    schemes: Annotated[list[Literal["http", "https", "ftp", "ws", "wss"]], Field(min_length=1)] = Field(
        ["https"], description="schemes to pick from"
    )
    min_path_segments: IntParam = Field(0, ge=0, le=20, description="fewest words in the path")
    max_path_segments: IntParam = Field(3, ge=0, le=20, description="most words in the path")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min_path_segments > self.max_path_segments:
            yield "max_path_segments", f"must be >= min_path_segments ({self.min_path_segments})"


class SlugParams(FieldParams):
    min_words: IntParam = Field(2, ge=1, le=20, description="fewest words")
    max_words: IntParam = Field(5, ge=1, le=20, description="most words")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min_words > self.max_words:
            yield "max_words", f"must be >= min_words ({self.min_words})"


class UserAgentParams(GlobalListParams):
    list_name: ClassVar[str] = "user_agent"


class HttpMethodParams(GlobalListParams):
    list_name: ClassVar[str] = "http_method"


class MimeTypeParams(GlobalListParams):
    list_name: ClassVar[str] = "mime_type"


class FileExtensionParams(GlobalListParams):
    list_name: ClassVar[str] = "file_extension"


class HttpStatusParams(FieldParams):
    reason: bool = Field(False, description="text with the reason phrase ('404 Not Found') instead of the code")

    def domain(self, locale: str) -> int | None:
        return global_list_size("http_status")

    def column_type(self) -> ColumnType | None:
        return ColumnType("text", "text") if self.reason else None


Extension = Annotated[str, Field(pattern=r"^[A-Za-z0-9]+(\.[A-Za-z0-9]+)*$")]


class FileNameParams(FieldParams):
    extensions: list[Extension] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="extensions to pick from, without the dot; common ones when absent",
    )


class PasswordParams(FieldParams):
    """Random passwords with at least one character of each enabled class."""

    length: IntParam = Field(16, ge=4, le=128, description="number of characters")
    lowercase: bool = Field(True, description="use a-z")
    uppercase: bool = Field(True, description="use A-Z")
    digits: bool = Field(True, description="use 0-9")
    symbols: bool = Field(True, description=f"use {PASSWORD_SYMBOLS}")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if not (self.lowercase or self.uppercase or self.digits or self.symbols):
            yield "lowercase", "at least one of lowercase, uppercase, digits and symbols must be true"


class SemverParams(FieldParams):
    max_major: IntParam = Field(9, ge=0, le=1000, description="largest major version")
    max_minor: IntParam = Field(20, ge=0, le=1000, description="largest minor version")
    max_patch: IntParam = Field(30, ge=0, le=1000, description="largest patch version")
    prerelease_probability: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="chance of a pre-release suffix such as -beta.2"
    )


class ColorHexParams(FieldParams):
    uppercase: bool = Field(False, description="use A-F instead of a-f")

    def domain(self, locale: str) -> int | None:
        return 2**24


class RgbColorParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return 2**24


declare(
    FieldType("ipv4", "internet", "IPv4 address in a network", Ipv4Params, "text", "text", True),
    FieldType("ipv4_private", "internet", "private (RFC 1918) IPv4 address", Ipv4PrivateParams, "text", "text", True),
    FieldType("ipv6", "internet", "IPv6 address in a network (full form)", Ipv6Params, "text", "text", True),
    FieldType("mac_address", "internet", "MAC address", MacAddressParams, "text", "text", True),
    FieldType("port", "internet", "TCP/UDP port number", PortParams, "integer", "bigint", True),
    FieldType("domain_name", "internet", "a word and a top-level domain", DomainNameParams, "text", "text", True),
    FieldType("url", "internet", "URL with a scheme, a domain and a path of words", UrlParams, "text", "text"),
    FieldType("hostname", "internet", "host name such as web-07.example.com", NoParams, "text", "text"),
    FieldType("slug", "internet", "words joined by hyphens", SlugParams, "text", "text"),
    FieldType("user_agent", "internet", "a browser's User-Agent header", UserAgentParams, "text", "text", True),
    FieldType("http_method", "internet", "HTTP method", HttpMethodParams, "text", "text", True),
    FieldType("http_status", "internet", "HTTP status code", HttpStatusParams, "integer", "bigint", True),
    FieldType("mime_type", "internet", "IANA media type", MimeTypeParams, "text", "text", True),
    FieldType("file_name", "internet", "a word and a file extension", FileNameParams, "text", "text"),
    FieldType("file_extension", "internet", "file extension, without the dot", FileExtensionParams, "text", "text",
              True),
    FieldType("password", "internet", "random password with guaranteed character classes", PasswordParams, "text",
              "text"),
    FieldType("semver", "internet", "semantic version such as 2.14.3", SemverParams, "text", "text"),
    FieldType("color_hex", "internet", "color as #rrggbb", ColorHexParams, "text", "text", True),
    FieldType("rgb_color", "internet", "color as rgb(r, g, b)", RgbColorParams, "text", "text", True),
)  # fmt: skip
