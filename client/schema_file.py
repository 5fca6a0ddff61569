"""Load a generation schema (schema.proto's `Schema`) from a JSON or YAML file.

The file holds the same structure as the proto's JSON mapping, for example::

    rows: 1000
    seed: 42
    fields:
      - {name: id, type: uuid4}
      - {name: age, type: integer, params: {min: 18, max: 90}, null_rate: 0.1}

Only the shape is checked here (known keys, value types). Whether a type or a
parameter exists is the server's call, which reports it as a field violation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from google.protobuf import json_format

from datamill.v1 import schema_pb2

__all__ = ["SchemaError", "load_schema", "parse_schema"]

Syntax = Literal["json", "yaml"]


class SchemaError(ValueError):
    """A schema file or dict that cannot be read as a Schema.

    Attributes:
        message: What is wrong.
        source: The file name (or ``"<stdin>"``), when known.
        line: The 1-based line of the problem, when known.
        path: The path of the problem in the schema, e.g. ``fields[2].null_rate``, when known.
    """

    def __init__(
        self, message: str, *, source: str | None = None, line: int | None = None, path: str | None = None
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ":".join(part for part in (self.source, str(self.line) if self.line else None) if part)
        return f"{where}: {self.message}" if where else self.message


class _SchemaLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates and times as strings.

    YAML would turn ``2024-01-01`` into a `datetime.date`, which a
    google.protobuf.Struct (Field.params) cannot hold; the server parses the text.
    """


_SchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_schema(path: str | Path) -> schema_pb2.Schema:
    """Read a Schema from a ``.json``, ``.yaml`` or ``.yml`` file (other names are read as YAML).

    Raises:
        SchemaError: The file cannot be read or parsed, or does not have the shape of a Schema;
            the message names the file and, where it can, the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read schema file: {exc}", source=str(path)) from exc
    syntax: Syntax = "json" if path.suffix.lower() == ".json" else "yaml"
    return parse_schema(text, source=str(path), syntax=syntax)


def parse_schema(text: str, *, source: str = "<schema>", syntax: Syntax = "yaml") -> schema_pb2.Schema:
    """Parse the text of a schema file.

    Raises:
        SchemaError: As for `load_schema`.
    """
    data = _parse_text(text, source=source, syntax=syntax)
    if not isinstance(data, dict):
        raise SchemaError("the schema must be a mapping with 'fields' and 'rows'", source=source, line=1)
    try:
        return json_format.ParseDict(data, schema_pb2.Schema())
    except json_format.ParseError as exc:
        path, message = _describe_parse_error(str(exc))
        raise SchemaError(message, source=source, line=_line_of(text, path), path=path or None) from exc


def _parse_text(text: str, *, source: str, syntax: Syntax) -> Any:
    if syntax == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"invalid JSON: {exc.msg} (column {exc.colno})", source=source, line=exc.lineno) from exc
    try:
        return yaml.load(text, Loader=_SchemaLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        raise SchemaError(
            f"invalid YAML: {problem}", source=source, line=mark.line + 1 if mark is not None else None
        ) from exc
    except yaml.YAMLError as exc:
        raise SchemaError(f"invalid YAML: {exc}", source=source) from exc


# ParseDict reports where it failed as `at "Schema.fields[1]"` or `at Schema.fields[0].null_rate.`
_AT_PATH = re.compile(r'at "?Schema\.?([A-Za-z0-9_.\[\]]*?)"?\.*$')
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field: ")


def _describe_parse_error(raw: str) -> tuple[str, str]:
    """Turn ParseDict's nested message into (path, short message)."""
    first_line = raw.split("\n", 1)[0].strip()
    path = ""
    at = _AT_PATH.search(first_line)
    if at:
        path = at.group(1).strip(".")
        first_line = first_line[: at.start()].rstrip()
    failed = _FAILED_FIELD.findall(first_line)
    detail = _FAILED_FIELD.sub("", first_line).rstrip(". ")
    unknown = _UNKNOWN_FIELD.search(detail)
    if unknown:
        where = f"{path}: " if path else ""
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return path, f"{where}unknown key {unknown.group(1)!r}"
    if not path and failed:
        # Only the outermost field is named, as in "Failed to parse rows field: ...".
        path = failed[0]
    return path, f"{path}: {detail}" if path else detail


def _line_of(text: str, path: str) -> int | None:
    """1-based line of `path` (e.g. "fields[1].nme") in the file, or None if it cannot be found.

    YAML's node tree keeps positions; JSON is close enough to YAML to read the
    same way, and a JSON file YAML cannot read just gets no line number.
    """
    if not path:
        return None
    try:
        node = yaml.compose(text, Loader=_SchemaLoader)
    except yaml.YAMLError:
        return None
    line: int | None = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if isinstance(node, yaml.MappingNode):
            found = next(
                ((key, value) for key, value in node.value if _key_matches(key.value, part)),
                None,
            )
            if found is None:
                break
            line = found[0].start_mark.line + 1
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and part.startswith("["):
            index = int(part[1:-1])
            if index >= len(node.value):
                break
            node = node.value[index]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _key_matches(key: object, part: str) -> bool:
    # The proto JSON mapping accepts both `null_rate` and `nullRate`.
    if not isinstance(key, str):
        return False
    return key == part or key.replace("_", "").lower() == part.replace("_", "").lower()
