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
    """,
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
