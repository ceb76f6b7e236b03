"""The domain: quantities, identities, the pure rules (allocation, refunds, expiry, counts) and
the aggregates that apply them. Nothing here does I/O or knows which store it runs on."""
