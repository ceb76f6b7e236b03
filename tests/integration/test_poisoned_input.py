"""No input poisons the store: whatever the Python API accepts, every read over it succeeds on
both stores, and verification is clean (hardening issue).

The property test throws arbitrary text (NUL, surrogates, controls, bidirectional overrides
included), arbitrary times in arbitrary time zones and arbitrary dates at every field of every
command, records what the ledger accepts, then runs every read there is over it: the write
model's stock level, projection catch-up and rebuild, the projected reads, replay by time and
by position, export in both formats, trace, and `audit verify` as the CLI runs it.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ledger import events
from ledger.app.audit import export_rows, replay, trace_sale, verify_chain, verify_events
from ledger.app.commands import MAX_POSITION, unsafe_character
from ledger.app.service import Ledger
from ledger.app.valuation import COST_COLUMNS, export_with_costs
from ledger.domain.errors import InsufficientStock, InvalidInput, Refusal
from ledger.domain.movements import JOURNAL_COLUMNS
from ledger.domain.stock_item import StockItem
from projections.queries import Reads
from projections.runner import PROJECTIONS, ReadModels
from projections.verify import verify_read_models

today = datetime.now(UTC).date()

# --------------------------------------------------------------------------- reading it all


def write_export(stream: io.StringIO, output_format: str, rows: Iterator[Any]) -> int:
    """`ledger audit export`'s writer: how many movements it wrote; none is unreadable."""
    from cli.audit import _write

    count, unreadable = _write(stream, output_format, rows)
    assert unreadable == []
    return count


def read_everything(ledger: Ledger, *, sales: tuple[str, ...] = (),
                    references: tuple[str, ...] = (),
                    times: tuple[datetime, ...] = ()) -> None:
    """Every read there is, over everything recorded; each must succeed, verify clean."""
    app = ledger.application
    models = ReadModels(app)
    models.create()
    models.catch_up()
    reads = Reads(app)
    head = ledger.head_position()
    now = datetime.now(UTC)
    outlets: set[str] = set()
    for opened in app.stock_items_opened():
        outlets.add(opened.outlet)
        level = ledger.stock_level(opened.outlet, opened.sku)
        projected = reads.stock(opened.outlet, opened.sku)
        assert [(r["on_hand"], r["available"]) for r in projected] == [
            (level.on_hand, level.available)], (opened.outlet, opened.sku)
        reads.batches(opened.outlet, opened.sku)
        reads.history(opened.outlet, opened.sku, limit=10_000)
    for outlet in sorted(outlets):
        reads.stock(outlet)
        reads.low_stock(outlet)
        reads.history(outlet, limit=10_000)
        for reference in references:
            reads.history(outlet, reference=reference)
        for moment in times:
            reads.history(outlet, since=moment)
            replay(app, outlet, as_of=moment, basis="business")
        for basis in ("recorded", "business"):
            replay(app, outlet, as_of=now, basis=basis)  # type: ignore[arg-type]
        replay(app, outlet, position=head)
        replay(app, outlet, position=max(head // 2, 0))
    for sale_id in sales:
        trace_sale(app, sale_id)
    for output_format in ("csv", "jsonl"):
        stream = io.StringIO()
        exported = write_export(stream, output_format, export_with_costs(app, export_rows(app)))
        if output_format == "jsonl":
            lines = stream.getvalue().splitlines()
            assert len(lines) == exported
            assert all(set(json.loads(line)) == {*JOURNAL_COLUMNS, *COST_COLUMNS} for line in lines)
    for moment in times:
        list(export_rows(app, since=moment, until=now + timedelta(days=1)))
    models.rebuild(list(PROJECTIONS))
    chain = verify_chain(app)
    assert chain.findings == [], chain.findings
    assert verify_events(app) == []
    ReadModels(app).create()  # as `ledger audit verify` does
    assert verify_read_models(app) == []


# --------------------------------------------------------------------------- stores


@contextmanager
def sqlite_store() -> Iterator[Ledger]:
    with tempfile.TemporaryDirectory() as directory, \
            Ledger.open(f"sqlite:///{directory}/ledger.sqlite3", create_tables=True) as ledger:
        yield ledger


_schemas = itertools.count()


@contextmanager
def postgres_store(database_url: str) -> Iterator[Ledger]:
    """A fresh schema of the test's database: much cheaper than a database per example."""
    schema = f"poison_{next(_schemas)}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    with Ledger.open(f"{database_url}?schema={schema}", create_tables=True) as ledger:
        yield ledger


@pytest.fixture
def open_store(store_url: str) -> Callable[[], Any]:
    """A context manager that opens a fresh store of the parametrised backend."""
    if store_url.startswith("sqlite"):
        return sqlite_store
    return lambda: postgres_store(store_url)


# --------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("name", ["actor", "reason", "reference", "key"])
def test_a_nul_byte_is_refused_and_every_read_still_works(
        open_store: Callable[[], Any], name: str) -> None:
    """Before: accepted, then every projected read on PostgreSQL failed (exit 3) for good."""
    with open_store() as ledger:
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=5)
        head = ledger.head_position()
        fields: dict[str, Any] = {"actor": "till-1", "reason": "damaged", "reference": "W-1",
                                  "key": "W-1", name: "x\x00y"}
        with pytest.raises(InvalidInput) as raised:
            ledger.write_off(outlet="NBI-1", sku="AMOX-500", quantity=1, **fields)
        assert raised.value.field == name
        assert ledger.head_position() == head
        read_everything(ledger)


@pytest.mark.parametrize("field_name", ["outlet", "sku", "batch_id"])
def test_a_nul_byte_in_an_identifier_is_refused(open_store: Callable[[], Any],
                                                field_name: str) -> None:
    with open_store() as ledger:
        fields: dict[str, Any] = {"outlet": "NBI-1", "sku": "AMOX-500", "batch_id": "B1",
                                  field_name: "B\x00"}
        with pytest.raises(InvalidInput) as raised:
            ledger.receive(quantity=5, **fields)
        assert raised.value.field == field_name
        assert ledger.head_position() == 0


def test_a_time_before_year_one_in_utc_is_refused_and_every_read_still_works(
        open_store: Callable[[], Any]) -> None:
    """Before: accepted, then `history`, `audit verify` and rebuild failed for good on
    PostgreSQL (0001-01-01T00:00+14:00 is 1 BC in UTC)."""
    with open_store() as ledger:
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=5)
        head = ledger.head_position()
        with pytest.raises(InvalidInput) as raised:
            ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 1)],
                        occurred_at="0001-01-01T00:00+14:00")
        assert raised.value.field == "occurred_at"
        assert ledger.head_position() == head
        read_everything(ledger, times=(datetime(1970, 1, 1, tzinfo=UTC),))


def test_out_of_range_positions_and_waits_are_refused_by_the_python_api(
        open_store: Callable[[], Any]) -> None:
    """Before: SQLite raised OverflowError for a position above 2^63-1; PostgreSQL's
    catch-up tried to cut the positions up to it into ranges (MemoryError); a wait of NaN
    seconds never ended."""
    with open_store() as ledger:
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=5)
        app = ledger.application
        models = ReadModels(app)
        models.create()
        for position in (MAX_POSITION + 1, -1):
            with pytest.raises(InvalidInput) as raised:
                replay(app, "NBI-1", position=position)
            assert raised.value.field == "position"
            with pytest.raises(InvalidInput) as raised:
                models.wait_for(position, 1)
            assert raised.value.field == "position"
        for seconds in (math.nan, math.inf, -1.0):
            with pytest.raises(InvalidInput) as raised:
                models.wait_for(1, seconds)
            assert raised.value.field == "timeout"
        assert replay(app, "NBI-1", position=MAX_POSITION)["stock"][0]["on_hand"] == 5
        assert not models.wait_for(MAX_POSITION, 0.2)
        assert models.catch_up(until=MAX_POSITION) == 0  # it caught up to the head above
        assert min(models.positions().values()) == ledger.head_position()


def test_a_command_object_built_without_validation_is_validated_by_execute(
        open_store: Callable[[], Any]) -> None:
    """`execute` takes a command object; one made with `model_construct` skipped validation."""
    from ledger.app.commands import ReceiveStock

    with open_store() as ledger:
        unchecked = ReceiveStock.model_construct(outlet="NBI-1", sku="AMOX-500",
                                                 batch_id="B1", quantity=5, actor="a\x00")
        with pytest.raises(InvalidInput) as raised:
            ledger.execute(unchecked)
        assert raised.value.field == "actor"
        assert ledger.head_position() == 0
        checked = ReceiveStock(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=5)
        assert ledger.execute(checked).replayed is False
        read_everything(ledger)


def test_replay_by_business_time_takes_a_sale_stamped_before_its_batch_arrived(
        open_store: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A till whose clock is a moment behind the server's sells a batch received a moment
    before: in business time the sale comes first. Found by the property below: replay as of
    the sale's time raised KeyError on the batch (the CLI printed a traceback).

    The ledger now refuses such a sale (it decides against the shelf at the sale's time, and
    names that time); a store written before that rule holds it, so the history is written
    here as that code wrote it, allocating from every batch whatever its arrival."""
    with open_store() as ledger:
        till_clock = datetime.now(UTC) - timedelta(seconds=1)
        ledger.receive(outlet="NBI-1", sku="AMOX-500", batch_id="B1", quantity=5,
                       expires_on=today + timedelta(days=30))
        with pytest.raises(InsufficientStock, match=r"available 0 .* on the shelf at"):
            ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 2)],
                        occurred_at=till_clock)
        allocate = StockItem.allocate
        monkeypatch.setattr(StockItem, "allocate",
                            lambda item, quantity, policy, on_date, at=None, held=frozenset():
                            allocate(item, quantity, policy, on_date, None, held))
        ledger.sell(outlet="NBI-1", sale_id="S-1", lines=[("AMOX-500", 2)],
                    occurred_at=till_clock)
        monkeypatch.undo()
        then = replay(ledger.application, "NBI-1", as_of=till_clock, basis="business")
        assert then["stock"] == [{
            "sku": "AMOX-500", "on_hand": -2, "available": -2,
            "batches": [{"batch_id": "B1", "quantity": -2,
                         "expires_on": (today + timedelta(days=30)).isoformat()}]}]
        assert then["negative_batches"] == [
            {"sku": "AMOX-500", "batch_id": "B1", "quantity": -2}]
        now = replay(ledger.application, "NBI-1", as_of=datetime.now(UTC), basis="business")
        assert [(s["on_hand"], s["available"]) for s in now["stock"]] == [(3, 3)]
        assert now["negative_batches"] == []
        read_everything(ledger, times=(till_clock,))


# --------------------------------------------------------------------------- the property

NASTY = ("\x00", "\n", "\r", "\t", "\x1b[31m", "\x7f", "\x85", "\x9b", "\u2028", "\u2029",
         "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
         "\u2069", "\ud800", "\udfff", "\ufeff", "\u200b", "\u200d", "\ufffe", "\uffff",
         "\U0010ffff", "\U0001f469\u200d\u2695\ufe0f", " ", "\u00a0", "'", "\\", "%s", ":")

pieces = st.one_of(st.characters(exclude_categories=()), st.sampled_from(NASTY))
"""Any code point (surrogates and controls included), or one of the usual suspects."""
any_text = st.lists(pieces, max_size=10).map("".join)
plain = st.sampled_from(("NBI-1", "MSA-2", "AMOX-500", "B1", "S-1", "till-1", "Zoë"))
texts = st.one_of(any_text, plain, st.tuples(plain, any_text).map("".join))
"""Arbitrary text, often enough a usable name that commands meet each other's stock."""

offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=59),
                        max_value=timedelta(hours=23, minutes=59)).map(timezone)
any_time = st.datetimes(timezones=st.one_of(st.none(), st.timezones(), offsets))
recent_time = st.integers(0, 10 * 24 * 3600).map(
    lambda seconds: datetime.now(UTC) - timedelta(seconds=seconds))
times = st.one_of(recent_time, any_time, any_time.map(datetime.isoformat))
dates = st.one_of(st.dates(), st.integers(-30, 400).map(lambda days: today + timedelta(days)),
                  st.dates().map(date.isoformat))
quantities = st.one_of(st.integers(1, 20), st.integers(1, 5), st.integers())


@dataclass
class Recorded:
    """What the ledger accepted, to read it all back."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    sales: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """A few commands over a small pool of drawn names, so that later ones meet earlier ones."""
    pool = st.tuples(plain, st.lists(texts, max_size=1)).map(lambda t: [t[0], *t[1]])
    outlets, skus, batches, ids = draw(pool), draw(pool), draw(pool), draw(pool)
    pick = st.sampled_from

    def common() -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if draw(st.booleans()):
            fields["actor"] = draw(texts)
        if draw(st.booleans()):
            fields["occurred_at"] = draw(times)
        if draw(st.booleans()):
            fields["key"] = draw(texts)
        return fields

    ops: list[tuple[str, dict[str, Any]]] = []
    receipts = draw(st.integers(1, 3))
    for number in range(receipts + draw(st.integers(1, 9))):
        kind = "receive" if number < receipts else draw(pick((
            "receive", "sell", "sell", "refund", "count", "write_off", "transfer",
            "receive_transfer", "reorder", "policy", "expire")))
        outlet, sku = draw(pick(outlets)), draw(pick(skus))
        if kind == "receive":
            fields = {"outlet": outlet, "sku": sku, "batch_id": draw(pick(batches)),
                      "quantity": draw(quantities),
                      "expires_on": draw(st.one_of(st.none(), dates)),
                      "reference": draw(st.one_of(st.none(), texts))}
        elif kind == "sell":
            fields = {"outlet": outlet, "sale_id": draw(pick(ids)),
                      "lines": [(draw(pick(skus)), draw(quantities))]}
        elif kind == "refund":
            fields = {"sale_id": draw(pick(ids)), "refund_id": draw(texts),
                      "lines": [(sku, draw(quantities))], "write_off": draw(st.booleans())}
        elif kind == "count":
            fields = {"outlet": outlet, "sku": sku,
                      "counts": {draw(pick(batches)): draw(st.integers(0, 20))},
                      "whole_sku": draw(st.booleans()),
                      "count_id": draw(st.one_of(st.none(), texts))}
        elif kind == "write_off":
            fields = {"outlet": outlet, "sku": sku, "quantity": draw(quantities),
                      "reason": draw(texts), "reference": draw(st.one_of(st.none(), texts)),
                      "batch_id": draw(st.one_of(st.none(), pick(batches)))}
        elif kind == "transfer":
            fields = {"from_outlet": outlet, "to_outlet": draw(pick(outlets)), "sku": sku,
                      "quantity": draw(quantities), "transfer_id": draw(pick(ids)),
                      "in_transit": draw(st.booleans())}
        elif kind == "receive_transfer":
            fields = {"transfer_id": draw(pick(ids))}
        elif kind == "reorder":
            fields = {"outlet": outlet, "sku": sku,
                      "level": draw(st.one_of(st.none(), st.integers(0, 20)))}
        elif kind == "policy":
            fields = {"outlet": outlet, "allow_negative": draw(st.booleans())}
        else:
            fields = {"outlet": draw(st.one_of(st.none(), pick(outlets))),
                      "sku": draw(st.one_of(st.none(), pick(skus))),
                      "as_of": draw(st.one_of(st.none(), dates))}
        common_fields = common()
        if kind == "expire":
            common_fields.pop("key", None)
        ops.append((kind, {**fields, **common_fields}))
    return ops


METHODS = {"receive": "receive", "sell": "sell", "refund": "refund", "count": "count",
           "write_off": "write_off", "transfer": "transfer",
           "receive_transfer": "receive_transfer", "reorder": "set_reorder_level",
           "policy": "set_outlet_policy", "expire": "expire"}


def apply(ledger: Ledger, ops: list[tuple[str, dict[str, Any]]]) -> Recorded:
    recorded = Recorded()
    for kind, fields in ops:
        try:
            result = getattr(ledger, METHODS[kind])(**fields)
        except (InvalidInput, Refusal):
            recorded.refused += 1
            continue
        recorded.accepted.append({"kind": kind, **fields})
        if kind == "sell" and not result.replayed:
            recorded.sales.append(fields["sale_id"])
        for name in ("reference", "sale_id", "refund_id", "transfer_id"):
            if isinstance(fields.get(name), str):
                recorded.references.append(fields[name])
        if isinstance(fields.get("occurred_at"), datetime):
            recorded.times.append(fields["occurred_at"])
    return recorded


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside an event's value: payload models, lists and dicts included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, BaseModel):
        yield from strings_in(value.model_dump())
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def check_what_was_recorded(ledger: Ledger) -> None:
    """Every string recorded obeys the documented rules (so every store can hold it)."""
    app = ledger.application
    for notification in app.recorder.select_notifications(1, 100_000):
        event = app.mapper.to_domain_event(notification)
        for text in strings_in(list(vars(event).values())):
            assert unsafe_character(text) is None, (type(event).__name__, text)
        if isinstance(event, events.StockMovement):
            assert event.occurred_at.year >= 1970
            assert event.occurred_at <= datetime.now(UTC) + timedelta(minutes=5)


def run_property(ledger: Ledger, ops: list[tuple[str, dict[str, Any]]]) -> None:
    recorded = apply(ledger, ops)
    check_what_was_recorded(ledger)
    read_everything(ledger, sales=tuple(dict.fromkeys(recorded.sales)),
                    references=tuple(dict.fromkeys(recorded.references))[:5],
                    times=tuple(recorded.times[:3]))


PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])


@PROPERTY_SETTINGS
@given(ops=operations())
def test_whatever_is_accepted_reads_back_everywhere_sqlite(
        ops: list[tuple[str, dict[str, Any]]]) -> None:
    with sqlite_store() as ledger:
        run_property(ledger, ops)


@pytest.mark.postgres
@PROPERTY_SETTINGS
@given(ops=operations())
def test_whatever_is_accepted_reads_back_everywhere_postgres(
        postgres_url: str, ops: list[tuple[str, dict[str, Any]]]) -> None:
    with postgres_store(postgres_url) as ledger:
        run_property(ledger, ops)
