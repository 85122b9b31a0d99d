"""Versioned schema for the PostgreSQL store. Append a new entry; never edit an applied one.

Migrations run at start under a transaction-level advisory lock, so that instances starting
together apply each version once: the second waits for the first, then finds nothing to do.
Times are epoch seconds (DOUBLE PRECISION) as in the model; leases are measured on the
database's clock (`extract(epoch FROM clock_timestamp())`), never on an instance's.
"""

from __future__ import annotations

import psycopg

# Any constant that no other application on the server uses for its advisory locks.
MIGRATION_LOCK = 7_305_511_201

MIGRATIONS: list[str] = [
    # 1: the first schema (SQLite's migrations 1 and 2, plus the lease of a firing push).
    """
    CREATE TABLE apps (
        id BIGSERIAL PRIMARY KEY,
        access_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        secret_verifier TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        sms_credentials BYTEA,
        same_content_interval INTEGER NOT NULL DEFAULT 30,
        daily_limit INTEGER NOT NULL DEFAULT 10,
        time_zone TEXT NOT NULL DEFAULT ''
    );
    -- The fallback queue lives in this table: rows are updated at claim and at finish, so
    -- leave room for HOT updates and vacuum it eagerly (SKIP LOCKED queues bloat otherwise).
    CREATE TABLE pushes (
        id BIGSERIAL PRIMARY KEY,
        app_id BIGINT NOT NULL REFERENCES apps(id),
        push_id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL DEFAULT '',
        spec TEXT NOT NULL,
        accepted_at DOUBLE PRECISION NOT NULL,
        target_count INTEGER NOT NULL,
        fallback_state SMALLINT NOT NULL,
        fallback_due_at DOUBLE PRECISION,
        fallback_ended_at DOUBLE PRECISION,
        no_phone_count INTEGER NOT NULL DEFAULT 0,
        delivered_at DOUBLE PRECISION,
        fire_owner TEXT NOT NULL DEFAULT '',
        lease_until DOUBLE PRECISION
    ) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
            autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
    CREATE INDEX pushes_by_app_time ON pushes(app_id, accepted_at);
    CREATE INDEX pushes_by_time ON pushes(accepted_at);
    CREATE INDEX pushes_undelivered ON pushes(accepted_at, id) WHERE delivered_at IS NULL;
    -- PENDING (2) and FIRING (3): the due index every instance polls.
    CREATE INDEX pushes_live_fallbacks ON pushes(fallback_due_at) WHERE fallback_state IN (2, 3);
    CREATE TABLE targets (
        push BIGINT NOT NULL,
        token TEXT NOT NULL,
        seq INTEGER NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        arrived_at DOUBLE PRECISION,
        clicked_at DOUBLE PRECISION,
        PRIMARY KEY (push, token)
    );
    CREATE INDEX targets_by_seq ON targets(push, seq);
    CREATE TABLE devices (
        app_id BIGINT NOT NULL,
        token TEXT NOT NULL,
        phone TEXT NOT NULL DEFAULT '',
        notifications_enabled SMALLINT,
        notification_time DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (app_id, token)
    );
    CREATE TABLE account_tokens (
        app_id BIGINT NOT NULL,
        account TEXT NOT NULL,
        token TEXT NOT NULL,
        bound_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (app_id, account, token)
    );
    CREATE INDEX account_tokens_by_token ON account_tokens(app_id, token);
    CREATE TABLE sms_records (
        id BIGSERIAL PRIMARY KEY,
        app_id BIGINT NOT NULL,
        push BIGINT NOT NULL,
        phone TEXT NOT NULL,
        status SMALLINT NOT NULL,
        content_key TEXT NOT NULL,
        sms_app_id TEXT NOT NULL,
        template_id TEXT NOT NULL,
        sign_name TEXT NOT NULL,
        params TEXT NOT NULL,
        serial_no TEXT NOT NULL DEFAULT '',
        provider_code TEXT NOT NULL DEFAULT '',
        provider_message TEXT NOT NULL DEFAULT '',
        fee INTEGER NOT NULL DEFAULT 0,
        rate_limit_rule TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION,
        received_at DOUBLE PRECISION,
        report_code TEXT NOT NULL DEFAULT '',
        report_description TEXT NOT NULL DEFAULT '',
        UNIQUE (push, phone)
    );
    CREATE INDEX sms_by_phone ON sms_records(app_id, phone, created_at);
    CREATE INDEX sms_by_app_time ON sms_records(app_id, created_at);
    CREATE INDEX sms_by_serial ON sms_records(serial_no) WHERE serial_no != '';
    CREATE INDEX sms_sending ON sms_records(push) WHERE status = 1;
    CREATE TABLE idempotency (
        app_id BIGINT NOT NULL,
        method TEXT NOT NULL,
        request_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        response TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (app_id, method, request_id)
    );
    CREATE INDEX idempotency_by_time ON idempotency(created_at);
    """,
    # 2: as SQLite's 3 and 4: when a record's provider call began (reserved vs dispatched), and
    # per-app receipt keys (services/receipts.py), sealed under the master key.
    """
    ALTER TABLE sms_records ADD COLUMN dispatched_at DOUBLE PRECISION;
    CREATE TABLE receipt_keys (
        app_id BIGINT NOT NULL REFERENCES apps(id),
        key_id INTEGER NOT NULL,
        blob BYTEA NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        retire_at DOUBLE PRECISION,
        PRIMARY KEY (app_id, key_id)
    );
    """,
    # 3: as SQLite's: the app secret sealed under the master key (TPNS's Sign needs the secret).
    """
    ALTER TABLE apps ADD COLUMN secret_sealed BYTEA;
    """,
    # 4: as SQLite's 7: push channels (credentials, device channel and token state, outcomes).
    """
    CREATE TABLE channel_credentials (
        app_id BIGINT NOT NULL REFERENCES apps(id),
        channel INTEGER NOT NULL,
        blob BYTEA NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (app_id, channel)
    );
    ALTER TABLE devices ADD COLUMN channel INTEGER;
    ALTER TABLE devices ADD COLUMN invalid_at DOUBLE PRECISION;
    ALTER TABLE devices ADD COLUMN invalid_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE targets ADD COLUMN channel INTEGER;
    ALTER TABLE targets ADD COLUMN outcome INTEGER;
    ALTER TABLE targets ADD COLUMN outcome_code TEXT NOT NULL DEFAULT '';
    ALTER TABLE targets ADD COLUMN outcome_at DOUBLE PRECISION;
    UPDATE targets t SET channel = 9, outcome = 2, outcome_at = p.delivered_at
        FROM pushes p WHERE p.id = t.push AND p.delivered_at IS NOT NULL;
    """,    # 5 in this tree; it must come after the tags migration when both are merged (then 6).
    # 5: as SQLite's 5 and 6: delivery receipts kept until their record has its serial number;
    # device tags; the resolution of TAG / ALL pushes, one row per push, held by one instance
    # at a time under a lease (owner, lease_until on the database's clock) as fires are.
    """
    CREATE TABLE pending_receipts (
        serial_no TEXT NOT NULL,
        phone TEXT NOT NULL,
        delivered BOOLEAN NOT NULL,
        receive_time DOUBLE PRECISION NOT NULL,
        code TEXT NOT NULL,
        description TEXT NOT NULL,
        PRIMARY KEY (serial_no, phone)
    );
    CREATE INDEX pending_receipts_by_time ON pending_receipts(receive_time);
    CREATE TABLE device_tags (
        app_id BIGINT NOT NULL,
        token TEXT NOT NULL,
        tag TEXT NOT NULL,
        added_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (app_id, token, tag)
    );
    CREATE TABLE app_tags (
        app_id BIGINT NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (app_id, tag)
    );
    CREATE TABLE broadcasts (
        push BIGINT PRIMARY KEY,
        app_id BIGINT NOT NULL,
        cursor TEXT NOT NULL DEFAULT '',
        next_seq INTEGER NOT NULL DEFAULT 0,
        delivered_seq INTEGER NOT NULL DEFAULT 0,
        done BOOLEAN NOT NULL DEFAULT false,
        owner TEXT NOT NULL DEFAULT '',
        lease_until DOUBLE PRECISION
    );
    -- Claims, and the fallback queries' "not while its targets are still being found".
    CREATE INDEX broadcasts_open ON broadcasts(push) WHERE NOT done;
    """,
    # 6: as SQLite's 8: what the console reads fast. The title in a column, in the app's time index
    # (a title search reads the index, not every spec); counters per (app, 15-minute slot of
    # accepted_at), kept by statement triggers for pushes, SMS records and deleted targets, and
    # by the event writes for arrivals and clicks. Each backend adds to its own row (shard =
    # pg_backend_pid()), so concurrent writers never wait on one another's counter row; readers
    # sum the shards.
    """
    ALTER TABLE pushes ADD COLUMN title TEXT NOT NULL DEFAULT '';
    UPDATE pushes SET title = coalesce(spec::jsonb->>'title', '');
    DROP INDEX pushes_by_app_time;
    CREATE INDEX pushes_by_app_time ON pushes(app_id, accepted_at, id) INCLUDE (push_id, title);
    CREATE TABLE push_stats (
        app_id BIGINT NOT NULL,
        slot BIGINT NOT NULL,  -- trunc(accepted_at / 900) of the pushes counted
        shard INTEGER NOT NULL,
        pushes BIGINT NOT NULL DEFAULT 0,
        targets BIGINT NOT NULL DEFAULT 0,
        pending BIGINT NOT NULL DEFAULT 0,
        arrived BIGINT NOT NULL DEFAULT 0,
        clicked BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, slot, shard)
    );
    CREATE TABLE sms_stats (
        app_id BIGINT NOT NULL,
        slot BIGINT NOT NULL,
        status SMALLINT NOT NULL,
        shard INTEGER NOT NULL,
        records BIGINT NOT NULL DEFAULT 0,
        fee BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, slot, status, shard)
    );
    INSERT INTO push_stats (app_id, slot, shard, pushes, targets, pending)
        SELECT app_id, trunc(accepted_at / 900)::bigint, 0, count(*), sum(target_count),
            count(*) FILTER (WHERE fallback_state = 2)
        FROM pushes GROUP BY 1, 2;
    INSERT INTO push_stats AS s (app_id, slot, shard, arrived, clicked)
        SELECT p.app_id, trunc(p.accepted_at / 900)::bigint, 0, count(coalesce(t.arrived_at, t.clicked_at)),
            count(t.clicked_at)
        FROM pushes p JOIN targets t ON t.push = p.id GROUP BY 1, 2
        ON CONFLICT (app_id, slot, shard) DO UPDATE SET arrived = excluded.arrived, clicked = excluded.clicked;
    INSERT INTO sms_stats (app_id, slot, status, shard, records, fee)
        SELECT p.app_id, trunc(p.accepted_at / 900)::bigint, r.status, 0, count(*), sum(r.fee)
        FROM pushes p JOIN sms_records r ON r.push = p.id GROUP BY 1, 2, 3;

    CREATE FUNCTION push_stats_pushes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO push_stats AS s (app_id, slot, shard, pushes, targets, pending, arrived, clicked)
                SELECT app_id, trunc(accepted_at / 900)::bigint, pg_backend_pid(), count(*), sum(target_count),
                    count(*) FILTER (WHERE fallback_state = 2), 0, 0
                FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
                ON CONFLICT (app_id, slot, shard) DO UPDATE SET pushes = s.pushes + excluded.pushes, targets = s.targets + excluded.targets, pending = s.pending + excluded.pending, arrived = s.arrived + excluded.arrived, clicked = s.clicked + excluded.clicked;
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO push_stats AS s (app_id, slot, shard, pushes, targets, pending, arrived, clicked)
                SELECT n.app_id, trunc(n.accepted_at / 900)::bigint, pg_backend_pid(), 0,
                    sum(n.target_count - o.target_count),
                    sum((n.fallback_state = 2)::int - (o.fallback_state = 2)::int), 0, 0
                FROM new_rows n JOIN old_rows o ON o.id = n.id
                WHERE n.target_count <> o.target_count OR (n.fallback_state = 2) <> (o.fallback_state = 2)
                GROUP BY 1, 2 ORDER BY 1, 2
                ON CONFLICT (app_id, slot, shard) DO UPDATE SET pushes = s.pushes + excluded.pushes, targets = s.targets + excluded.targets, pending = s.pending + excluded.pending, arrived = s.arrived + excluded.arrived, clicked = s.clicked + excluded.clicked;
        ELSE
            -- A push deleted before its targets and records takes their counts with it (their
            -- triggers then find no push).
            INSERT INTO push_stats AS s (app_id, slot, shard, pushes, targets, pending, arrived, clicked)
                SELECT o.app_id, trunc(o.accepted_at / 900)::bigint, pg_backend_pid(), -count(*),
                    -sum(o.target_count), -count(*) FILTER (WHERE o.fallback_state = 2),
                    -coalesce(sum((SELECT count(coalesce(arrived_at, clicked_at)) FROM targets WHERE push = o.id)), 0),
                    -coalesce(sum((SELECT count(clicked_at) FROM targets WHERE push = o.id)), 0)
                FROM old_rows o GROUP BY 1, 2 ORDER BY 1, 2
                ON CONFLICT (app_id, slot, shard) DO UPDATE SET pushes = s.pushes + excluded.pushes, targets = s.targets + excluded.targets, pending = s.pending + excluded.pending, arrived = s.arrived + excluded.arrived, clicked = s.clicked + excluded.clicked;
            INSERT INTO sms_stats AS s (app_id, slot, status, shard, records, fee)
                SELECT o.app_id, trunc(o.accepted_at / 900)::bigint, r.status, pg_backend_pid(), -count(*), -sum(r.fee)
                FROM old_rows o JOIN sms_records r ON r.push = o.id GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (app_id, slot, status, shard) DO UPDATE SET records = s.records + excluded.records, fee = s.fee + excluded.fee;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER push_stats_insert AFTER INSERT ON pushes REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION push_stats_pushes();
    CREATE TRIGGER push_stats_update AFTER UPDATE ON pushes REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION push_stats_pushes();
    CREATE TRIGGER push_stats_delete AFTER DELETE ON pushes REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION push_stats_pushes();

    CREATE FUNCTION push_stats_targets_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO push_stats AS s (app_id, slot, shard, pushes, targets, pending, arrived, clicked)
            SELECT p.app_id, trunc(p.accepted_at / 900)::bigint, pg_backend_pid(), 0, 0, 0,
                -count(coalesce(o.arrived_at, o.clicked_at)), -count(o.clicked_at)
            FROM old_rows o JOIN pushes p ON p.id = o.push
            WHERE o.arrived_at IS NOT NULL OR o.clicked_at IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (app_id, slot, shard) DO UPDATE SET pushes = s.pushes + excluded.pushes, targets = s.targets + excluded.targets, pending = s.pending + excluded.pending, arrived = s.arrived + excluded.arrived, clicked = s.clicked + excluded.clicked;
        RETURN NULL;
    END $$;
    CREATE TRIGGER push_stats_targets_delete AFTER DELETE ON targets REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION push_stats_targets_deleted();

    CREATE FUNCTION sms_stats_records() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO sms_stats AS s (app_id, slot, status, shard, records, fee)
                SELECT p.app_id, trunc(p.accepted_at / 900)::bigint, n.status, pg_backend_pid(), count(*), sum(n.fee)
                FROM new_rows n JOIN pushes p ON p.id = n.push GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (app_id, slot, status, shard) DO UPDATE SET records = s.records + excluded.records, fee = s.fee + excluded.fee;
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO sms_stats AS s (app_id, slot, status, shard, records, fee)
                SELECT p.app_id, trunc(p.accepted_at / 900)::bigint, c.status, pg_backend_pid(), sum(c.n), sum(c.fee)
                FROM (SELECT o.push, o.status, -1 AS n, -o.fee AS fee FROM old_rows o JOIN new_rows n ON n.id = o.id
                          WHERE n.status <> o.status OR n.fee <> o.fee
                      UNION ALL
                      SELECT n.push, n.status, 1, n.fee FROM old_rows o JOIN new_rows n ON n.id = o.id
                          WHERE n.status <> o.status OR n.fee <> o.fee) c
                JOIN pushes p ON p.id = c.push GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (app_id, slot, status, shard) DO UPDATE SET records = s.records + excluded.records, fee = s.fee + excluded.fee;
        ELSE
            INSERT INTO sms_stats AS s (app_id, slot, status, shard, records, fee)
                SELECT p.app_id, trunc(p.accepted_at / 900)::bigint, o.status, pg_backend_pid(), -count(*), -sum(o.fee)
                FROM old_rows o JOIN pushes p ON p.id = o.push GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                ON CONFLICT (app_id, slot, status, shard) DO UPDATE SET records = s.records + excluded.records, fee = s.fee + excluded.fee;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER sms_stats_insert AFTER INSERT ON sms_records REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sms_stats_records();
    CREATE TRIGGER sms_stats_update AFTER UPDATE ON sms_records REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sms_stats_records();
    CREATE TRIGGER sms_stats_delete AFTER DELETE ON sms_records REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION sms_stats_records();
    """,
]


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Apply the migrations not yet applied, each in its own transaction; return the version.
    `conn` is in autocommit mode."""
    for version in range(1, len(MIGRATIONS) + 1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            row = await cur.fetchone()
            current = row[0] if row else 0
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"database schema version {current} is newer than this pushreach ({len(MIGRATIONS)})"
                )
            if current >= version:
                continue
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return len(MIGRATIONS)
