"""The auditor's tools, working from the events alone: replay, chain verification, export and
trace. Nothing here reads a projection; everything streams, page by page, in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from eventsourcing.persistence import Notification

from ledger import events
from ledger.app.commands import check_position
from ledger.domain import identity
from ledger.domain.errors import UnknownSale
from ledger.domain.movements import journal_rows, movements
from ledger.domain.replay import OutletStock
from ledger.domain.sale import Sale
from ledger.store.application import LedgerApplication
from ledger.store.decoding import UnreadableEvent
from ledger.store.hash_chain import (
    GENESIS,
    chain_hash,
    content_digest,
    select_chained,
    select_version_breaks,
)
from ledger.store.postgres.recorder import ChainedPostgresRecorder

PAGE_SIZE = 1000
MAX_FINDINGS = 100
UNREADABLE = "unreadable"
"""The `kind` of an export row that marks an event that cannot be read, in its place."""


def notifications(app: LedgerApplication, start: int = 1,
                  stop: int | None = None) -> Iterator[Notification]:
    """Every stored event from `start` to `stop` (inclusive), a page at a time."""
    while True:
        page = app.recorder.select_notifications(start, PAGE_SIZE, stop=stop)
        yield from page
        if len(page) < PAGE_SIZE:
            return
        start = page[-1].id + 1


def stored_events(app: LedgerApplication, start: int = 1,
                  stop: int | None = None) -> Iterator[tuple[int, Any]]:
    for notification in notifications(app, start, stop):
        yield notification.id, app.mapper.to_domain_event(notification)


def _aware(moment: datetime | None) -> datetime | None:
    """A time without a zone is UTC, as in a command (comparing it with a recorded time, which
    always has one, would raise)."""
    if moment is not None and moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment


# --------------------------------------------------------------------------- replay


def replay(app: LedgerApplication, outlet: str, sku: str | None = None, *,
           position: int | None = None, as_of: datetime | None = None,
           basis: Literal["recorded", "business"] = "recorded") -> dict[str, Any]:
    """Stock of an outlet as it stood at a position, or at a moment, by replaying events.

    At a moment, `basis="recorded"` takes what the ledger had recorded by then (what any reader
    was shown); `basis="business"` takes movements whose business time (occurred_at) had come,
    including sales a till submitted late. The fold depends on no order of the movements
    (`ledger.domain.replay`); `negative_batches` lists any batch below zero then.

    An event that cannot be read on one of the replayed streams raises `UnreadableEvent`; one
    on another outlet's stream (or one not yet known to be this outlet's) is passed over and
    listed in `unreadable_passed_over`.
    """
    if position is not None:
        check_position("position", position)
    as_of = _aware(as_of)
    wanted = None if sku is None else {identity.stock_item_id(outlet, sku),
                                       identity.hold_register_id(sku)}
    stock = OutletStock(outlet)
    last_position = 0
    # An event that cannot be read fails the replay only if it may be one of this outlet's:
    # on a stream not known to be a stock item of the outlet it is passed over, and listed.
    outlet_streams: set[object] = set()
    passed_over: list[int] = []
    for notification in notifications(app, 1, position):
        if wanted is not None and notification.originator_id not in wanted:
            continue
        try:
            event = app.mapper.to_domain_event(notification)
        except UnreadableEvent:
            if wanted is not None or notification.originator_id in outlet_streams:
                raise
            passed_over.append(notification.id)
            continue
        if isinstance(event, events.StockItemOpened) and event.outlet == outlet:
            outlet_streams.add(notification.originator_id)
        if isinstance(event, (events.LotHeld, events.LotReleased)):
            moment = event.timestamp if basis == "recorded" else event.occurred_at
            if as_of is None or moment <= as_of:
                stock.hold_or_release(event)
            continue
        if not isinstance(event, events.StockMovement) or event.outlet != outlet:
            continue
        stock.identify(event)
        if as_of is not None:
            moment = event.timestamp if basis == "recorded" else event.occurred_at
            if moment > as_of:
                continue
        last_position = notification.id
        stock.apply(event)
    on_date = (as_of or datetime.now(UTC)).date()
    return {
        "outlet": outlet,
        "position": position,
        "as_of": as_of.isoformat() if as_of else None,
        "basis": basis,
        "last_position_applied": last_position,
        "stock": stock.stock(on_date),
        "negative_batches": stock.negative_batches(),
        "unreadable_passed_over": passed_over,
    }


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Finding:
    """One thing verification found wrong."""

    check: str
    position: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "position": self.position, "message": self.message}


@dataclass
class ChainReport:
    """What `verify_chain` checked: how many rows, the sealed head (the newest chained row,
    position and hash), where digests start, and what it found wrong."""

    rows: int = 0
    head_position: int = 0
    head_hash: str = GENESIS.hex()
    digests_from: int | None = None
    """The first position whose row carries a content digest; rows before it are legacy."""
    findings: list[Finding] = field(default_factory=list)
    sealed_here: bool = True
    """False if this role may not seal, so only what was sealed before was checked."""

    @property
    def first_broken_position(self) -> int | None:
        return min((f.position for f in self.findings if f.position is not None), default=None)

    def add(self, check: str, position: int | None, message: str) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(check, position, message))


def verify_chain(app: LedgerApplication) -> ChainReport:
    """Check every stored event three ways: its content digest, its chain link, and its
    place in its stream's run of versions.

    * Digest (`content_digest`, written by the event's own append): an edited row, or rows
      whose states were swapped, fail it from the moment the append committed, sealed or not.
      A row without a digest is legacy (written before digests existed) if no row before it
      has one; after such a row a missing digest is reported.
    * Chain: each row's link is recomputed from its content and its stored predecessor. An
      edited row fails its own check; a deleted row fails the check of the row after it; rows
      swapped or renumbered fail where the order changed. On PostgreSQL the chain is sealed
      after commit: everything up to the horizon is sealed first (the sealer stops before a
      row that fails its digest), rows above the sealed head are checked by digest only, and
      a row that has no link below the sealed head (committed after a later position was
      sealed, which the append never lets happen) is reported too.
    * Versions: each stream's events run 1, 2, 3... in position order; a deleted event shows
      as a gap at the next event of its stream, an inserted one out of turn as a break.
    """
    recorder = app.recorder
    report = ChainReport()
    head: int | None = None
    stop: int | None = None
    if isinstance(recorder, ChainedPostgresRecorder):
        # A role that may only read (the auditor's) checks the chain as sealed so far: the
        # events after it are sealed by `projections run` and checked by the next verify.
        report.sealed_here = recorder.may_seal()
        head = recorder.seal_all() if report.sealed_here else recorder.sealed_head()
        # Read to the horizon, not the sealed head: what the sealer refused, or has not come
        # to yet, is checked by its digest.
        stop = max(recorder.horizon(), head)
    previous = GENESIS
    start = 1
    while True:
        rows = select_chained(recorder, start, PAGE_SIZE, stop)
        for row in rows:
            _check_row(report, row, previous, head)
            stored = bytes(row["chain_hash"]) if row["chain_hash"] is not None else b""
            if stored:
                # A row with no link was passed over by the sealer: the next link follows
                # the one before it.
                previous = stored
                report.head_position, report.head_hash = row["position"], stored.hex()
        if len(rows) < PAGE_SIZE:
            break
        start = rows[-1]["position"] + 1
    last = rows[-1]["position"] if rows else (start - 1)
    for row in select_version_breaks(recorder, stop if stop is not None else last,
                                     MAX_FINDINGS):
        before = row["previous_version"]
        report.add("versions", row["position"],
                   f"position {row['position']}: stream {row['originator_id']} has version "
                   f"{row['version']} here, after "
                   + (f"version {before}" if before is not None else "none")
                   + f", not {(before or 0) + 1}: an event of the stream was removed, or this "
                   "one was inserted or moved")
    return report


def _check_row(report: ChainReport, row: dict[str, Any], previous: bytes,
               head: int | None) -> None:
    report.rows += 1
    position = row["position"]
    state = row["state"]
    # A row edited by hand may even have changed type (SQLite text for a blob).
    content = state.encode() if isinstance(state, str) else bytes(state or b"")
    topic = row["topic"] or ""
    digest = row["content_digest"]
    if digest is not None:
        if report.digests_from is None:
            report.digests_from = position
        if bytes(digest) != content_digest(position, row["originator_id"],
                                           row["originator_version"], topic, content):
            report.add("digest", position,
                       f"position {position}: the row's content does not match the digest "
                       "its append wrote (the row was changed, or rows were swapped); it is "
                       "never sealed")
    elif report.digests_from is not None:
        report.add("digest", position,
                   f"position {position}: no content digest, though position "
                   f"{report.digests_from} before it has one (the digest was removed); it is "
                   "never sealed")
    if head is not None and position > head:
        return  # not sealed yet (or refused by the sealer): its digest is its only evidence
    stored = bytes(row["chain_hash"]) if row["chain_hash"] is not None else b""
    expected = chain_hash(previous, position, row["originator_id"],
                          row["originator_version"], topic, content)
    if stored != expected:
        report.add(
            "hash_chain", position,
            f"position {position}: no chain link: the row was committed after a later "
            "position had been chained" if not stored else
            f"position {position}: chain hash does not match the row's content and its "
            "predecessor (this row was changed, or one before it was removed or reordered)")


def verify_events(app: LedgerApplication) -> list[Finding]:
    """A finding for each stored row that cannot be read as one of the ledger's events (a
    topic no class has, state that is not JSON or not its class's shape), by position.

    The hash chain cannot show such a row: appended through the append function, it is
    chained like any other. Everything that reads events stops at it or marks it."""
    findings: list[Finding] = []
    for notification in notifications(app):
        try:
            app.mapper.to_domain_event(notification)
        except UnreadableEvent as error:
            findings.append(Finding("events", notification.id, str(error)))
            if len(findings) >= MAX_FINDINGS:
                break
    return findings


# --------------------------------------------------------------------------- export


def export_rows(app: LedgerApplication, *, since: datetime | None = None,
                until: datetime | None = None, outlet: str | None = None,
                sku: str | None = None,
                reference: str | None = None) -> Iterator[tuple[object, ...]]:
    """Every movement matching the filters, in position order, as `JOURNAL_COLUMNS` rows.

    Times filter on business time (occurred_at): `since` inclusive, `until` exclusive.

    An event that cannot be read is exported in its place as a marker row, whatever the
    filters (what it was, and so whether they match it, is not known): its `kind` is
    `UNREADABLE`, its `detail` says where the row is and why, and every other column but
    `position` and `seq` is empty, so that an auditor sees the gap in the data itself.
    """
    since, until = _aware(since), _aware(until)
    for notification in notifications(app):
        position = notification.id
        try:
            event = app.mapper.to_domain_event(notification)
        except UnreadableEvent as error:
            yield unreadable_row(error)
            continue
        if not isinstance(event, events.StockMovement):
            continue
        if (outlet is not None and event.outlet != outlet) or (
                sku is not None and event.sku != sku):
            continue
        if (since is not None and event.occurred_at < since) or (
                until is not None and event.occurred_at >= until):
            continue
        if reference is not None and reference not in (
                event.reference, getattr(event, "sale_id", None)):
            continue
        yield from journal_rows(position, event)


def unreadable_row(error: UnreadableEvent) -> tuple[object, ...]:
    """The export's marker row for an event that cannot be read (`JOURNAL_COLUMNS`)."""
    return (error.position, 0, UNREADABLE, None, None, None, None, None, None, None, None,
            None, None, str(error))


# --------------------------------------------------------------------------- trace


def trace_sale(app: LedgerApplication, sale_id: str) -> dict[str, Any]:
    """A sale's lines and the batches they drew from, its refunds, and every later movement
    of each of those batches."""
    try:
        return _trace_sale(app, sale_id)
    except UnreadableEvent as error:
        app.locate(error)  # a stream's reader does not know the row's position
        raise


def _trace_sale(app: LedgerApplication, sale_id: str) -> dict[str, Any]:
    sale = app.load(identity.sale_id(sale_id))
    if not isinstance(sale, Sale):
        raise UnknownSale(sale_id)
    refunds = [
        {"refund_id": e.refund_id, "occurred_at": e.occurred_at.isoformat(), "actor": e.actor,
         "lines": [line.model_dump(mode="json") for line in e.lines]}
        for e in app.events.get(sale.id) if isinstance(e, events.SaleRefunded)
    ]
    lines = []
    for line in sale.lines.values():
        batches = {take.batch_id for take in line.takes}
        later: list[dict[str, Any]] = []
        seen_sale = False
        for event in app.events.get(identity.stock_item_id(sale.outlet, line.sku)):
            if isinstance(event, events.StockSold) and event.sale_id == sale_id:
                seen_sale = True
                continue
            if not seen_sale or not isinstance(event, events.StockMovement):
                continue
            for movement in movements(event):
                if movement.batch_id in batches:
                    later.append({"batch_id": movement.batch_id, "kind": movement.kind,
                                  "quantity": movement.quantity,
                                  "occurred_at": event.occurred_at.isoformat(),
                                  "reference": event.reference, "actor": event.actor,
                                  "detail": movement.detail})
        lines.append({"sku": line.sku, "quantity": line.quantity,
                      "takes": [t.model_dump(mode="json") for t in line.takes],
                      "unallocated": line.unallocated, "batch_history_since_sale": later})
    return {"sale_id": sale_id, "outlet": sale.outlet, "lines": lines, "refunds": refunds}
