"""The aggregates one attempt at a command loads or creates, to save or forget together; and
the unit of work of a group of commands decided together (`GroupUnitOfWork`), one step each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from uuid import UUID
from weakref import WeakKeyDictionary

from eventsourcing.domain import Aggregate, AggregateCreated, CanMutateAggregate

from ledger.domain import identity
from ledger.domain.errors import UnknownOutlet, UnknownStockItem
from ledger.domain.hold_register import HoldRegister
from ledger.domain.outlet import Outlet
from ledger.domain.sale import Sale
from ledger.domain.stock_item import StockItem
from ledger.store.application import LedgerApplication

AggregateT = TypeVar("AggregateT", bound=Aggregate)

CLONE_BATCHES_AT_MOST = 64
"""Stock items with more batches are decided in place: copying them costs more than deciding."""

ABSENT_AT_MOST = 65_536
"""How many streams known to have no events (SKUs never held) a process remembers."""
_ABSENT: WeakKeyDictionary[LedgerApplication, set[UUID]] = WeakKeyDictionary()
"""Per store: hold registers this process found empty. A decision that relies on one being
empty checks it at append, as it checks what it read (`read_only`), so remembering them costs
a sale of a SKU never held no query, and is never wrong for longer than one attempt."""


def decision_copy(aggregate: Aggregate) -> Aggregate:
    """A copy of a cached aggregate to decide on, leaving the cached one untouched."""
    if isinstance(aggregate, (StockItem, Sale)):
        return aggregate.clone()
    # Outlets, transfers and command records hold only immutable values.
    other = object.__new__(type(aggregate))
    other.__dict__.update(aggregate.__dict__)
    other.__dict__["_pending_events"] = []
    return other


class UnitOfWork:
    """What one attempt read and changed.

    Small aggregates are decided on copies, so that a lost race leaves the cached state clean
    and a retry only has to fast-forward it; a stock item with many batches is decided in
    place and is evicted if its change is not recorded.
    """

    def __init__(self, app: LedgerApplication, *, fast_forward: bool) -> None:
        self.app = app
        self.fast_forward = fast_forward
        self.aggregates: dict[UUID, Aggregate] = {}
        self.missing: set[UUID] = set()
        self.saving: set[UUID] = set()
        self.copies: set[UUID] = set()
        self.created: list[AggregateCreated] = []
        self.unique_references: list[tuple[UUID, str]] = []
        self.relied_absent: set[UUID] = set()
        """Streams the decision relied on having no events (a SKU's hold register)."""

    def prefetch(self, aggregate_ids: Sequence[UUID]) -> None:
        """Bring several aggregates up to date in one round trip, before deciding."""
        wanted = [i for i in aggregate_ids if i not in self.aggregates and i not in self.missing]
        loaded = self.app.load_many(wanted, fast_forward=self.fast_forward)
        for aggregate_id, aggregate in loaded.items():
            if not isinstance(aggregate, StockItem) or (
                    len(aggregate.batches) <= CLONE_BATCHES_AT_MOST):
                aggregate = decision_copy(aggregate)
                self.copies.add(aggregate_id)
            self.aggregates[aggregate_id] = aggregate
        self.missing.update(i for i in wanted if i not in loaded)

    def get(self, aggregate_id: UUID, kind: type[AggregateT]) -> AggregateT | None:
        """The aggregate of a stream, or None if the stream has no events."""
        aggregate = self.aggregates.get(aggregate_id)
        if aggregate is None:
            self.prefetch([aggregate_id])
            found = self.aggregates.get(aggregate_id)
            if found is None:
                return None
            aggregate = found
        if not isinstance(aggregate, kind):
            raise TypeError(f"stream {aggregate_id} holds a {type(aggregate).__name__}")
        return aggregate

    def add(self, aggregate: AggregateT, unique_reference: str | None = None) -> AggregateT:
        """A new aggregate this decision created; `unique_reference` names it in a refusal
        if a concurrent writer created the same stream first."""
        self.aggregates[aggregate.id] = aggregate
        self.missing.discard(aggregate.id)
        if unique_reference is not None:
            self.unique_references.append((aggregate.id, unique_reference))
        return aggregate

    def add_created(self, event: AggregateCreated, unique_reference: str) -> None:
        """A new stream this decision starts and no later step of it reads (a sale's, say):
        only its first event, without the aggregate it would build."""
        self.created.append(event)
        self.unique_references.append((event.originator_id, unique_reference))

    def outlet(self, outlet: str) -> Outlet:
        found = self.get(identity.outlet_id(outlet), Outlet)
        if found is None:
            raise UnknownOutlet(outlet)
        return found

    def outlet_or_open(self, outlet: str, actor: str) -> Outlet:
        found = self.get(identity.outlet_id(outlet), Outlet)
        return found if found is not None else self.add(Outlet.open(outlet, actor))

    def stock_item(self, outlet: str, sku: str) -> StockItem:
        found = self.get(identity.stock_item_id(outlet, sku), StockItem)
        if found is None:
            raise UnknownStockItem(outlet, sku)
        return found

    def stock_item_or_open(self, outlet: str, sku: str) -> StockItem:
        found = self.get(identity.stock_item_id(outlet, sku), StockItem)
        return found if found is not None else self.add(StockItem.open(outlet, sku))

    def hold_register_ids(self, skus: Sequence[str]) -> list[UUID]:
        """The hold registers of `skus` worth prefetching: not those this process knows to
        be empty, unless this attempt decides on fresh state."""
        absent = _ABSENT.get(self.app, set())
        ids = [identity.hold_register_id(sku) for sku in skus]
        return ids if self.fast_forward else [i for i in ids if i not in absent]

    def holds(self, sku: str) -> HoldRegister | None:
        """The SKU's hold register, or None if no lot of it was ever held. A decision made on
        None is checked at append: it fails as a lost race if a hold was recorded since."""
        register_id = identity.hold_register_id(sku)
        if register_id in self.relied_absent and register_id not in self.aggregates:
            return None
        absent = _ABSENT.setdefault(self.app, set())
        if (register_id not in self.aggregates and not self.fast_forward
                and register_id in absent and not self.app.cached([register_id])):
            self.relied_absent.add(register_id)
            return None
        found = self.get(register_id, HoldRegister)
        if found is None:
            if len(absent) >= ABSENT_AT_MOST:
                absent.clear()
            absent.add(register_id)
            self.relied_absent.add(register_id)
        else:
            absent.discard(register_id)
        return found

    def hold_register_or_open(self, sku: str) -> HoldRegister:
        found = self.holds(sku)
        if found is not None:
            return found
        register_id = identity.hold_register_id(sku)
        self.relied_absent.discard(register_id)
        _ABSENT.get(self.app, set()).discard(register_id)
        return self.add(HoldRegister.open(sku))

    def changed(self) -> list[Aggregate]:
        """The aggregates to save. Saving takes their pending events, so remember them: if the
        append then fails, these are the cached objects holding unrecorded changes."""
        changed = [a for a in self.aggregates.values() if a.pending_events]
        self.saving.update(a.id for a in changed)
        return changed

    def read_only(self) -> list[tuple[UUID, int]]:
        """Streams the decision read but does not write, at the versions it saw."""
        return [(a.id, a.version) for a in self.aggregates.values()
                if not a.pending_events and a.id not in self.saving] + [
            (stream, 0) for stream in self.relied_absent if stream not in self.aggregates]

    def forget(self, *, everything: bool = False) -> None:
        """Evict the aggregates this attempt changed: their cached state holds unrecorded
        changes. After an unexpected error, evict every loaded one: it may be half-changed."""
        for aggregate_id, aggregate in self.aggregates.items():
            if aggregate_id in self.copies:
                continue  # the cached original was never touched
            if everything or aggregate.pending_events or aggregate_id in self.saving:
                self.app.evict(aggregate_id)

    def recorded(self) -> None:
        """The changes are recorded: the copies that were saved become the cached state."""
        for aggregate_id in self.saving & self.copies:
            self.app.cache(self.aggregates[aggregate_id])

    def recorded_reference(self) -> tuple[str, object] | None:
        """A sale or transfer id this attempt would create that is already recorded, with
        the aggregate recorded under it."""
        for aggregate_id, reference in self.unique_references:
            existing = self.app.load(aggregate_id)
            if existing is not None:
                return reference, existing
        return None


class NotInThisGroup(Exception):
    """A step read a stream that an earlier step of its group starts with an event alone (a
    sale's): its decision must wait for the group to be recorded."""


class StartedInThisGroup(Exception):
    """A step starts a stream (a sale, a transfer) that an earlier step of its group starts
    already: the group would append it twice. It is decided once the group is recorded,
    and refused then exactly as a command alone would be."""


@dataclass
class StepEvents:
    """What one accepted step of a group appends, in order: the events of the aggregates it
    changed, then the first events of the streams it starts."""

    events: list[CanMutateAggregate[UUID]] = field(default_factory=list)
    unique_references: list[tuple[UUID, str]] = field(default_factory=list)


class GroupUnitOfWork(UnitOfWork):
    """The aggregates of several commands decided one after another, to append together.

    Each command is decided in its own `step`, on copies of the group's state as the commands
    before it left it; `merge` makes an accepted step's copies the group's state. A refused
    step is dropped, so it leaves the state as it found it, whatever it had changed: a sale of
    many lines is all or nothing within the group too. The group itself decides nothing, so
    it takes cached aggregates as they are (its steps copy them).
    """

    def __init__(self, app: LedgerApplication, *, fast_forward: bool) -> None:
        super().__init__(app, fast_forward=fast_forward)
        self.steps: list[StepEvents] = []
        self.started: set[UUID] = set()
        """Streams an accepted step starts (their first event is pending in the group)."""
        self.started_by_event: set[UUID] = set()
        """Of those, the streams started by an event alone, with no aggregate to read."""

    def prefetch(self, aggregate_ids: Sequence[UUID]) -> None:
        wanted = [i for i in aggregate_ids if i not in self.aggregates and i not in self.missing]
        if not wanted:
            return
        loaded = self.app.load_many(wanted, fast_forward=self.fast_forward)
        self.aggregates.update(loaded)
        self.missing.update(i for i in wanted if i not in loaded)

    def step(self) -> GroupStep:
        """The unit of work of the group's next command."""
        return GroupStep(self)

    def merge(self, step: GroupStep) -> StepEvents:
        """Take an accepted step's changes into the group's state; return what it appends.

        Raises `StartedInThisGroup` instead if the step starts a stream (a sale, a transfer)
        that an earlier step of the group starts already, changing nothing."""
        for aggregate_id, _ in step.unique_references:
            if aggregate_id in self.started:
                raise StartedInThisGroup(aggregate_id)
        appended = StepEvents(unique_references=list(step.unique_references))
        for aggregate_id, aggregate in step.aggregates.items():
            own = aggregate.pending_events
            if not own:
                continue  # read only: the group's copy stands
            appended.events.extend(own)
            before = self.aggregates.get(aggregate_id)
            if before is not None and aggregate_id not in step.new:
                # The step's copy carries the group's pending events on, then its own.
                aggregate.__dict__["_pending_events"] = [*before.pending_events, *own]
                # Its cached original (if it came from the cache) is untouched.
                self.copies.add(aggregate_id)
            else:
                self.started.add(aggregate_id)
            self.aggregates[aggregate_id] = aggregate
            self.missing.discard(aggregate_id)
        for event in step.created:
            appended.events.append(event)
            self.started.add(event.originator_id)
            self.started_by_event.add(event.originator_id)
        self.unique_references.extend(step.unique_references)
        # What the step relied on having no events (a SKU's hold register) is checked with
        # the group's append, as what it read is.
        self.relied_absent.update(step.relied_absent)
        self.steps.append(appended)
        return appended


class GroupStep(UnitOfWork):
    """One command's unit of work in a group: it decides on copies of the group's aggregates
    (every one, however many batches: the group's state must outlive a refusal)."""

    def __init__(self, group: GroupUnitOfWork) -> None:
        super().__init__(group.app, fast_forward=group.fast_forward)
        self.group = group
        self.new: set[UUID] = set()
        """Aggregates this step created (not copies of the group's)."""

    def prefetch(self, aggregate_ids: Sequence[UUID]) -> None:
        wanted = [i for i in aggregate_ids if i not in self.aggregates and i not in self.missing]
        if not wanted:
            return
        if any(i in self.group.started_by_event for i in wanted):
            raise NotInThisGroup
        self.group.prefetch(wanted)
        for aggregate_id in wanted:
            found = self.group.aggregates.get(aggregate_id)
            if found is None:
                self.missing.add(aggregate_id)
            else:
                self.aggregates[aggregate_id] = decision_copy(found)

    def add(self, aggregate: AggregateT, unique_reference: str | None = None) -> AggregateT:
        self.new.add(aggregate.id)
        return super().add(aggregate, unique_reference)
