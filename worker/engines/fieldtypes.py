"""Vectorized generators, one per type declared in `server.core.fieldtypes`.

A generator makes one block of rows with numpy and Arrow compute only (no
loop per row). Its output must depend on nothing but its params and the
`Block` (that block's random stream, row numbers and the column's seed), so
that any process regenerates the same block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes import (
    FIELD_TYPES,
    BooleanParams,
    ChoiceParams,
    FieldParams,
    FloatParams,
    IntegerParams,
    NoParams,
    SequenceParams,
    TextParams,
    TimestampParams,
)

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
UUID_TYPE = pa.binary(16)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Block:
    rng: np.random.Generator  # this block's stream
    row_ids: npt.NDArray[np.int64]  # the rows' numbers in the dataset
    field_seed: int  # the same for every block of the column

    @property
    def size(self) -> int:
        return len(self.row_ids)


P = TypeVar("P", bound=FieldParams)
ColumnGenerator = Callable[[P, Block], pa.Array]
GENERATORS: dict[str, ColumnGenerator[Any]] = {}


def generator(name: str, params: type[P]) -> Callable[[ColumnGenerator[P]], ColumnGenerator[P]]:
    """Register a generator for the declared type `name`, whose params must be `params`."""
    if FIELD_TYPES[name].params is not params:
        raise TypeError(f"{name} is declared with {FIELD_TYPES[name].params.__name__}, not {params.__name__}")

    def register(fn: ColumnGenerator[P]) -> ColumnGenerator[P]:
        GENERATORS[name] = fn
        return fn

    return register


@generator("integer", IntegerParams)
def _integer(params: IntegerParams, block: Block) -> pa.Array:
    return pa.array(block.rng.integers(params.min, params.max, size=block.size, endpoint=True))


@generator("float", FloatParams)
def _float(params: FloatParams, block: Block) -> pa.Array:
    values = block.rng.uniform(params.min, params.max, size=block.size)
    return pa.array(values if params.decimals is None else np.round(values, params.decimals))


@generator("boolean", BooleanParams)
def _boolean(params: BooleanParams, block: Block) -> pa.Array:
    return pa.array(block.rng.random(block.size) < params.probability)


@generator("sequence", SequenceParams)
def _sequence(params: SequenceParams, block: Block) -> pa.Array:
    # Validation proved every row of the dataset fits in int64; rows of the last
    # block past the end may wrap, and generate_chunk slices them away.
    return pa.array(params.start + params.step * block.row_ids)


@generator("uuid4", NoParams)
def _uuid4(params: NoParams, block: Block) -> pa.Array:
    # 64 of the 122 free bits are a bijection of the row number, so values are
    # distinct by construction (unique: true holds without a check); the other
    # 58 are random.
    mixed = _mix64(block.row_ids.astype(np.uint64) + np.uint64(block.field_seed))
    hi = ((mixed << np.uint64(4)) & np.uint64(0xFFFF_FFFF_FFFF_0000)) | np.uint64(0x4000) | (mixed & np.uint64(0xFFF))
    lo = block.rng.integers(0, 2**64, size=block.size, dtype=np.uint64, endpoint=False)
    lo = (lo & np.uint64(0x3FFF_FFFF_FFFF_FFF0)) | np.uint64(0x8000_0000_0000_0000) | (mixed >> np.uint64(60))
    raw = np.empty((block.size, 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = hi, lo
    return pa.FixedSizeBinaryArray.from_buffers(UUID_TYPE, block.size, [None, pa.py_buffer(raw)])


@generator("choice", ChoiceParams)
def _choice(params: ChoiceParams, block: Block) -> pa.Array:
    values = pa.array(params.values, pa.string())
    if params.weights is None:
        picks = block.rng.integers(0, len(values), size=block.size)
    else:
        weights = np.asarray(params.weights)
        picks = block.rng.choice(len(values), size=block.size, p=weights / weights.sum())
    return values.take(picks)


@generator("text", TextParams)
def _text(params: TextParams, block: Block) -> pa.Array:
    lengths = block.rng.integers(params.min_words, params.max_words, size=block.size, endpoint=True)
    offsets = np.zeros(block.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    words = WORDS.take(block.rng.integers(0, len(WORDS), size=int(offsets[-1])))
    sentences = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), words), " ")
    return pc.binary_join_element_wise(pc.utf8_capitalize(sentences), ".", "")


@generator("word", NoParams)
def _word(params: NoParams, block: Block) -> pa.Array:
    return WORDS.take(block.rng.integers(0, len(WORDS), size=block.size))


@generator("timestamp", TimestampParams)
def _timestamp(params: TimestampParams, block: Block) -> pa.Array:
    start, end = (_epoch_micros(t) for t in (params.start, params.end))
    return pa.array(block.rng.integers(start, end, size=block.size, endpoint=True), TIMESTAMP_TYPE)


def _epoch_micros(instant: datetime) -> int:
    return (instant - _UNIX_EPOCH) // timedelta(microseconds=1)


def _mix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finalizer: a bijection on uint64 that scatters consecutive inputs."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_WORD_LIST = """
    a able about above accept across act action add after again against age ago agree air all allow almost
    alone along already also always among amount and animal answer any appear apple area arm around arrive art
    as ask at away baby back bad ball bank base be bear beat beautiful because become bed before begin behind
    believe bell best better between big bird black blue boat body bone book born both bottom box boy bread
    break bright bring brother brown build burn busy but buy by call came can capital car care carry case cat
    catch cause cell center certain chair change charge chart check child choose circle city class clean clear
    climb clock close cloud coast cold color come common company complete corn cost could count country course
    cover cross crowd cry current cut dance dark day dear decide deep degree develop did different direct do
    doctor dog door down draw dream dress drink drive drop dry during each early earth east easy eat edge effect
    egg eight either else end energy enough enter even evening event ever every exact example except expect
    experience eye face fact fair fall family far farm fast father fear feel few field fight figure fill final
    find fine finger fire first fish five flat floor flow flower fly follow food foot for force forest form
    forward found four free fresh friend from front fruit full game garden gather general gentle get girl give
    glad glass go gold good govern grass great green ground group grow guess half hand happen happy hard have
    he head hear heart heat heavy help her here high hill him his history hold home hope horse hot hour house
    how huge human hundred hunt idea if imagine in inch include industry instrument interest iron island it
    join joy jump just keep key kind king know lake land language large last late laugh lead learn leave left
    leg less letter level lie life lift light like line liquid list listen little live long look lost love low
    machine magnet main major make man many map mark market matter may mean measure meet melody metal middle
    might mile milk mind minute miss modern moment money month moon more morning most mother mountain move much
    music must name nation nature near need never new next night noise north note nothing notice now number
    ocean offer office often old once one only open order other our out over page paint paper park part party
    pass past path pattern people perhaps period person picture piece place plain plan plant play please poem
    point poor position possible power practice prepare present press pretty print probable problem produce
    product proper protect prove pull push put question quick quiet quite race radio rain raise reach read ready
    real reason record red region remember repeat reply rest result rich ride right ring rise river road rock
    roll room root rope rose round row rule run safe sail salt same sand save say school science sea season seat
    second see seed seem sell send sense sentence serve set settle seven shape share sharp she shell shine ship
    shoe shop short should shoulder shout show side sight sign silent silver simple since sing sister sit six
    size skill skin sky sleep slow small smell smile snow soft soil soldier solution some song soon sound south
    space speak special speed spell spend spring square stand star start state station stay steam steel step
    stick still stone stop store story straight strange stream street strong student study subject success
    such sudden sugar summer sun supply sure surface surprise sweet swim system table tail take talk tall teach
    team tell test than thank that the their them then there these thick thin thing think third this those
    though thought thousand three through throw time tiny today together tomorrow tone tool top total touch
    toward town track trade train travel tree trip trouble true try tube turn twenty two type under unit until
    up use usual valley value village visit voice wait walk wall want warm wash watch water wave way we wear
    weather week weight well west what wheel when where which while white whole why wide wife wild will win
    wind window winter wish with woman wonder wood word work world write wrong yard year yellow yes yet you young
    """
WORDS = pa.array(_WORD_LIST.split(), pa.string())
