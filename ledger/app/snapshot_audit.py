"""The auditor's check of the snapshot table: every snapshot against its stream's events.

A till uses a snapshot only if it is signed under the tills' key (`ledger.store.snapshots`),
but the auditor does not hold that key and need not: what matters is whether a snapshot says
what the events say. So each stored snapshot is compared with its stream's events replayed up
to its version, whoever signed it, and with the position of the event at its version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from ledger.app.audit import MAX_FINDINGS, PAGE_SIZE, Finding
from ledger.domain.stock_item import StockItem
from ledger.store.application import LedgerApplication
from ledger.store.snapshots import (
    BATCH_FIELDS,
    FORMAT,
    LAYER_FIELDS,
    LEGACY_BATCH_FIELDS,
    StockItemSnapshot,
)

SNAPSHOT_PAGE_SIZE = 100
"""Snapshots read at a time: one can hold thousands of batches."""


@dataclass
class SnapshotReport:
    snapshots: int = 0
    """Snapshots checked."""
    unsigned: int = 0
    """Written by older code, without position, key or MAC: no till uses them, but their
    state is checked like any other's."""
    outdated: int = 0
    """In a state format before cost layers (one cost per batch): no till uses them; the
    fields they share with the current format are checked."""
    findings: list[Finding] = field(default_factory=list)


class _StreamReplay:
    """One stream's aggregate, replayed from its events as far as asked, a page at a time."""

    def __init__(self, app: LedgerApplication, stream: UUID) -> None:
        self.app = app
        self.stream = stream
        self.aggregate: Any = None
        self.version = 0
        self.ended = False
        self.unreadable: str | None = None

    def advance(self, version: int) -> None:
        while self.version < version and not self.ended and self.unreadable is None:
            page = self.app.recorder.select_events(self.stream, gt=self.version, lte=version,
                                                   limit=PAGE_SIZE)
            for stored in page:
                try:
                    event = self.app.mapper.to_domain_event(stored)
                    self.aggregate = event.mutate(self.aggregate)  # type: ignore[attr-defined]
                except Exception as error:  # reported, not raised
                    self.unreadable = (f"its event at version {stored.originator_version} "
                                       f"cannot be replayed ({_first_line(error)})")
                    return
                self.version = stored.originator_version
            if len(page) < PAGE_SIZE and self.version < version:
                self.ended = True


def verify_snapshots(app: LedgerApplication) -> SnapshotReport:
    """Check every stored snapshot against its stream's events replayed up to its version.

    A snapshot fails if it cannot be read, is not a stock item's, the position it records is
    not that of the event at its version, the stream has no event at its version, or its state
    is not what the events give (each difference named). One finding per snapshot, naming its
    stream and version, at the position of the event at its version (None if there is none).
    The snapshot table is read a page at a time in (stream, version) order and each
    snapshotted stream's events are replayed once, so memory holds a page of snapshots and one
    aggregate however many there are.
    """
    report = SnapshotReport()
    replay: _StreamReplay | None = None
    after: tuple[UUID, int] | None = None
    while True:
        page = app.select_snapshots(after, SNAPSHOT_PAGE_SIZE)
        positions = app.positions_of([(_stream(s), s.originator_version) for s in page])
        for stored in page:
            report.snapshots += 1
            stream, version = _stream(stored), stored.originator_version
            if replay is None or replay.stream != stream:
                replay = _StreamReplay(app, stream)
            position = positions.get((stream, version))
            problems = _snapshot_problems(app, stored, replay, position, report)
            if problems and len(report.findings) < MAX_FINDINGS:
                report.findings.append(Finding(
                    "snapshots", position,
                    f"snapshot of stream {stream} at version {version}: " + "; ".join(problems)))
        if len(page) < SNAPSHOT_PAGE_SIZE:
            return report
        after = (_stream(page[-1]), page[-1].originator_version)


def _stream(stored: StoredEvent) -> UUID:
    originator_id = stored.originator_id
    return originator_id if isinstance(originator_id, UUID) else UUID(originator_id)


def _snapshot_problems(app: LedgerApplication, stored: StoredEvent, replay: _StreamReplay,
                       position: int | None, report: SnapshotReport) -> list[str]:
    version = stored.originator_version
    try:
        snapshot = app.mapper.to_domain_event(stored)
    except Exception as error:  # reported, not raised
        return [f"it cannot be read ({_first_line(error)})"]
    if not isinstance(snapshot, StockItemSnapshot):
        return [f"it is a {type(snapshot).__name__}, not a StockItemSnapshot"]
    problems: list[str] = []
    if not snapshot.is_bound:
        report.unsigned += 1
    elif position is not None and snapshot.position != position:
        problems.append(f"it records position {snapshot.position!r}, but the event at its "
                        f"version is at position {position}")
    replay.advance(version)
    if replay.unreadable is not None:
        return [*problems, replay.unreadable]
    if replay.version < version:
        return [*problems, f"no event at version {version}: the stream ends at version "
                           f"{replay.version}"]
    if not isinstance(replay.aggregate, StockItem):
        return [*problems, f"the stream holds a {type(replay.aggregate).__name__}"]
    want = StockItemSnapshot.state_of(replay.aggregate)
    if isinstance(snapshot.state, dict) and snapshot.state.get("format") != FORMAT:
        report.outdated += 1
        return problems + _state_differences(snapshot.state, _legacy_state(want),
                                             LEGACY_BATCH_FIELDS)
    problems += _state_differences(snapshot.state, want, BATCH_FIELDS)
    return problems


_LEGACY_UNSHARED = {"next_layer_seq"}
"""Fields of the current state a format 1 snapshot did not record."""


def _legacy_state(state: dict[str, Any]) -> dict[str, Any]:
    """The fields of the events' state (`StockItemSnapshot.state_of`) that a format 1 snapshot
    also records, in its layout. Not its unit cost: it kept one per batch (the last receipt's)
    where the events give one per cost layer, so the two need not agree (left None here and
    not compared)."""
    legacy = {k: v for k, v in state.items() if k not in _LEGACY_UNSHARED}
    legacy["format"] = 1
    legacy["batches"] = [
        [batch_id, sum(layer[LAYER_FIELDS.index("quantity")] for layer in layers), expires_on,
         None, received_seq, expired]
        for batch_id, expires_on, received_seq, _, expired, layers in state["batches"]]
    return legacy


MAX_DIFFERENCES = 20
"""Differences named per snapshot: a forged one may differ in every batch."""


def _state_differences(have: Any, want: dict[str, Any],
                       batch_fields: tuple[str, ...]) -> list[str]:
    """Each field where a snapshot's state differs from what the events give, batch by batch
    and, in the current format, cost layer by cost layer."""
    if not isinstance(have, dict):
        return [f"its state is not a mapping: {_shown(have)}"]
    differences: list[str] = []
    for key in sorted(set(have) | set(want), key=str):
        if key == "batches":
            continue
        if _differ(have.get(key), want.get(key)):
            differences.append(f"{_shown(key)}: snapshot {_shown(have.get(key))}, "
                               f"events {_shown(want.get(key))}")
    snapshot_batches = _batches_by_id(have.get("batches"), len(batch_fields))
    if snapshot_batches is None:
        differences.append(f"batches: not one row of {len(batch_fields)} fields per batch id: "
                           f"{_shown(have.get('batches'))}")
        return differences[:MAX_DIFFERENCES]
    event_batches = _batches_by_id(want["batches"], len(batch_fields)) or {}
    for batch_id in sorted(set(snapshot_batches) | set(event_batches)):
        mine, theirs = snapshot_batches.get(batch_id), event_batches.get(batch_id)
        if mine is None or theirs is None:
            differences.append(f"batch {_shown(batch_id)}: snapshot "
                               f"{'has' if mine else 'lacks'} it, events "
                               f"{'have' if theirs else 'lack'} it")
            continue
        for name, a, b in zip(batch_fields, mine, theirs, strict=True):
            if batch_fields is LEGACY_BATCH_FIELDS and name == "unit_cost":
                continue  # one cost per batch: the events give one per layer
            if name == "layers":
                differences += _quantity_difference(batch_id, a, b)
            if name == "layers" and isinstance(a, list) and len(a) == len(b):
                differences += _layer_differences(batch_id, a, b)
            elif _differ(a, b):
                differences.append(f"batch {_shown(batch_id)} {name}: snapshot {_shown(a)}, "
                                   f"events {_shown(b)}")
    return differences[:MAX_DIFFERENCES]


def _quantity_difference(batch_id: str, have: Any, want: list[Any]) -> list[str]:
    """The batch's quantity (what a till sells from: the sum of its layers') if the snapshot's
    differs from the events'; nothing if its layers cannot be summed (named elsewhere)."""
    index = LAYER_FIELDS.index("quantity")
    if not isinstance(have, list) or not all(
            isinstance(layer, list) and len(layer) == len(LAYER_FIELDS)
            and type(layer[index]) is int for layer in have):
        return []
    mine, theirs = (sum(layer[index] for layer in layers) for layers in (have, want))
    if mine == theirs:
        return []
    return [f"batch {_shown(batch_id)} quantity: snapshot {mine}, events {theirs}"]


def _layer_differences(batch_id: str, have: list[Any], want: list[Any]) -> list[str]:
    """Each field where a batch's cost layers in a snapshot differ from the events', layer by
    layer (as many of each)."""
    differences: list[str] = []
    for index, (mine, theirs) in enumerate(zip(have, want, strict=True)):
        if not isinstance(mine, list) or len(mine) != len(LAYER_FIELDS):
            differences.append(f"batch {_shown(batch_id)} layer {index}: not a row of "
                               f"{len(LAYER_FIELDS)} fields: {_shown(mine)}")
            continue
        for name, a, b in zip(LAYER_FIELDS, mine, theirs, strict=True):
            if _differ(a, b):
                differences.append(f"batch {_shown(batch_id)} layer {index} {name}: snapshot "
                                   f"{_shown(a)}, events {_shown(b)}")
    return differences


def _differ(a: object, b: object) -> bool:
    # 95.0 and True equal 95 and 1 in Python, but a till would not compute with them alike.
    return a != b or type(a) is not type(b)


def _batches_by_id(rows: Any, width: int) -> dict[str, tuple[Any, ...]] | None:
    """The rows by batch id; None unless each is a row of `width` fields with its own
    string id (a loading till would apply a repeated id twice)."""
    if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == width and isinstance(r[0], str)
            for r in rows):
        return None
    by_id = {row[0]: tuple(row) for row in rows}
    return by_id if len(by_id) == len(rows) else None


def _shown(value: object) -> str:
    """A value as Python writes it (control characters escaped), cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]
