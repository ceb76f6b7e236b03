"""`ledger audit`: replay, verify, export and trace, from the events alone."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import click

from cli.bounds import POSITION, position_text
from cli.context import EXIT_INVALID, LedgerContext, emit, fail, moment_option, pass_context, run
from cli.display import printable, shown
from ledger.app import audit as ledger_audit
from ledger.app import checkpoint as checkpoints
from ledger.app.commands import MAX_POSITION
from ledger.app.snapshot_audit import verify_snapshots
from ledger.app.valuation import COST_COLUMNS, conservation_findings, export_with_costs
from ledger.domain.movements import JOURNAL_COLUMNS
from ledger.store.application import LedgerApplication
from ledger.store.hash_chain import select_chained
from projections.runner import ReadModels
from projections.verify import verify_read_models

EXIT_MISMATCH = 1
"""`audit verify` found the store or a read model not as the events say (report printed)."""


def _cell(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


@click.group("audit")
def audit_group() -> None:
    """Replay history, verify the store and read models, export and trace."""


@audit_group.command()
@click.option("--as-of", "as_of", help="A moment (ISO 8601); see --basis.")
@click.option("--position", type=POSITION, help="An event position.")
@click.option("--basis", type=click.Choice(["recorded", "business"]), default="recorded",
              show_default=True,
              help="With --as-of: what had been recorded by then, or what had happened "
                   "by then in business time (late till submissions included).")
@click.option("--outlet", required=True)
@click.option("--sku")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def replay(obj: LedgerContext, as_of: str | None, position: int | None, basis: str,
           outlet: str, sku: str | None, as_json: bool) -> None:
    """Stock of an outlet as it stood at a moment or position, replayed from events."""
    if (as_of is None) == (position is None):
        fail(EXIT_INVALID, "invalid as-of: give exactly one of --as-of and --position")
    moment = moment_option("as-of", as_of)
    report = run(lambda: ledger_audit.replay(
        obj.ledger.application, outlet, sku, position=position, as_of=moment,
        basis="business" if basis == "business" else "recorded"))
    if report["unreadable_passed_over"]:
        click.echo("ledger: warning: passed over events that cannot be read, on streams not "
                   f"of {outlet}'s stock items as far as the events before them say: positions "
                   + ", ".join(map(str, report["unreadable_passed_over"][:10])), err=True)
    lines = [f"{s['sku']:<20} on hand {s['on_hand']:>8}  available {s['available']:>8}  "
             + ", ".join(f"{printable(b['batch_id'])}:{b['quantity']}" for b in s["batches"])
             for s in map(shown, report["stock"])]
    if report["negative_batches"]:
        lines.append("below zero then (more had left than had arrived by then): " + ", ".join(
            f"{printable(b['sku'])}/{printable(b['batch_id'])} {b['quantity']}"
            for b in report["negative_batches"]))
    emit(report, as_json, "\n".join(lines) or f"no stock at {outlet} then")


@audit_group.command()
@click.option("--expect-head", metavar="POSITION:HASH",
              help="A head an auditor recorded earlier; fail unless the chain still "
                   "passes through it.")
@click.option("--checkpoint", "checkpoint_in", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A signed checkpoint written earlier by --checkpoint-out; fail unless "
                   "nothing at or before its position changed. Needs --key.")
@click.option("--checkpoint-out", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="If verification passes, write the sealed head as a checkpoint signed "
                   "with --key (HMAC-SHA256); keep it off the database.")
@click.option("--key", "key_file", metavar="KEYFILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The checkpoint key (`ledger audit keygen`), held off the database.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def verify(obj: LedgerContext, expect_head: str | None, checkpoint_in: Path | None,
           checkpoint_out: Path | None, key_file: Path | None, as_json: bool) -> None:
    """Check each event's digest, the hash chain, each stream's versions, that every event
    can be read, every snapshot against its stream's events, and recompute every read
    model."""
    if (checkpoint_in or checkpoint_out) and key_file is None:
        fail(EXIT_INVALID, "invalid key: --checkpoint and --checkpoint-out need --key")
    key = _key(key_file) if key_file is not None else b""
    signed = None
    untrusted: list[ledger_audit.Finding] = []
    if checkpoint_in is not None:
        try:
            signed = checkpoints.read_checkpoint(checkpoint_in, key)
        except checkpoints.CheckpointError as error:
            # A checkpoint that cannot be trusted proves nothing: a finding (exit 1), not a
            # usage error, which a forger would like it to be taken for.
            untrusted = [ledger_audit.Finding("checkpoint", None, str(error))]
    if expect_head:
        _anchor_position(expect_head)  # malformed: exit 2 before any work
    app = obj.ledger.application
    verified = run(lambda: verify_store(app, expect_head=expect_head, checkpoint=signed))
    chain = verified.chain
    findings = verified.findings = untrusted + verified.findings
    report = verify_report(verified)
    summary = (f"verified {chain.rows} events and {verified.snapshots} snapshots; head "
               f"{chain.head_position}:{chain.head_hash} (record it to detect later "
               "truncation)")
    notes = [] if chain.sealed_here else [
        "note: this role may not seal: checked the chain as sealed so far, and the events "
        "after it by their digests (they are sealed by `projections run`)"]
    if not verified.read_models_checked:
        notes.append("note: no read models here to compare (run `ledger init`)")
    summary = "\n".join([summary, *notes])
    if findings:
        first = report["first_broken_position"]
        where = f"first at position {first}" if first is not None else "see below"
        summary = "\n".join([f"MISMATCH, {where}"]
                            + [f"  [{f.check}] {f.message}" for f in findings])
    if checkpoint_out is not None and not findings:
        taken = checkpoints.from_report(chain)
        try:
            checkpoints.write_checkpoint(checkpoint_out, taken, key)
        except OSError as error:
            fail(EXIT_INVALID, f"invalid checkpoint-out: cannot write {checkpoint_out}: "
                               f"{error.strerror or error}")
        report["checkpoint"] = taken.payload()
        summary += f"\ncheckpoint of {taken.position} written to {checkpoint_out}"
    emit(report, as_json, summary)
    if findings:
        sys.exit(EXIT_MISMATCH)


@dataclass
class Verification:
    """What `verify_store` checked and found."""

    chain: ledger_audit.ChainReport
    snapshots: int
    """How many stored snapshots were checked against their streams' events."""
    read_models_checked: bool
    """False where no read models exist to compare (verification creates nothing)."""
    findings: list[ledger_audit.Finding]


def verify_store(app: LedgerApplication, *, expect_head: str | None = None,
                 checkpoint: checkpoints.Checkpoint | None = None) -> Verification:
    """Everything `audit verify` checks, for the CLI and the HTTP service alike: each event's
    digest, the chain, each stream's versions (`verify_chain`), that every event can be read
    (`verify_events`), the head recorded earlier (`expect_head`, well-formed), a signed
    checkpoint already read, every snapshot (`verify_snapshots`) and every read model.

    It creates nothing: the role running it may have no DDL rights (the app's, the
    auditor's), and read models never created have nothing to compare."""
    chain = ledger_audit.verify_chain(app)
    findings = list(chain.findings)
    findings += ledger_audit.verify_events(app)
    if expect_head:
        findings += _check_anchor(app, expect_head)
    if checkpoint is not None:
        findings += checkpoints.check_checkpoint(app, checkpoint, chain)
    snapshots = verify_snapshots(app)
    findings += snapshots.findings
    findings += conservation_findings(app)
    models_exist = ReadModels(app).exists()
    if models_exist:
        findings += verify_read_models(app)
    return Verification(chain, snapshots.snapshots, models_exist, findings)


def verify_report(verified: Verification) -> dict[str, Any]:
    """`audit verify --json`'s report (the HTTP service's too)."""
    chain, findings = verified.chain, verified.findings
    return {
        "ok": not findings,
        "events": chain.rows,
        "head_position": chain.head_position,
        "head_hash": chain.head_hash,
        "digests_from": chain.digests_from,
        "snapshots": verified.snapshots,
        "first_broken_position": min(
            (f.position for f in findings if f.position is not None), default=None),
        "findings": [f.as_dict() for f in findings],
        "sealed_here": chain.sealed_here,
        "read_models_checked": verified.read_models_checked,
    }


@audit_group.command()
@click.option("--out", "out", required=True, metavar="KEYFILE",
              type=click.Path(dir_okay=False, path_type=Path))
def keygen(out: Path) -> None:
    """Create a random checkpoint key in a new file readable by its owner only (0600)."""
    try:
        checkpoints.generate_key(out)
    except FileExistsError:
        fail(EXIT_INVALID, f"invalid out: {out} exists (older checkpoints may need it)")
    except OSError as error:
        fail(EXIT_INVALID, f"invalid out: cannot write {out}: {error.strerror or error}")
    click.echo(f"ledger: checkpoint key written to {out}; keep it off the database", err=True)


@audit_group.command()
@click.option("--since", help="Business time from which (inclusive).")
@click.option("--until", help="Business time until which (exclusive).")
@click.option("--outlet")
@click.option("--sku")
@click.option("--reference", help="A sale, refund, count or transfer id.")
@click.option("--format", "output_format", type=click.Choice(["csv", "jsonl"]),
              required=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: standard output).")
@pass_context
def export(obj: LedgerContext, since: str | None, until: str | None, outlet: str | None,
           sku: str | None, reference: str | None, output_format: str,
           output: Path | None) -> None:
    """Every movement with who, why, when, the batch and its cost, streamed as CSV or JSON
    lines."""
    rows = export_with_costs(obj.ledger.application, ledger_audit.export_rows(
        obj.ledger.application, since=moment_option("since", since),
        until=moment_option("until", until), outlet=outlet, sku=sku, reference=reference))
    target: Any = (output.open("w", newline="", encoding="utf-8") if output
                   else nullcontext(sys.stdout))
    with target as stream:
        count, unreadable = run(lambda: _write(stream, output_format, rows))
    click.echo(f"ledger: exported {count} movements", err=True)
    if unreadable:
        click.echo(f"ledger: warning: {len(unreadable)} events cannot be read (positions "
                   f"{', '.join(map(str, unreadable[:10]))}"
                   + (", ..." if len(unreadable) > 10 else "")
                   + f"): each is a row of kind {ledger_audit.UNREADABLE!r} in its place, "
                   "saying why; see docs/audit.md", err=True)


@audit_group.command()
@click.option("--sale", "sale_id", required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def trace(obj: LedgerContext, sale_id: str, as_json: bool) -> None:
    """A sale's batches, its refunds, and what became of each batch since."""
    report = run(lambda: ledger_audit.trace_sale(obj.ledger.application, sale_id))
    lines = [f"sale {sale_id} at {report['outlet']}"]
    for line in report["lines"]:
        lines.append(f"  {printable(line['sku'])} x{line['quantity']} from " + ", ".join(
            f"{printable(t['batch_id'])}:{t['quantity']}" for t in line["takes"]))
        lines += [f"    later: {m['occurred_at']} {m['kind']} {m['batch_id']} "
                  f"{m['quantity']:+d} ({m['reference']})"
                  for m in map(shown, line["batch_history_since_sale"])]
    lines += [f"  refund {x['refund_id']} at {x['occurred_at']} by {x['actor']}"
              for x in map(shown, report["refunds"])]
    emit(report, as_json, "\n".join(lines))


def _write(stream: IO[str], output_format: str,
           rows: Iterable[tuple[object, ...]]) -> tuple[int, list[int]]:
    """Write the rows as CSV (with a header) or JSON lines; return how many movements, and
    the positions of the events that cannot be read (marked by a row each)."""
    count = 0
    unreadable: list[int] = []
    kind = JOURNAL_COLUMNS.index("kind")
    columns = (*JOURNAL_COLUMNS, *COST_COLUMNS)
    writer = csv.writer(stream) if output_format == "csv" else None
    if writer is not None:
        writer.writerow(columns)
    for row in rows:
        if writer is not None:
            writer.writerow([_cell(v) for v in row])
        else:
            stream.write(json.dumps(dict(zip(columns, map(_cell, row), strict=True)))
                         + "\n")
        if row[kind] == ledger_audit.UNREADABLE:
            unreadable.append(int(cast(int, row[0])))
        else:
            count += 1
    return count, unreadable


def _key(path: Path) -> bytes:
    try:
        return checkpoints.read_key(path)
    except checkpoints.CheckpointError as error:
        fail(EXIT_INVALID, f"invalid key: {error}")


def _anchor_position(anchor: str) -> int:
    written, _, expected_hash = anchor.partition(":")
    position = position_text(written)
    if position is None or not expected_hash:
        fail(EXIT_INVALID, f"invalid expect-head: expected POSITION:HASH with a position from "
                           f"0 to {MAX_POSITION}, got {anchor!r}")
    return position


def _check_anchor(app: LedgerApplication, anchor: str) -> list[ledger_audit.Finding]:
    """A finding unless the chain still passes through the recorded `POSITION:HASH`."""
    position = _anchor_position(anchor)
    expected_hash = anchor.partition(":")[2]
    rows = select_chained(app.recorder, position, 1)
    if not rows or rows[0]["position"] != position:
        return [ledger_audit.Finding("anchor", position,
                                     f"the recorded head position {position} is gone")]
    stored = rows[0]["chain_hash"]
    if stored is None or bytes(stored).hex() != expected_hash:
        return [ledger_audit.Finding("anchor", position,
                                     f"position {position} no longer has the recorded hash")]
    return []
