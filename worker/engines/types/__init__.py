"""Vectorized generators, one per type of `server.core.fieldtypes` (see `base` for the contract)."""

import worker.engines.types.address as _address  # noqa: F401
import worker.engines.types.commerce as _commerce  # noqa: F401
import worker.engines.types.datetime as _datetime  # noqa: F401
import worker.engines.types.finance as _finance  # noqa: F401
import worker.engines.types.geo as _geo  # noqa: F401
import worker.engines.types.identifiers as _identifiers  # noqa: F401
import worker.engines.types.internet as _internet  # noqa: F401
import worker.engines.types.numbers as _numbers  # noqa: F401
import worker.engines.types.person as _person  # noqa: F401
import worker.engines.types.structured as _structured  # noqa: F401
import worker.engines.types.text as _text  # noqa: F401
from worker.engines.types import core, derived  # noqa: F401  # each module registers its generators on import
from worker.engines.types.base import GENERATORS, Block

__all__ = ["GENERATORS", "Block"]
