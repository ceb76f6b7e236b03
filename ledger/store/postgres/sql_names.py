"""The names and expressions every statement of one PostgreSQL store is formatted with: its
schema, its events table and the tables and functions named after it."""

from __future__ import annotations

from psycopg.sql import SQL, Composable, Identifier, Literal


class StoreNames:
    """The names of one store's objects, quoted, computed once per recorder.

    `sql` holds them as `psycopg.sql` parts, by the field names the templates of the
    `sql_*` modules use: `schema`, `table`, `seals`, `trigger`, `function` (the append),
    `horizon`, `seal`, `sequence`, `table_oid`, and `append_signature` and `seal_signature`
    (the functions' signatures as literals, for `has_function_privilege`).
    """

    def __init__(self, schema: str, events_table: str) -> None:
        self.events_table = events_table
        self.seals_table = f"{events_table}_seals"
        self.qualified_table = SQL("{schema}.{table}").format(
            schema=Identifier(schema), table=Identifier(events_table)).as_string(None)
        quoted = Literal(self.qualified_table).as_string(None)
        # Expressions, not values: the statements are written without asking the server
        # (before the tables exist), which resolves them where they run.
        self.sequence = f"pg_get_serial_sequence({quoted}, 'notification_id')::regclass"
        # Every advisory lock key of the store is XORed with its events table's oid
        # (`lock_keys`).
        self.table_oid = f"({quoted}::regclass::oid::bigint)"
        # The functions' signatures: the horizon honours only registrations of roles that
        # may execute the append, and a lock of the store is a stranger's if its holder may
        # not execute the function that takes it (`sql_horizon`, `sql_holders`).
        append_signature = SQL("{schema}.{function}").format(
            schema=Identifier(schema), function=Identifier(f"{events_table}_append")
        ).as_string(None) + "(uuid[], bigint[], text[], bytea[], uuid[], bigint[], bigint[])"
        seal_signature = SQL("{schema}.{seal}").format(
            schema=Identifier(schema), seal=Identifier(f"{events_table}_seal")
        ).as_string(None) + "(integer)"
        self.sql: dict[str, Composable] = {
            "schema": Identifier(schema),
            "table": Identifier(events_table),
            "seals": Identifier(self.seals_table),
            "trigger": Identifier(f"{events_table}_chain"),
            "function": Identifier(f"{events_table}_append"),
            "horizon": Identifier(f"{events_table}_horizon"),
            "seal": Identifier(f"{events_table}_seal"),
            "sequence": SQL(self.sequence),
            "table_oid": SQL(self.table_oid),
            "append_signature": Literal(append_signature),
            "seal_signature": Literal(seal_signature),
        }
