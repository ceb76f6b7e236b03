-- stockledger: run the ledger with an append-only database role.
--
-- Run as the owner of the store's tables (or a superuser), in the ledger's database, AFTER the
-- tables exist (`ledger ... --create-tables` / `Ledger.open(url, create_tables=True)` and
-- `projections.runner.create_read_models`, both as the owner):
--
--     psql -v ON_ERROR_STOP=1 -d shop -f docs/append_only_role.sql
--
-- It is idempotent: run it again after upgrades or after a rebuild made by the owner. The
-- HTTP service's token and webhook tables (`ledger tokens create`, `ledger webhooks add`, as
-- the owner) are granted like read models: make them before running this script, or run the
-- script again after.
-- It assumes the store lives in schema "public" (the default). For a store opened with
-- `?schema=s`, replace "public" below with s.
--
-- Three roles:
--
--   stockledger_app        LOGIN. Tills, the API, the CLI and the projection runner
--                          (`projections run` / catch-up). Can read and append events and
--                          snapshots, and read and write the read models. Cannot UPDATE,
--                          DELETE or TRUNCATE an event or a snapshot.
--   stockledger_projector  LOGIN. Owns the read-model tables and views, with CREATE on the
--                          schema, so that `projections rebuild` (which creates a new
--                          generation of tables, repoints the views and drops the old
--                          generation: DDL that only an owner may do) can run without the
--                          table owner's or a superuser's password. Same limits on the events,
--                          and it does not append: it reads, seals and rebuilds.
--   stockledger_auditor    LOGIN. `ledger audit verify|replay|export|trace` and the reads
--                          (`stock`, `history`...): SELECT on the events, the seals, the
--                          snapshots and the read models, and EXECUTE on the horizon function
--                          only (with SELECT on the sequence it reads), without which no
--                          reader may read in position order. It may not append, seal, write
--                          a read model or create anything: verify checks the chain as sealed
--                          so far, and reads show the read models as `projections run` keeps
--                          them.
--
-- Which role may execute which of the store's functions (the store revokes them all from
-- PUBLIC when it creates them; the owner keeps them):
--
--   function                        app   projector   auditor
--   stockledger_events_append(...)  yes   no          no
--   stockledger_events_seal(int)    yes   yes         no
--   stockledger_events_horizon()    yes   yes         yes
--
-- The horizon honours only in-flight registrations held by sessions of roles that may execute
-- the append function: revoke it from a role only while that role has no session open.
--
-- Give the roles passwords (ALTER ROLE ... PASSWORD '...') where the server does not use
-- trust or certificate authentication; this script sets none.
--
-- ---------------------------------------------------------------------------------------
-- Events are appended through the append function only
-- ---------------------------------------------------------------------------------------
-- The roles may read the events and the chain's seals, and append events only by calling
-- stockledger_events_append (and seal only by calling stockledger_events_seal), functions
-- that run as the tables' owner: an INSERT of their own could skip the registration that
-- keeps readers from passing an append still in flight. An append locks no table (earlier
-- versions took an EXCLUSIVE lock on the events table, which PostgreSQL only grants to a role
-- holding UPDATE, DELETE or TRUNCATE, so this script granted UPDATE and neutralised it with
-- row-level security; that grant is revoked here). Snapshots are inserted directly. The
-- row-level security below stays as a second fence.
--
-- What this does NOT stop: the table owner and superusers bypass privileges and row-level
-- security. Keep those credentials away from the application; the hash chain
-- (`ledger audit verify`) is what detects a change made with them.
-- ---------------------------------------------------------------------------------------

-- Roles (cluster-wide: created once per server).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stockledger_app') THEN
        CREATE ROLE stockledger_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
            NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stockledger_projector') THEN
        CREATE ROLE stockledger_projector LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOBYPASSRLS NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stockledger_auditor') THEN
        CREATE ROLE stockledger_auditor LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
            NOBYPASSRLS NOINHERIT;
    END IF;
    -- No role may bypass row-level security, even if created earlier by someone else.
    ALTER ROLE stockledger_app NOBYPASSRLS NOSUPERUSER;
    ALTER ROLE stockledger_projector NOBYPASSRLS NOSUPERUSER;
    ALTER ROLE stockledger_auditor NOBYPASSRLS NOSUPERUSER;
END
$roles$;

-- Database and schema. TEMPORARY: the projection runner stages each batch's row changes in
-- a temporary table before upserting them.
DO $database$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO stockledger_app, '
                   'stockledger_projector', current_database());
END
$database$;
DO $auditor_database$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO stockledger_auditor', current_database());
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM stockledger_auditor',
                   current_database());
END
$auditor_database$;
GRANT USAGE ON SCHEMA public TO stockledger_app, stockledger_projector, stockledger_auditor;
REVOKE CREATE ON SCHEMA public FROM stockledger_app, stockledger_auditor;
GRANT CREATE ON SCHEMA public TO stockledger_projector;

-- ------------------------------------------------------------------ the event store
-- Start from nothing, then grant exactly what appending needs.
REVOKE ALL ON TABLE public.stockledger_events FROM stockledger_app, stockledger_projector;
REVOKE ALL ON TABLE public.stockledger_snapshots FROM stockledger_app, stockledger_projector;
GRANT SELECT ON TABLE public.stockledger_events TO stockledger_app, stockledger_projector;
GRANT SELECT, INSERT ON TABLE public.stockledger_snapshots TO stockledger_app,
    stockledger_projector;
GRANT USAGE, SELECT ON SEQUENCE public.stockledger_events_notification_id_seq
    TO stockledger_app, stockledger_projector;

REVOKE ALL ON TABLE public.stockledger_events_seals FROM stockledger_app, stockledger_projector;
GRANT SELECT ON TABLE public.stockledger_events_seals TO stockledger_app,
    stockledger_projector;

-- Never, explicitly (REVOKE is idempotent; these also undo any earlier broader grant).
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLE public.stockledger_events
    FROM stockledger_app, stockledger_projector;
DO $maintain$
BEGIN
    -- Granted by earlier versions of this script on PostgreSQL 17 and later.
    IF current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE 'REVOKE MAINTAIN ON TABLE public.stockledger_events FROM stockledger_app, '
                'stockledger_projector';
    END IF;
END
$maintain$;
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLE public.stockledger_snapshots
    FROM stockledger_app, stockledger_projector;
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLE public.stockledger_events_seals
    FROM stockledger_app, stockledger_projector;
REVOKE UPDATE, DELETE, TRUNCATE ON TABLE public.stockledger_events,
    public.stockledger_snapshots, public.stockledger_events_seals FROM PUBLIC;

-- Row-level security on the events: every role other than the owner may read and append
-- (as far as its GRANTs allow), and no such role can change or remove a stored row.
ALTER TABLE public.stockledger_events ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS stockledger_events_read ON public.stockledger_events;
DROP POLICY IF EXISTS stockledger_events_append ON public.stockledger_events;
DROP POLICY IF EXISTS stockledger_events_never_update ON public.stockledger_events;
DROP POLICY IF EXISTS stockledger_events_never_delete ON public.stockledger_events;
CREATE POLICY stockledger_events_read ON public.stockledger_events
    FOR SELECT TO PUBLIC USING (true);
CREATE POLICY stockledger_events_append ON public.stockledger_events
    FOR INSERT TO PUBLIC WITH CHECK (true);
-- USING (true) lets the UPDATE reach the row, WITH CHECK (false) then rejects it with an
-- error (42501) instead of silently updating nothing.
CREATE POLICY stockledger_events_never_update ON public.stockledger_events
    FOR UPDATE TO PUBLIC USING (true) WITH CHECK (false);
CREATE POLICY stockledger_events_never_delete ON public.stockledger_events
    FOR DELETE TO PUBLIC USING (false);

-- The append path's functions: the append, the readers' horizon and the chain's sealer (see
-- the table at the top). The store revokes them from PUBLIC; so does this script, for a store
-- created by an earlier version.
REVOKE ALL ON FUNCTION public.stockledger_events_append(uuid[], bigint[], text[], bytea[],
                                                         uuid[], bigint[], bigint[]),
    public.stockledger_events_horizon(), public.stockledger_events_seal(integer)
    FROM PUBLIC, stockledger_app, stockledger_projector, stockledger_auditor;
GRANT EXECUTE ON FUNCTION public.stockledger_events_append(uuid[], bigint[], text[], bytea[],
                                                            uuid[], bigint[], bigint[])
    TO stockledger_app;
GRANT EXECUTE ON FUNCTION public.stockledger_events_seal(integer)
    TO stockledger_app, stockledger_projector;
GRANT EXECUTE ON FUNCTION public.stockledger_events_horizon()
    TO stockledger_app, stockledger_projector, stockledger_auditor;

-- ------------------------------------------------------------------ the auditor
-- Reads only: the events, the chain's seals, the snapshots, the sequence's last value (which
-- the horizon reads), and the read models (below).
REVOKE ALL ON TABLE public.stockledger_events, public.stockledger_snapshots,
    public.stockledger_events_seals FROM stockledger_auditor;
GRANT SELECT ON TABLE public.stockledger_events, public.stockledger_snapshots,
    public.stockledger_events_seals TO stockledger_auditor;
REVOKE ALL ON SEQUENCE public.stockledger_events_notification_id_seq FROM stockledger_auditor;
GRANT SELECT ON SEQUENCE public.stockledger_events_notification_id_seq
    TO stockledger_auditor;

-- ------------------------------------------------------------------ the read models
-- The projections rewrite these: full DML, no DDL for the app role.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.notification_tracking,
    public.ledger_projection_state TO stockledger_app, stockledger_projector;
REVOKE ALL ON TABLE public.notification_tracking, public.ledger_projection_state
    FROM stockledger_auditor;
GRANT SELECT ON TABLE public.notification_tracking, public.ledger_projection_state
    TO stockledger_auditor;

-- Every generation's tables and the views that point at them: owned by the projector (so
-- `projections rebuild` can create, repoint and drop them), writable by the app.
DO $read_models$
DECLARE
    relation record;
BEGIN
    FOR relation IN
        SELECT c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'p')
          AND c.relname LIKE 'ledger\_%' AND c.relname <> 'ledger_projection_state'
    LOOP
        IF relation.relkind = 'v' THEN
            EXECUTE format('ALTER VIEW public.%I OWNER TO stockledger_projector',
                           relation.relname);
            EXECUTE format('GRANT SELECT ON public.%I TO stockledger_app, stockledger_auditor',
                           relation.relname);
        ELSE
            EXECUTE format('ALTER TABLE public.%I OWNER TO stockledger_projector',
                           relation.relname);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I '
                           'TO stockledger_app', relation.relname);
            EXECUTE format('GRANT SELECT ON public.%I TO stockledger_auditor',
                           relation.relname);
        END IF;
    END LOOP;
END
$read_models$;

-- Generations a future rebuild creates (as the projector) are writable by the app at once.
-- Only the projector creates tables in this schema (the app role has no CREATE), so these
-- defaults cannot reach the event store's tables.
ALTER DEFAULT PRIVILEGES FOR ROLE stockledger_projector IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO stockledger_app;
ALTER DEFAULT PRIVILEGES FOR ROLE stockledger_projector IN SCHEMA public
    GRANT SELECT ON TABLES TO stockledger_auditor;
