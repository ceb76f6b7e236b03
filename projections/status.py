"""`ledger projections status`: where each projection stands, how far behind, the runner's
last outage (kept in the projection's state row), and the event it is stuck before, if any
(`projections.stuck`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ledger.store.decoding import UnreadableEvent
from projections import stuck, tracking
from projections.generations import now
from projections.store import ReadStore

SELECT_STATE = ("SELECT name, generation, updated_at, last_error, last_error_at, reconnects "
                "FROM {state} ORDER BY name")
RECORD_ERROR = ("UPDATE {state} SET last_error = %s, last_error_at = %s, "
                "reconnects = reconnects + 1")


def record_outage(store: ReadStore, error: BaseException) -> None:
    """Note that the runner lost the store (and is reconnecting) on every projection."""
    with store.transaction() as cursor:
        cursor.execute(store.sql(RECORD_ERROR), (str(error).splitlines()[0][:500], now()))


def status(store: ReadStore) -> list[dict[str, Any]]:
    """One report per projection: generation, position, head, lag, last outage, and the
    event it is stuck before (`stuck`: position, topic, stream, version, reason, stuck_at;
    None unless it stands before that event now)."""
    head = store.head()
    with store.transaction() as cursor:
        cursor.execute(store.sql(SELECT_STATE))
        states = [dict(row) for row in cursor.fetchall()]
        for state in states:
            state["position"] = tracking.position(store, cursor, state["name"],
                                                  state["generation"])
    stuck_records = stuck.recorded(store)
    report = []
    for state in states:
        lag_events = max(0, head - state["position"])
        lag_seconds = _lag_seconds(store, state["position"]) if lag_events else 0.0
        record = stuck_records.get(state["name"])
        if record is not None and (record["generation"] != state["generation"]
                                   or not state["position"] < record["position"] <= head):
            # Passed since (a repaired row), gone (a removed last row, which no batch passes
            # until the next append), or of a generation replaced since.
            record = None
        report.append({
            "name": state["name"], "generation": state["generation"],
            "position": state["position"], "head": head, "lag_events": lag_events,
            "lag_seconds": None if lag_seconds is None else round(lag_seconds, 3),
            "updated_at": state["updated_at"],
            "last_error": state["last_error"], "last_error_at": state["last_error_at"],
            "reconnects": state["reconnects"],
            "stuck": None if record is None else {
                key: record[key] for key in ("position", "topic", "stream", "version",
                                             "reason", "stuck_at")},
        })
    return report


def horizon(store: ReadStore) -> dict[str, Any] | None:
    """On PostgreSQL, whether the horizon is held back and by whom (None on SQLite).

    `held_at` is the horizon while a registration the horizon honours (its role may append)
    holds it below the sequence's last value, else None; `holder` is the lowest such
    registration: its position, pid, role and how long its transaction has run. A
    registration older than the store's lock timeout is no append still running its
    statement but a transaction held open after one (or a role that may append holding the
    key by hand): it is reported `stale`, never skipped, since it may still commit.
    `registrations` lists every lock on the store's registration keys, the ignored ones of
    roles that may not append included; `allocation` and `seal` the holders of those locks
    (`honoured`: their role may append, or seal); `foreign` every other advisory lock of this
    database held by a role that may not append, which fails appends to a stream if it is
    that stream's queue or read-check key (or is another application's).
    """
    recorder: Any = store.app.recorder
    if not hasattr(recorder, "registrations"):
        return None
    current = recorder.horizon()
    locks = recorder.registrations()
    lock_timeout = float(store.datastore.lock_timeout or 0)
    registrations = [{
        "position": r["position"], "pid": r["pid"], "role": r["role"], "mode": r["mode"],
        "honoured": bool(r["honoured"]), "seconds": _seconds(r["seconds"]),
        "stale": r["seconds"] is not None and bool(lock_timeout)
                 and float(r["seconds"]) > lock_timeout,
    } for r in locks if r["lock"] == "registration"]
    holding = [r for r in registrations if r["honoured"] and r["position"] == current + 1]

    def holders(kind: str) -> list[dict[str, Any]]:
        return [{"pid": r["pid"], "role": r["role"], "mode": r["mode"], "key": r["key"],
                 "honoured": bool(r["honoured"]), "seconds": _seconds(r["seconds"])}
                for r in locks if r["lock"] == kind]

    return {
        "horizon": current,
        "held_at": current if holding else None,
        "holder": holding[0] if holding else None,
        "registrations": registrations,
        "allocation": holders("allocation"),
        "seal": holders("seal"),
        "foreign": holders("other"),
    }


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _lag_seconds(store: ReadStore, position: int) -> float | None:
    """How long the first event after `position` has been waiting (0 if there is none;
    None if it cannot be read, so that its time is not known)."""
    waiting = store.app.recorder.select_notifications(position + 1, 1)
    if not waiting:
        return 0.0
    try:
        event: Any = store.app.mapper.to_domain_event(waiting[0])
    except UnreadableEvent:
        return None
    timestamp: datetime = event.timestamp
    return max(0.0, (datetime.now(UTC) - timestamp).total_seconds())
