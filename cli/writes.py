"""Commands that record: setting up the store and outlets, and every stock movement.

Quantities, dates and costs are passed to the ledger as the user typed them: the ledger parses
them, and a value it cannot use is refused with the name of its field (exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import click

from cli.context import EXIT_INVALID, LedgerContext, emit, fail, pass_context, run, set_up_store

REPEAT_NOTE = " (repeat, nothing new recorded)"

F = TypeVar("F", bound=Callable[..., Any])


def parse_lines(values: tuple[str, ...], option: str = "line") -> list[dict[str, str]]:
    """`SKU=QUANTITY` options as sale or refund lines (the quantity still text)."""
    lines = []
    for value in values:
        sku, sep, quantity = value.rpartition("=")
        if not sep or not sku:
            fail(EXIT_INVALID, f"invalid {option}: expected SKU=QUANTITY, got {value!r}")
        lines.append({"sku": sku, "quantity": quantity})
    return lines


def common_fields(actor: str | None, at: str | None, key: str | None) -> dict[str, Any]:
    """The actor (default $LEDGER_ACTOR, else cli:$USER), business time and idempotency key."""
    fields: dict[str, Any] = {"actor": actor or os.environ.get("LEDGER_ACTOR")
                              or f"cli:{os.environ.get('USER', 'unknown')}"}
    if at is not None:
        fields["occurred_at"] = at
    if key is not None:
        fields["key"] = key
    return fields


def movement_options(function: F) -> F:
    """--key, --at, --actor and --json, shared by every command that records a movement."""
    function = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(
        function)
    function = click.option("--actor", help="Who or what caused it (default: cli:$USER).")(
        function)
    function = click.option("--at", "at", help="Business time (ISO 8601); default now.")(
        function)
    function = click.option("--key", help="Idempotency key (default: the command's own id).")(
        function)
    return function


# --------------------------------------------------------------------------- the store


@click.command()
@click.pass_obj
def init(obj: LedgerContext) -> None:
    """Create the event store and read-model tables (safe to run again)."""
    url = run(lambda: set_up_store(obj.url))
    click.echo(f"ledger: store ready at {url}")


def describe_settings(settings: Any) -> str:
    """An outlet's settings in a line: `outlet X: fifo, allows negative stock, sales up to
    72h late`."""
    window = settings.late_sales_window
    return (f"outlet {settings.outlet}: {settings.allocation_policy}, "
            f"{'allows' if settings.allow_negative else 'refuses'} negative stock, "
            + (f"sales dated up to {window} back" if window else "sales of any date"))


@click.command("outlet")
@click.option("--outlet", required=True)
@click.option("--policy", "allocation_policy", type=click.Choice(["fefo", "fifo"]),
              help="Allocation: first expiry first out, or first in first out.")
@click.option("--allow-negative/--no-allow-negative", default=None,
              help="Whether a sale short of stock is recorded with its shortfall.")
@click.option("--late-sales", "late_sales_window", metavar="DURATION",
              help="How far back a sale may be dated: 72h, 3d, 90m, or none (any date).")
@click.option("--actor")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def outlet_policy(obj: LedgerContext, outlet: str, allocation_policy: str | None,
                  allow_negative: bool | None, late_sales_window: str | None,
                  actor: str | None, as_json: bool) -> None:
    """Open an outlet or change its settings; with no setting given, show them.

    A setting not given keeps its value (a new outlet's: fefo, refuses negative stock,
    sales of any date)."""
    if allocation_policy is None and allow_negative is None and late_sales_window is None:
        settings = run(lambda: obj.ledger.outlet_settings(outlet))
        emit(settings, as_json, describe_settings(settings))
        return
    policy: Literal["fefo", "fifo"] | None = (
        None if allocation_policy is None else "fifo" if allocation_policy == "fifo" else "fefo")
    result = run(lambda: obj.ledger.set_outlet_policy(
        outlet=outlet, allocation_policy=policy, allow_negative=allow_negative,
        late_sales_window=late_sales_window, **common_fields(actor, None, None)))
    emit(result, as_json, describe_settings(result))


@click.command("reorder-level")
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--level", required=True, help="A quantity, or 'none' to clear it.")
@click.option("--actor")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def reorder_level(obj: LedgerContext, outlet: str, sku: str, level: str,
                  actor: str | None, as_json: bool) -> None:
    """Set the level at or below which a stock item shows as low."""
    fields: dict[str, Any] = {"level": None if level.lower() == "none" else level}
    result = run(lambda: obj.ledger.set_reorder_level(
        outlet=outlet, sku=sku, **fields, **common_fields(actor, None, None)))
    emit(result, as_json, f"reorder level of {sku} at {outlet}: {result.level}")


# --------------------------------------------------------------------------- movements


@click.command()
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--batch", "batch_id", required=True)
@click.option("--qty", "quantity", required=True)
@click.option("--expires", "expires_on", help="Expiry date, YYYY-MM-DD.")
@click.option("--cost", "unit_cost", help="Unit cost, a decimal.")
@click.option("--reference", help="Delivery note or purchase order.")
@movement_options
@pass_context
def receive(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
            as_json: bool, **fields: str | None) -> None:
    """Record a batch arriving at an outlet."""
    given: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    result = run(lambda: obj.ledger.receive(**given, **common_fields(actor, at, key)))
    emit(result, as_json, f"received {result.quantity} of {result.sku} batch {result.batch_id} "
                          f"at {result.outlet}: on hand {result.stock.on_hand}"
                          + REPEAT_NOTE * result.replayed)


@click.command()
@click.option("--outlet", required=True)
@click.option("--sale", "sale_id", required=True)
@click.option("--line", "lines", multiple=True, required=True, metavar="SKU=N")
@movement_options
@pass_context
def sell(obj: LedgerContext, outlet: str, sale_id: str, lines: tuple[str, ...],
         key: str | None, at: str | None, actor: str | None, as_json: bool) -> None:
    """Record a sale; all lines or none."""
    parsed = parse_lines(lines)
    result = run(lambda: obj.ledger.sell(outlet=outlet, sale_id=sale_id, lines=parsed,
                                         **common_fields(actor, at, key)))
    described = ", ".join(
        f"{line.sku} x{line.quantity}"
        + (" from " + "+".join(f"{t.batch_id}:{t.quantity}" for t in line.takes)
           if line.takes else "")
        + (f" (+{line.unallocated} unallocated)" if line.unallocated and line.takes else
           f" ({line.unallocated} unallocated)" if line.unallocated else "")
        for line in result.lines)
    emit(result, as_json, f"sale {result.sale_id}: {described}"
                          + REPEAT_NOTE * result.replayed)


@click.command()
@click.option("--sale", "sale_id", required=True)
@click.option("--refund", "refund_id", required=True)
@click.option("--line", "lines", multiple=True, required=True, metavar="SKU=N")
@click.option("--write-off", is_flag=True, help="Write the returned units off, not restock.")
@movement_options
@pass_context
def refund(obj: LedgerContext, sale_id: str, refund_id: str, lines: tuple[str, ...],
           write_off: bool, key: str | None, at: str | None, actor: str | None,
           as_json: bool) -> None:
    """Return units of a sale to the batches they came from."""
    parsed = parse_lines(lines)
    result = run(lambda: obj.ledger.refund(sale_id=sale_id, refund_id=refund_id, lines=parsed,
                                           write_off=write_off,
                                           **common_fields(actor, at, key)))
    described = ", ".join(f"{line.sku} x{line.quantity}" for line in result.lines)
    emit(result, as_json, f"refund {result.refund_id} of sale {result.sale_id}: {described}"
                          + REPEAT_NOTE * result.replayed)


def parse_pairs(values: tuple[str, ...], option: str, what: str) -> dict[str, str]:
    """`NAME=VALUE` options as a mapping (the value still text); a name given twice is
    refused."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, given = value.rpartition("=")
        if not sep or not name:
            fail(EXIT_INVALID, f"invalid {option}: expected BATCH={what}, got {value!r}")
        if name in pairs:
            fail(EXIT_INVALID, f"invalid {option}: batch {name} given twice")
        pairs[name] = given
    return pairs


@click.command()
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--batch", "batches", required=True, multiple=True, metavar="BATCH[=N]",
              help="A batch and what was counted: BATCH=N, repeatable (or one BATCH with "
                   "--counted N).")
@click.option("--counted", help="The counted quantity of the one --batch given without =N.")
@click.option("--whole-sku", is_flag=True,
              help="The count covers the whole SKU: every batch not named counts as zero.")
@click.option("--found", "found", multiple=True, metavar="BATCH",
              help="A counted batch the ledger did not know here: record it as found stock.")
@click.option("--found-expires", "found_expires", multiple=True, metavar="BATCH=DATE",
              help="A found batch's expiry date (YYYY-MM-DD).")
@click.option("--found-cost", "found_cost", multiple=True, metavar="BATCH=COST",
              help="A found batch's unit cost.")
@click.option("--count-id", help="The stock take's id (makes the default key retry-safe).")
@movement_options
@pass_context
def count(obj: LedgerContext, outlet: str, sku: str, batches: tuple[str, ...],
          counted: str | None, whole_sku: bool, found: tuple[str, ...],
          found_expires: tuple[str, ...], found_cost: tuple[str, ...], count_id: str | None,
          key: str | None, at: str | None, actor: str | None, as_json: bool) -> None:
    """Record a stock take of a SKU's batches; each variance is recorded with it.

    `--whole-sku` counts every batch not named as zero; `--found B` records a counted batch
    the ledger did not know here as found stock (with --found-expires/--found-cost)."""
    if counted is not None:
        if len(batches) != 1 or "=" in batches[0]:
            fail(EXIT_INVALID, "invalid counted: give --counted with one --batch BATCH, or "
                               "--batch BATCH=N for each batch")
        counts: dict[str, str] = {batches[0]: counted}
    else:
        counts = parse_pairs(batches, "batch", "N")
    expiries = parse_pairs(found_expires, "found-expires", "DATE")
    costs = parse_pairs(found_cost, "found-cost", "COST")
    for name in [*expiries, *costs]:
        if name not in found:
            fail(EXIT_INVALID, f"invalid found: batch {name} has an expiry or cost but is not "
                               "declared --found")
    fields: dict[str, Any] = {"outlet": outlet, "sku": sku, "counts": counts,
                              "whole_sku": whole_sku}
    if found:
        fields["found"] = {name: {k: v for k, v in (("expires_on", expiries.get(name)),
                                                     ("unit_cost", costs.get(name)))
                                  if v is not None} for name in found}
    if count_id:
        fields["count_id"] = count_id
    result = run(lambda: obj.ledger.count(**fields, **common_fields(actor, at, key)))
    described = ", ".join(f"{x.batch_id}: expected {x.expected}, counted {x.counted}, "
                          f"variance {x.variance:+d}" for x in result.counts)
    found_text = "".join(f"; found {b.batch_id} x{b.quantity}" for b in result.found)
    emit(result, as_json, f"count at {outlet}/{sku}: {described}{found_text}"
                          + REPEAT_NOTE * result.replayed)


def _scope(outlet: str | None) -> str:
    return "everywhere" if outlet is None else f"at {outlet}"


@click.command()
@click.option("--sku", required=True)
@click.option("--batch", "batch_id", required=True)
@click.option("--outlet", help="Hold it at this outlet only (default: everywhere).")
@click.option("--reason", required=True, help="Recall notice, quality check, damage...")
@movement_options
@pass_context
def hold(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
         as_json: bool, **fields: str | None) -> None:
    """Make a lot unsellable everywhere (or at one outlet) until released.

    Held stock stays on hand, is not available, and no sale, transfer or write-off without a
    named batch takes it; a hold everywhere also covers stock that arrives later."""
    given: dict[str, Any] = fields
    result = run(lambda: obj.ledger.hold(**given, **common_fields(actor, at, key)))
    emit(result, as_json, f"held {result.sku} batch {result.batch_id} {_scope(result.outlet)}: "
                          f"{result.reason}" + REPEAT_NOTE * result.replayed)


@click.command()
@click.option("--sku", required=True)
@click.option("--batch", "batch_id", required=True)
@click.option("--outlet", help="The outlet it was held at (default: held everywhere).")
@click.option("--reason", required=True)
@movement_options
@pass_context
def release(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
            as_json: bool, **fields: str | None) -> None:
    """End a lot's hold, in the scope it was held in."""
    given: dict[str, Any] = fields
    result = run(lambda: obj.ledger.release(**given, **common_fields(actor, at, key)))
    emit(result, as_json, f"released {result.sku} batch {result.batch_id} "
                          f"{_scope(result.outlet)}: {result.reason}"
                          + REPEAT_NOTE * result.replayed)


@click.command("correct-receipt")
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--receipt", required=True,
              help="The receipt's reference (delivery note, else batch id), or REF@VERSION.")
@click.option("--quantity", help="The quantity it should have said.")
@click.option("--expires-on", "expires_on", help="The expiry date it should have said.")
@click.option("--unit-cost", "unit_cost", help="The unit cost it should have said.")
@click.option("--batch", "batch_id", help="The batch id it should have said.")
@click.option("--reason", required=True)
@movement_options
@pass_context
def correct_receipt(obj: LedgerContext, /, key: str | None, at: str | None,
                    actor: str | None, as_json: bool, **fields: str | None) -> None:
    """Correct a receipt typed wrong by a new movement naming it; the receipt stays in the
    history, and a correction never takes away units already sold."""
    given: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    result = run(lambda: obj.ledger.correct_receipt(**given, **common_fields(actor, at, key)))
    changed = [f"{name} {before} -> {after}" for name, (before, after) in (
        ("quantity", result.quantity), ("expiry", result.expires_on),
        ("unit cost", result.unit_cost)) if before != after]
    if result.corrected_batch_id:
        changed.append(f"batch {result.batch_id} -> {result.corrected_batch_id}")
    emit(result, as_json, f"corrected receipt {result.receipt} of {result.sku} at "
                          f"{result.outlet}: {', '.join(changed)}; on hand "
                          f"{result.stock.on_hand}" + REPEAT_NOTE * result.replayed)


@click.command("write-off")
@click.option("--outlet", required=True)
@click.option("--sku", required=True)
@click.option("--qty", "quantity", required=True)
@click.option("--batch", "batch_id")
@click.option("--reason", required=True)
@movement_options
@pass_context
def write_off(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
              as_json: bool, **fields: str | None) -> None:
    """Take stock off the shelf for a reason (damage, theft, samples)."""
    given: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    result = run(lambda: obj.ledger.write_off(**given, **common_fields(actor, at, key)))
    emit(result, as_json, f"wrote off {given['quantity']} of {result.sku} at {result.outlet}: "
                          + "+".join(f"{t.batch_id}:{t.quantity}" for t in result.takes))


@click.command()
@click.option("--from", "from_outlet", required=True)
@click.option("--to", "to_outlet", required=True)
@click.option("--sku", required=True)
@click.option("--qty", "quantity", required=True)
@click.option("--transfer", "transfer_id", required=True)
@click.option("--in-transit", is_flag=True,
              help="Record the dispatch only; `transfer-receive` records the arrival.")
@movement_options
@pass_context
def transfer(obj: LedgerContext, /, key: str | None, at: str | None, actor: str | None,
             as_json: bool, **fields: str | bool) -> None:
    """Move stock between outlets, keeping batch identity and expiry."""
    given: dict[str, Any] = fields
    result = run(lambda: obj.ledger.transfer(**given, **common_fields(actor, at, key)))
    emit(result, as_json, f"transfer {result.transfer_id}: {result.sku} "
                          f"{result.from_outlet} -> {result.to_outlet} "
                          + ("received" if result.received else "in transit")
                          + REPEAT_NOTE * result.replayed)


@click.command("transfer-receive")
@click.option("--transfer", "transfer_id", required=True)
@movement_options
@pass_context
def transfer_receive(obj: LedgerContext, transfer_id: str, key: str | None, at: str | None,
                     actor: str | None, as_json: bool) -> None:
    """Record the arrival of a transfer dispatched with --in-transit."""
    result = run(lambda: obj.ledger.receive_transfer(transfer_id=transfer_id,
                                                     **common_fields(actor, at, key)))
    emit(result, as_json, f"transfer {result.transfer_id} received at {result.to_outlet}"
                          + REPEAT_NOTE * result.replayed)


@click.command()
@click.option("--outlet")
@click.option("--sku")
@click.option("--as-of", "as_of", help="Date, YYYY-MM-DD (default today).")
@click.option("--actor")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def expire(obj: LedgerContext, outlet: str | None, sku: str | None, as_of: str | None,
           actor: str | None, as_json: bool) -> None:
    """Write off every batch whose expiry date has come."""
    fields: dict[str, Any] = {"outlet": outlet, "sku": sku, **common_fields(actor, None, None)}
    if as_of is not None:
        fields["as_of"] = as_of
    result = run(lambda: obj.ledger.expire(**fields))
    emit(result, as_json, f"expired {len(result.expired)} batch(es) as of {result.as_of}: "
                          + ", ".join(f"{e.outlet}/{e.sku}/{e.batch_id} x{e.quantity}"
                                      for e in result.expired))
