"""`ledger audit`: replay, verify, export and trace, from the events alone."""

from __future__ import annotations

import csv
import json
import sys
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click

from cli.main import EXIT_INVALID, LedgerContext, emit, fail, pass_context, run
from ledger.app import audit as ledger_audit
from ledger.domain.movements import JOURNAL_COLUMNS

EXIT_MISMATCH = 1


def _time(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(EXIT_INVALID, f"invalid {option}: not an ISO 8601 date or time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a bare time is the auditor's local time
    return moment


def _cell(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def register(group: click.Group) -> None:
    @group.group("audit")
    def audit_group() -> None:
        """Replay history, verify the store and read models, export and trace."""

    @audit_group.command()
    @click.option("--as-of", "as_of", help="A moment (ISO 8601); see --basis.")
    @click.option("--position", type=click.IntRange(min=0), help="An event position.")
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
        moment = _time("as-of", as_of)
        report = run(lambda: ledger_audit.replay(
            obj.ledger.application, outlet, sku, position=position, as_of=moment,
            basis="business" if basis == "business" else "recorded"))
        lines = [f"{s['sku']:<20} on hand {s['on_hand']:>8}  available {s['available']:>8}  "
                 + ", ".join(f"{b['batch_id']}:{b['quantity']}" for b in s["batches"])
                 for s in report["stock"]]
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
                  help="If verification passes, write the sealed head as a checkpoint "
                       "signed with --key (HMAC-SHA256); keep it off the database.")
    @click.option("--key", "key_file", metavar="KEYFILE",
                  type=click.Path(dir_okay=False, path_type=Path),
                  help="The checkpoint key (`ledger audit keygen`), held off the database.")
    @click.option("--json", "as_json", is_flag=True)
    @pass_context
    def verify(obj: LedgerContext, expect_head: str | None, checkpoint_in: Path | None,
               checkpoint_out: Path | None, key_file: Path | None, as_json: bool) -> None:
        """Check each event's digest, the hash chain and each stream's versions, and
        recompute every read model."""
        from ledger.app import checkpoint as checkpoints
        from projections.runner import ReadModels
        from projections.verify import verify_read_models

        if (checkpoint_in or checkpoint_out) and key_file is None:
            fail(EXIT_INVALID, "invalid key: --checkpoint and --checkpoint-out need --key")
        key = _key(key_file) if key_file is not None else b""
        signed = None
        untrusted: list[ledger_audit.Finding] = []
        if checkpoint_in is not None:
            try:
                signed = checkpoints.read_checkpoint(checkpoint_in, key)
            except checkpoints.CheckpointError as error:
                # A checkpoint that cannot be trusted proves nothing: a finding (exit 1), not
                # a usage error, which a forger would like it to be taken for.
                untrusted = [ledger_audit.Finding("checkpoint", None, str(error))]
        app = obj.ledger.application
        chain = run(lambda: ledger_audit.verify_chain(app))
        findings = list(chain.findings) + untrusted
        if expect_head:
            findings += run(lambda: _check_anchor(app, expect_head))
        if signed is not None:
            findings += run(lambda: checkpoints.check_checkpoint(app, signed, chain))
        ReadModels(app).create()
        findings += run(lambda: verify_read_models(app))
        first = min((f.position for f in findings if f.position is not None), default=None)
        report = {
            "ok": not findings,
            "events": chain.rows,
            "head_position": chain.head_position,
            "head_hash": chain.head_hash,
            "digests_from": chain.digests_from,
            "first_broken_position": first,
            "findings": [f.as_dict() for f in findings],
        }
        summary = (f"verified {chain.rows} events; head {chain.head_position}:"
                   f"{chain.head_hash} (record it to detect later truncation)")
        if findings:
            where = f"first at position {first}" if first is not None else "see below"
            summary = "\n".join([f"MISMATCH, {where}"]
                                + [f"  [{f.check}] {f.message}" for f in findings])
        if checkpoint_out is not None and not findings:
            taken = checkpoints.from_report(chain)
            checkpoints.write_checkpoint(checkpoint_out, taken, key)
            report["checkpoint"] = taken.payload()
            summary += f"\ncheckpoint of {taken.position} written to {checkpoint_out}"
        emit(report, as_json, summary)
        if findings:
            sys.exit(EXIT_MISMATCH)

    @audit_group.command()
    @click.option("--out", "out", required=True, metavar="KEYFILE",
                  type=click.Path(dir_okay=False, path_type=Path))
    def keygen(out: Path) -> None:
        """Create a random checkpoint key in a new file readable by its owner only (0600)."""
        from ledger.app import checkpoint as checkpoints

        try:
            checkpoints.generate_key(out)
        except FileExistsError:
            fail(EXIT_INVALID, f"invalid out: {out} exists (older checkpoints may need it)")
        click.echo(f"ledger: checkpoint key written to {out}; keep it off the database",
                   err=True)

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
        """Every movement with who, why, when and the batch, streamed as CSV or JSON lines."""
        rows = ledger_audit.export_rows(
            obj.ledger.application, since=_time("since", since), until=_time("until", until),
            outlet=outlet, sku=sku, reference=reference)
        target: Any = (output.open("w", newline="", encoding="utf-8") if output
                       else nullcontext(sys.stdout))
        with target as stream:
            count = run(lambda: _write(stream, output_format, rows))
        click.echo(f"ledger: exported {count} movements", err=True)

    @audit_group.command()
    @click.option("--sale", "sale_id", required=True)
    @click.option("--json", "as_json", is_flag=True)
    @pass_context
    def trace(obj: LedgerContext, sale_id: str, as_json: bool) -> None:
        """A sale's batches, its refunds, and what became of each batch since."""
        report = run(lambda: ledger_audit.trace_sale(obj.ledger.application, sale_id))
        lines = [f"sale {sale_id} at {report['outlet']}"]
        for line in report["lines"]:
            lines.append(f"  {line['sku']} x{line['quantity']} from " + ", ".join(
                f"{t['batch_id']}:{t['quantity']}" for t in line["takes"]))
            lines += [f"    later: {m['occurred_at']} {m['kind']} {m['batch_id']} "
                      f"{m['quantity']:+d} ({m['reference']})"
                      for m in line["batch_history_since_sale"]]
        lines += [f"  refund {x['refund_id']} at {x['occurred_at']} by {x['actor']}"
                  for x in report["refunds"]]
        emit(report, as_json, "\n".join(lines))


def _write(stream: IO[str], output_format: str, rows: Any) -> int:
    count = 0
    if output_format == "csv":
        writer = csv.writer(stream)
        writer.writerow(JOURNAL_COLUMNS)
        for row in rows:
            writer.writerow([_cell(v) for v in row])
            count += 1
    else:
        for row in rows:
            stream.write(json.dumps(dict(zip(JOURNAL_COLUMNS, map(_cell, row), strict=True)))
                         + "\n")
            count += 1
    return count


def _key(path: Path) -> bytes:
    from ledger.app import checkpoint as checkpoints

    try:
        return checkpoints.read_key(path)
    except checkpoints.CheckpointError as error:
        fail(EXIT_INVALID, f"invalid key: {error}")


def _check_anchor(app: Any, anchor: str) -> list[ledger_audit.Finding]:
    position_text, _, expected_hash = anchor.partition(":")
    if not position_text.isdigit() or not expected_hash:
        fail(EXIT_INVALID, f"invalid expect-head: expected POSITION:HASH, got {anchor!r}")
    position = int(position_text)
    from ledger.store.hash_chain import select_chained

    rows = select_chained(app.recorder, position, 1)
    if not rows or rows[0]["position"] != position:
        return [ledger_audit.Finding("anchor", position,
                                     f"the recorded head position {position} is gone")]
    stored = rows[0]["chain_hash"]
    if stored is None or bytes(stored).hex() != expected_hash:
        return [ledger_audit.Finding("anchor", position,
                                     f"position {position} no longer has the recorded hash")]
    return []
