"""The change feed: every movement in position order, page by page, from the journal read model.

A page is read from the journal's live view and never goes past the position the journal
stands at (its tracking record). That position never passes the horizon: the runner only
applies events it read below the horizon (`select_notifications`) or whole ranges up to a head
read earlier, and a batch's journal rows are written in the same transaction as the position
they reach. So every movement at or below the journal's position is in the journal, none
will ever be added below it, and a consumer that resumes after the `next` of its last page sees
every movement exactly once, in order, however out of order appends commit.

Pages never split an event: all the movements of one position are in the same page. A page
holds at most `limit` movements, unless a single event alone moved more batches than that (a
count of many batches), which then makes a page by itself.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from ledger.app.commands import check_position
from ledger.domain.errors import InvalidInput
from ledger.store.application import LedgerApplication
from projections.journal import COLUMNS as JOURNAL_COLUMNS
from projections.runner import ReadModels
from projections.stuck import ProjectionStuck, Stuck

MAX_LIMIT = 1000
"""At most how many movements a caller may ask for in one page."""
WINDOW_POSITIONS = 10_000
"""How many positions one query looks through: an outlet's movements may be far apart, and
a bounded index range keeps each query cheap however rare they are."""
MAX_SCAN_POSITIONS = 100_000
"""How far one page looks for a movement before it answers an empty page with its cursor
moved on (`more`): a page costs at most ten bounded queries."""

SELECT = ("SELECT " + ", ".join(JOURNAL_COLUMNS) + " FROM {journal} "
          "WHERE position > %s AND position <= %s{outlets} ORDER BY position, seq LIMIT %s")
SELECT_EVENT = ("SELECT " + ", ".join(JOURNAL_COLUMNS) + " FROM {journal} "
                "WHERE position = %s{outlets} ORDER BY seq")


@dataclass(frozen=True)
class FeedPage:
    """One page of the feed: the movements after `after`, up to and including `next`."""

    after: int
    next: int
    """The cursor to resume from: every movement (of the outlets asked for) at or below it
    is in this page or an earlier one, and none above it is in this one."""
    position: int
    """Where the journal stood when read; the feed never passes it."""
    movements: list[dict[str, Any]] = field(default_factory=list)
    stuck: Stuck | None = None
    """The event the read models stop before because it cannot be read, if they do (known to
    pages read after a catch-up): the feed stops there too, never passing it."""

    @property
    def more(self) -> bool:
        """Whether the journal holds positions beyond `next` already (ask again at once)."""
        return self.next < self.position

    def events(self) -> list[tuple[int, list[dict[str, Any]]]]:
        """The movements grouped by position, in order: one group per event."""
        grouped: list[tuple[int, list[dict[str, Any]]]] = []
        for row in self.movements:
            if grouped and grouped[-1][0] == row["position"]:
                grouped[-1][1].append(row)
            else:
                grouped.append((row["position"], [row]))
        return grouped


class Feed:
    """The change feed of one store."""

    def __init__(self, app: LedgerApplication) -> None:
        self.models = ReadModels(app)
        self.journal = self.models.views("journal")["journal"]

    def position(self) -> int:
        """Where the journal's live generation stands: every movement up to it is in it."""
        return self.models.positions()["journal"]

    def catch_up(self) -> tuple[int, Stuck | None]:
        """Bring the read models up to the head (as every read does): then `position()`,
        and the event they stopped before if they met one they cannot read (they apply
        everything before it, and go no further until it is repaired)."""
        try:
            # A role that may only read (the auditor's) pages the journal as it stands.
            self.models.catch_up_if_permitted(workers=1)
        except ProjectionStuck as error:
            return self.position(), error.stuck
        return self.position(), None

    def fresh_page(self, after: int, limit: int,
                   outlets: Collection[str] | None = None) -> FeedPage:
        """As `page`, once the read models are caught up to the head (a read that no
        running follower has to have brought up to date), saying where they are stuck."""
        position, stuck = self.catch_up()
        return replace(self.page(after, limit, outlets, position=position), stuck=stuck)

    def page(self, after: int, limit: int, outlets: Collection[str] | None = None,
             *, position: int | None = None) -> FeedPage:
        """The movements after position `after`, at most `limit` (see the module's note),
        of `outlets` only if given; up to the journal's position (or `position`, if the
        caller read it already). `InvalidInput` for a position or limit out of bounds."""
        check_position("after", after)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput("limit", f"must be 1 to {MAX_LIMIT}")
        if outlets is not None and not outlets:
            raise InvalidInput("outlets", "give at least one outlet, or none for every one")
        bound = self.position() if position is None else position
        cursor = after
        while True:
            end = min(bound, cursor + WINDOW_POSITIONS)
            if end <= cursor:
                # Nothing beyond the cursor yet (or the journal is behind it): the cursor
                # stays where it is, never goes back.
                return FeedPage(after, cursor, bound)
            rows = self._select(SELECT, [cursor, end], outlets, limit + 1)
            if rows:
                break
            cursor = end
            if cursor - after >= MAX_SCAN_POSITIONS:
                return FeedPage(after, cursor, bound)
        if len(rows) <= limit:
            return FeedPage(after, end, bound, rows)
        # Full: end the page before the event the first movement left out belongs to, so
        # that no event is split; an event bigger than a page is a page of its own.
        cut = rows[limit]["position"]
        kept = [row for row in rows if row["position"] < cut]
        if kept:
            return FeedPage(after, cut - 1, bound, kept)
        return FeedPage(after, cut, bound, self._select(SELECT_EVENT, [cut], outlets, None))

    def _select(self, statement: str, params: list[Any], outlets: Collection[str] | None,
                limit: int | None) -> list[dict[str, Any]]:
        where = ""
        values = list(params)
        if outlets is not None:
            where = " AND outlet IN (" + ", ".join(["%s"] * len(outlets)) + ")"
            values += sorted(outlets)
        if limit is not None:
            values.append(limit)
        sql = self.models.dialect.sql(statement.format(journal=self.journal, outlets=where))
        return [_plain(row) for row in self.models.query(sql, values)]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A journal row as JSON-ready values, alike on both stores (times as ISO 8601 text)."""
    plain = {}
    for name in JOURNAL_COLUMNS:
        value = row[name]
        if isinstance(value, (datetime, date)):
            value = value.isoformat()
        plain[name] = value
    plain["position"], plain["seq"] = int(plain["position"]), int(plain["seq"])
    plain["quantity"] = int(plain["quantity"])
    return plain
