from __future__ import annotations

import ipaddress
import re
import string
from collections import Counter
from typing import Any

import pytest

from server.core import vocab
from server.core.fieldtypes.internet import PASSWORD_SYMBOLS, host_words
from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, values, violations

CASES: list[tuple[str, dict[str, Any]]] = [
    ("ipv4", {}),
    ("ipv4", {"cidr": "192.0.2.0/24"}),
    ("ipv4_private", {}),
    ("ipv6", {}),
    ("ipv6", {"cidr": "fd00::/120"}),
    ("mac_address", {}),
    ("port", {}),
    ("domain_name", {}),
    ("url", {}),
    ("hostname", {}),
    ("slug", {}),
    ("user_agent", {}),
    ("http_method", {}),
    ("http_status", {}),
    ("http_status", {"reason": True}),
    ("mime_type", {}),
    ("file_name", {}),
    ("file_extension", {}),
    ("password", {}),
    ("semver", {"prerelease_probability": 0.3}),
    ("color_hex", {}),
    ("rgb_color", {}),
]
GLOBAL = "_global"


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("ipv4", {"cidr": "10.0.0.1/8"}, "cidr", "has host bits set"),
        ("ipv4", {"cidr": "300.0.0.0/8"}, "cidr", "IPv4 network in CIDR notation"),
        ("ipv4", {"cidr": "fd00::/8"}, "cidr", "IPv4 network"),
        ("ipv6", {"cidr": "10.0.0.0/8"}, "cidr", "IPv6 network"),
        ("ipv6", {"cidr": "fd00::1/8"}, "cidr", "has host bits set"),
        ("mac_address", {"separator": "."}, "separator", "':' or '-'"),
        ("port", {"max": 65536}, "max", "less than or equal to 65535"),
        ("port", {"min": 100, "max": 99}, "max", "must be >= min (100)"),
        ("url", {"schemes": []}, "schemes", "at least 1 item"),
        ("url", {"schemes": ["gopher"]}, "schemes[0]", "'http'"),
        ("url", {"min_path_segments": 3, "max_path_segments": 2}, "max_path_segments", "must be >="),
        ("slug", {"min_words": 0}, "min_words", "greater than or equal to 1"),
        ("http_status", {"reason": 1}, "reason", "valid boolean"),
        ("file_name", {"extensions": [".txt"]}, "extensions[0]", "should match pattern"),
        ("file_name", {"extensions": []}, "extensions", "at least 1 item"),
        ("password", {"length": 3}, "length", "greater than or equal to 4"),
        ("password", {"lowercase": False, "uppercase": False, "digits": False, "symbols": False}, "lowercase", "one"),
        ("semver", {"prerelease_probability": 2}, "prerelease_probability", "less than or equal to 1"),
        ("color_hex", {"alpha": True}, "alpha", "unknown parameter"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("ipv4", {"cidr": "10.1.0.0/20"}, 4_096),
        ("ipv4", {}, 2**32),
        ("ipv4_private", {}, 2**24 + 2**20 + 2**16),
        ("ipv6", {"cidr": "2001:db8::/116"}, 4_096),
        ("ipv6", {}, None),
        ("mac_address", {}, 2**48),
        ("port", {"min": 8000, "max": 8999}, 1_000),
        ("domain_name", {}, len(host_words("en_US")) * len(vocab.load("en_US", "tld").values)),
        ("user_agent", {}, len(vocab.load(GLOBAL, "user_agent").values)),
        ("http_method", {}, 9),
        ("http_status", {}, len(vocab.load(GLOBAL, "http_status").values)),
        ("mime_type", {}, len(vocab.load(GLOBAL, "mime_type").values)),
        ("file_extension", {}, len(vocab.load(GLOBAL, "file_extension").values)),
        ("color_hex", {}, 2**24),
        ("rgb_color", {}, 2**24),
    ],
)
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int | None) -> None:
    check_unique(type_name, params, domain)


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "192.168.10.0/30", "10.0.0.7/32"])
def test_ipv4_addresses_are_in_the_network(cidr: str) -> None:
    network = ipaddress.IPv4Network(cidr)
    made = values("ipv4", {"cidr": cidr})
    assert all(ipaddress.IPv4Address(a) in network and str(ipaddress.IPv4Address(a)) == a for a in made)
    if network.num_addresses <= 4:
        assert {ipaddress.IPv4Address(a) for a in made} == set(network)


def test_private_ipv4_addresses_cover_the_three_ranges() -> None:
    made = [ipaddress.IPv4Address(a) for a in values("ipv4_private", {}, 20_000)]
    assert all(a.is_private for a in made)
    first_octets = Counter(int(a) >> 24 for a in made)
    assert set(first_octets) == {10, 172, 192}
    assert first_octets[10] > first_octets[172] > first_octets[192]  # by the size of each range


@pytest.mark.parametrize("cidr", ["2000::/3", "fd12:3456::/32", "2001:db8::/126"])
def test_ipv6_addresses_are_in_the_network(cidr: str) -> None:
    network = ipaddress.IPv6Network(cidr)
    made = values("ipv6", {"cidr": cidr})
    assert all(re.fullmatch("[0-9a-f]{4}(:[0-9a-f]{4}){7}", a) for a in made)
    assert all(ipaddress.IPv6Address(a) in network for a in made)


@pytest.mark.parametrize(("separator", "uppercase"), [(":", False), ("-", True)])
def test_mac_addresses(separator: str, uppercase: bool) -> None:
    made = values("mac_address", {"separator": separator, "uppercase": uppercase})
    digit = "[0-9A-F]" if uppercase else "[0-9a-f]"
    assert all(re.fullmatch(f"{digit}{{2}}(\\{separator}{digit}{{2}}){{5}}", m) for m in made)


def test_ports_are_in_range() -> None:
    made = values("port", {"min": 0, "max": 3})
    assert set(made) == {0, 1, 2, 3}


@pytest.mark.parametrize("locale", ["en_US", "de_DE", "pt_BR"])
def test_domain_names_are_a_word_and_a_tld(locale: str) -> None:
    made = values("domain_name", {}, locale=locale)
    tlds = set(vocab.load(locale, "tld").values)
    for name in made:
        word, _, tld = name.partition(".")
        assert word in host_words(locale)
        assert tld in tlds
        assert re.fullmatch(r"[a-z0-9]+(\.[a-z0-9]+)+", name)


def test_urls_have_a_scheme_a_domain_and_a_path() -> None:
    params = {"schemes": ["http", "https"], "min_path_segments": 1, "max_path_segments": 2}
    made = values("url", params)
    pattern = r"(https?)://[a-z0-9]+\.[a-z.]+/[a-z0-9]+(/[a-z0-9]+)?"
    assert all(re.fullmatch(pattern, url) for url in made)
    assert {url.split(":")[0] for url in made} == {"http", "https"}
    assert {url.count("/") for url in made} == {3, 4}


def test_hostnames_are_valid_dns_names() -> None:
    made = values("hostname", {})
    assert all(re.fullmatch(r"[a-z]+-[0-9]{2}\.[a-z0-9]+\.[a-z.]+", h) for h in made)


def test_slugs_are_words_joined_by_hyphens() -> None:
    made = values("slug", {"min_words": 2, "max_words": 3})
    assert {s.count("-") for s in made} == {1, 2}
    assert all(set(s.split("-")) <= set(host_words("en_US")) for s in made)


@pytest.mark.parametrize(
    ("type_name", "list_name"),
    [("user_agent", "user_agent"), ("http_method", "http_method"), ("mime_type", "mime_type"),
     ("file_extension", "file_extension")],
)  # fmt: skip
def test_list_types_draw_from_their_list(type_name: str, list_name: str) -> None:
    made = values(type_name, {})
    assert set(made) <= set(vocab.load(GLOBAL, list_name).values)


def test_http_status_is_a_code_or_a_line_with_its_reason() -> None:
    lines = set(vocab.load(GLOBAL, "http_status").values)
    codes = values("http_status", {})
    assert all(isinstance(c, int) and 100 <= c <= 599 for c in codes)
    texts = values("http_status", {"reason": True})
    assert set(texts) <= lines
    assert [int(t.split()[0]) for t in texts] == codes  # the same draws


def test_file_names_use_the_given_extensions() -> None:
    made = values("file_name", {"extensions": ["txt", "tar.gz"]})
    assert {name.split(".", 1)[1] for name in made} == {"txt", "tar.gz"}
    default = values("file_name", {})
    extensions = set(vocab.load(GLOBAL, "file_extension").values)
    assert all(name.split(".", 1)[1] in extensions for name in default)


@pytest.mark.parametrize(
    "classes",
    [
        {"lowercase": True, "uppercase": True, "digits": True, "symbols": True},
        {"lowercase": False, "uppercase": True, "digits": True, "symbols": False},
        {"lowercase": True, "uppercase": False, "digits": False, "symbols": False},
    ],
)
@pytest.mark.parametrize("length", [4, 12])
def test_passwords_have_a_character_of_each_class(classes: dict[str, bool], length: int) -> None:
    sets = {
        "lowercase": set(string.ascii_lowercase),
        "uppercase": set(string.ascii_uppercase),
        "digits": set(string.digits),
        "symbols": set(PASSWORD_SYMBOLS),
    }
    allowed = set().union(*(chars for name, chars in sets.items() if classes[name]))
    for password in values("password", {"length": length, **classes}):
        assert len(password) == length
        assert set(password) <= allowed
        for name, chars in sets.items():
            assert bool(set(password) & chars) == classes[name], (password, name)


def test_semantic_versions() -> None:
    made = values("semver", {"max_major": 2, "max_minor": 3, "max_patch": 4, "prerelease_probability": 0.5})
    pattern = r"(\d+)\.(\d+)\.(\d+)(-(alpha|beta|rc)\.[1-9])?"
    matches = [re.fullmatch(pattern, v) for v in made]
    assert all(matches)
    assert {int(m[1]) for m in matches if m} == {0, 1, 2}
    assert sum(1 for m in matches if m and m[4]) == pytest.approx(1_000, abs=120)


def test_colors() -> None:
    hexes = values("color_hex", {"uppercase": True})
    assert all(re.fullmatch("#[0-9A-F]{6}", c) for c in hexes)
    rgbs = values("rgb_color", {})
    for text in rgbs:
        match = re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", text)
        assert match
        assert all(0 <= int(part) <= 255 for part in match.groups())
