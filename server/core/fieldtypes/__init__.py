"""The field-type catalogue: what each type is called, accepts and stores.

Adding a type means a params model and a `declare(FieldType(...))` in the
module of its category here, and a generator of the same name in
`worker.engines.types` (a type that is an entry of a vocabulary list: params
subclassing LocaleListParams or GlobalListParams, and `list_generators(name)`);
then `make docs` to regenerate docs/field-types.md.
"""

import server.core.fieldtypes.address as _address  # noqa: F401
import server.core.fieldtypes.commerce as _commerce  # noqa: F401
import server.core.fieldtypes.datetime as _datetime  # noqa: F401
import server.core.fieldtypes.finance as _finance  # noqa: F401
import server.core.fieldtypes.geo as _geo  # noqa: F401
import server.core.fieldtypes.identifiers as _identifiers  # noqa: F401
import server.core.fieldtypes.internet as _internet  # noqa: F401
import server.core.fieldtypes.numbers as _numbers  # noqa: F401
import server.core.fieldtypes.person as _person  # noqa: F401
import server.core.fieldtypes.structured as _structured  # noqa: F401
import server.core.fieldtypes.text as _text  # noqa: F401
from server.core.fieldtypes import core, derived  # noqa: F401  # each module declares its types on import
from server.core.fieldtypes.base import FIELD_TYPES, ColumnType, FieldParams, FieldType, NoParams

__all__ = ["FIELD_TYPES", "ColumnType", "FieldParams", "FieldType", "NoParams"]
