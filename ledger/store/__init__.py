"""The event store edge: the eventsourcing application, recorders, transcoding, snapshots, the
hash chain and store URLs. PostgreSQL specifics live in `ledger.store.postgres`."""
