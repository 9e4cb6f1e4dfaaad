"""Type stubs of the extension module (python/src/*.rs); the docstrings are the module's."""

import os
import pathlib
from typing import Any, Iterable, Literal, Optional, Sequence, TypedDict, Union

import pyarrow

__version__: str
FORMAT_VERSION: int
MAX_LINE_BYTES: int

Scalar = Union[str, int, float, bool]
StrPath = Union[str, os.PathLike[str]]
Cause = Literal["identify", "alias", "form", "url", "import", "api"]

class IdgraphError(Exception): ...
class InputError(IdgraphError): ...
class LockedError(IdgraphError): ...
class CorruptError(IdgraphError): ...

class Person(TypedDict):
    person: str
    ids: list[str]

class Event(TypedDict):
    id: str
    event: str
    at: int
    properties: dict[str, Union[str, int, float]]

class Property(TypedDict):
    name: str
    value: Union[str, int, float]
    at: int
    id: str

class Link(TypedDict):
    a: str
    b: str
    cause: Cause
    at: int
    source: Optional[str]

class Explanation(TypedDict):
    same_person: bool
    edges: list[Link]

class Hubs(TypedDict):
    largest: list[tuple[str, int]]
    most_linked: list[tuple[str, int]]

class Forgotten(TypedDict):
    ids: list[str]
    links: int
    events: int
    refusals: int

class Outcome(TypedDict, total=False):
    outcome: Literal[
        "joined", "already_same", "refused", "stored", "properties_refused", "suppressed"
    ]
    size: int
    reason: str
    refused: int
    max: int

class Store:
    """An idgraph store: which visitor IDs are one person, their events and properties."""

    def __init__(
        self,
        path: Optional[StrPath] = None,
        *,
        max_person_size: Optional[int] = None,
        max_links_per_person: Optional[int] = None,
        blocked_ids: Optional[Sequence[str]] = None,
        cache_capacity: Optional[int] = None,
        flush_every_ms: Optional[int] = 500,
    ) -> None: ...
    @property
    def path(self) -> Optional[pathlib.Path]: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Store": ...
    def __exit__(self, *args: Any) -> bool: ...
    def __contains__(self, id: str) -> bool: ...
    def resolve(self, id: str) -> Optional[Person]: ...
    def canonical(self, id: str) -> Optional[str]: ...
    def events(self, id: str) -> list[Event]: ...
    def props(self, id: str) -> list[Property]: ...
    def explain(self, a: str, b: str) -> Explanation: ...
    def links(self, id: str) -> list[Link]: ...
    def hubs(self, top: int = 10) -> Hubs: ...
    def stats(self) -> dict[str, int]: ...
    def verify(self) -> dict[str, Any]: ...
    def alias(
        self, a: str, b: str, *, at: Optional[int] = None, cause: Cause = "api"
    ) -> Outcome: ...
    def record(
        self,
        id: str,
        event: str,
        properties: Optional[dict[str, Scalar]] = None,
        *,
        at: Optional[int] = None,
    ) -> Outcome: ...
    def set(
        self, id: str, properties: dict[str, Scalar], *, at: Optional[int] = None
    ) -> Outcome: ...
    def apply(self, ops: Iterable[dict[str, Any]]) -> list[Outcome]: ...
    def import_files(
        self,
        paths: Union[StrPath, Sequence[StrPath]],
        *,
        format: Optional[Literal["km-json", "csv", "parquet"]] = None,
        skip_invalid: bool = False,
        reimport: bool = False,
    ) -> dict[str, Any]: ...
    def forget(self, id: str) -> Optional[Forgotten]: ...
    def flush(self) -> int: ...
    def export_mapping(self) -> pyarrow.RecordBatchReader: ...
    def export_events(self) -> pyarrow.RecordBatchReader: ...

def parse_lines(
    batch: pyarrow.RecordBatch, *, blocked_ids: Optional[Sequence[str]] = None
) -> tuple[pyarrow.RecordBatch, pyarrow.RecordBatch]: ...
def parse_csv(
    data: bytes,
    *,
    file: str,
    now: Optional[int] = None,
    blocked_ids: Optional[Sequence[str]] = None,
) -> tuple[pyarrow.RecordBatch, pyarrow.RecordBatch]: ...
def local_stars(batch: pyarrow.RecordBatch) -> pyarrow.RecordBatch: ...
