"""An import of opening balances: which file, and how far its recording has got.

Its stream id is derived from the file's sha256 digest, so two runs of the same file share one
stream. Each chunk of rows is recorded with the next event of this stream in the same
transaction as the chunk's receipts: the stream's version uniqueness then makes a chunk land
once, and a run killed half-way leaves a whole number of chunks that a rerun goes on from.
"""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from ledger import events
from ledger.domain.errors import InvariantBroken
from ledger.domain.identity import balance_import_id


class BalanceImport(Aggregate):
    """The progress of one file's import: its rows, recorded in `chunks` chunks."""

    def __init__(self, source: str, digest: str, rows: int, chunks: int, chunk_rows: int,
                 actor: str) -> None:
        self.source = source
        self.digest = digest
        self.rows = rows
        self.chunks = chunks
        self.chunk_rows = chunk_rows
        self.actor = actor
        self.chunks_recorded = 0
        self.rows_recorded = 0

    @classmethod
    def start(cls, source: str, digest: str, rows: int, chunks: int, chunk_rows: int,
              actor: str) -> BalanceImport:
        if not 1 <= chunks <= rows or chunk_rows < 1 or rows > chunks * chunk_rows:
            raise InvariantBroken(f"an import of {rows} rows in {chunks} chunks of at most "
                                  f"{chunk_rows}")
        return cls._create(events.BalanceImportStarted, id=balance_import_id(digest),
                           source=source, digest=digest, rows=rows, chunks=chunks,
                           chunk_rows=chunk_rows, actor=actor)

    @property
    def complete(self) -> bool:
        return self.chunks_recorded == self.chunks

    def record_chunk(self, chunk: int, first_row: int, rows: int) -> None:
        """Record that chunk `chunk`, the next one, of rows `first_row` on, is recorded with
        this event."""
        if (chunk != self.chunks_recorded or chunk >= self.chunks
                or first_row != self.rows_recorded + 1 or not 1 <= rows <= self.chunk_rows
                or self.rows_recorded + rows > self.rows):
            raise InvariantBroken(
                f"import {self.digest}: chunk {chunk} of rows {first_row}-"
                f"{first_row + rows - 1} recorded after {self.chunks_recorded} chunks and "
                f"{self.rows_recorded} rows of {self.chunks} and {self.rows}")
        self.trigger_event(events.BalanceChunkImported, chunk=chunk, first_row=first_row,
                           rows=rows)
