"""Versioned schema for the SQLite store. Append a new entry; never edit an applied one."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE apps (
        id INTEGER PRIMARY KEY,
        access_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        secret_verifier TEXT NOT NULL,
        created_at REAL NOT NULL,
        sms_credentials BLOB,
        same_content_interval INTEGER NOT NULL DEFAULT 30,
        daily_limit INTEGER NOT NULL DEFAULT 10,
        time_zone TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE pushes (
        id INTEGER PRIMARY KEY,
        app_id INTEGER NOT NULL REFERENCES apps(id),
        push_id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL DEFAULT '',
        spec TEXT NOT NULL,
        accepted_at REAL NOT NULL,
        target_count INTEGER NOT NULL,
        fallback_state INTEGER NOT NULL,
        fallback_due_at REAL,
        fallback_ended_at REAL,
        no_phone_count INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL  -- when handed to the push channel (NULL: redelivered on start)
    );
    CREATE INDEX pushes_by_app_time ON pushes(app_id, accepted_at);
    -- PENDING (2) and FIRING (3): what the wheel is loaded from on start.
    CREATE INDEX pushes_undelivered ON pushes(accepted_at) WHERE delivered_at IS NULL;
    CREATE INDEX pushes_live_fallbacks ON pushes(fallback_due_at) WHERE fallback_state IN (2, 3);
    CREATE TABLE targets (
        push INTEGER NOT NULL,
        token TEXT NOT NULL,
        seq INTEGER NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        arrived_at REAL,
        clicked_at REAL,
        PRIMARY KEY (push, token)
    ) WITHOUT ROWID;
    CREATE INDEX targets_by_seq ON targets(push, seq);
    CREATE TABLE devices (
        app_id INTEGER NOT NULL,
        token TEXT NOT NULL,
        phone TEXT NOT NULL DEFAULT '',
        notifications_enabled INTEGER,
        notification_time REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (app_id, token)
    ) WITHOUT ROWID;
    CREATE TABLE account_tokens (
        app_id INTEGER NOT NULL,
        account TEXT NOT NULL,
        token TEXT NOT NULL,
        bound_at REAL NOT NULL,
        PRIMARY KEY (app_id, account, token)
    ) WITHOUT ROWID;
    CREATE INDEX account_tokens_by_token ON account_tokens(app_id, token);
    CREATE TABLE sms_records (
        id INTEGER PRIMARY KEY,
        app_id INTEGER NOT NULL,
        push INTEGER NOT NULL,
        phone TEXT NOT NULL,
        status INTEGER NOT NULL,
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
        created_at REAL NOT NULL,
        sent_at REAL,
        received_at REAL,
        report_code TEXT NOT NULL DEFAULT '',
        report_description TEXT NOT NULL DEFAULT '',
        UNIQUE (push, phone)
    );
    CREATE INDEX sms_by_phone ON sms_records(app_id, phone, created_at);
    CREATE INDEX sms_by_app_time ON sms_records(app_id, created_at);
    CREATE INDEX sms_by_serial ON sms_records(serial_no) WHERE serial_no != '';
    CREATE INDEX sms_sending ON sms_records(status) WHERE status = 1;
    CREATE TABLE idempotency (
        app_id INTEGER NOT NULL,
        method TEXT NOT NULL,
        request_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        response TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (app_id, method, request_id)
    ) WITHOUT ROWID;
    """,
    # 2: what the retention purge looks rows up by.
    """
    CREATE INDEX pushes_by_time ON pushes(accepted_at);
    CREATE INDEX idempotency_by_time ON idempotency(created_at);
    """,
    # 3: reserved vs dispatched SMS records: when the provider call that carries a record
    # began (the 30 s rule dates an answered-UNKNOWN record from it).
    """
    ALTER TABLE sms_records ADD COLUMN dispatched_at REAL;
    """,
    # 4: per-app receipt keys (services/receipts.py), sealed under the master key.
    """
    CREATE TABLE receipt_keys (
        app_id INTEGER NOT NULL REFERENCES apps(id),
        key_id INTEGER NOT NULL,
        blob BLOB NOT NULL,
        created_at REAL NOT NULL,
        retire_at REAL,
        PRIMARY KEY (app_id, key_id)
    ) WITHOUT ROWID;
    """,
    # 5: delivery receipts that arrived before their record had its serial number (the
    # provider's callback can beat the answer of the call): kept, applied when it is written.
    """
    CREATE TABLE pending_receipts (
        serial_no TEXT NOT NULL,
        phone TEXT NOT NULL,
        delivered INTEGER NOT NULL,
        receive_time REAL NOT NULL,
        code TEXT NOT NULL,
        description TEXT NOT NULL,
        PRIMARY KEY (serial_no, phone)
    ) WITHOUT ROWID;
    CREATE INDEX pending_receipts_by_time ON pending_receipts(receive_time);
    """,
    # 6: device tags, and the resolution of TAG / ALL pushes (one row per such push).
    """
    CREATE TABLE device_tags (
        app_id INTEGER NOT NULL,
        token TEXT NOT NULL,
        tag TEXT NOT NULL,
        added_at REAL NOT NULL,
        PRIMARY KEY (app_id, token, tag)
    ) WITHOUT ROWID;
    CREATE TABLE app_tags (
        app_id INTEGER NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (app_id, tag)
    ) WITHOUT ROWID;
    CREATE TABLE broadcasts (
        push INTEGER PRIMARY KEY,
        app_id INTEGER NOT NULL,
        cursor TEXT NOT NULL DEFAULT '',
        next_seq INTEGER NOT NULL DEFAULT 0,
        delivered_seq INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX broadcasts_open ON broadcasts(push) WHERE done = 0;
    ALTER TABLE apps ADD COLUMN secret_sealed BLOB;
    """,
    # 7: push channels: each app's sealed channel credentials, each device's channel and token
    # state, each target's push outcome (NULL: not yet answered; redelivered after a crash).
    """
    CREATE TABLE channel_credentials (
        app_id INTEGER NOT NULL REFERENCES apps(id),
        channel INTEGER NOT NULL,
        blob BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (app_id, channel)
    ) WITHOUT ROWID;
    ALTER TABLE devices ADD COLUMN channel INTEGER;
    ALTER TABLE devices ADD COLUMN invalid_at REAL;
    ALTER TABLE devices ADD COLUMN invalid_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE targets ADD COLUMN channel INTEGER;
    ALTER TABLE targets ADD COLUMN outcome INTEGER;
    ALTER TABLE targets ADD COLUMN outcome_code TEXT NOT NULL DEFAULT '';
    ALTER TABLE targets ADD COLUMN outcome_at REAL;
    -- Pushes delivered before outcomes were kept went to the log channel, which takes all.
    UPDATE targets SET channel = 9, outcome = 2, outcome_at = (SELECT delivered_at FROM pushes WHERE id = push)
        WHERE push IN (SELECT id FROM pushes WHERE delivered_at IS NOT NULL);
    """,
    # 8: what the console reads fast (store/sqlite/stats.py). Each push's title in a column,
    # in the app's time index, so a title search reads the index, not every spec. Counters per
    # (app, 15-minute slot of accepted_at): the overview sums slots instead of scanning pushes,
    # targets and SMS records. Pushes and SMS records keep theirs by trigger (every path that
    # writes them, retention included); arrivals and clicks are added by the event writes
    # (events.py, one statement per batch), and taken off here when targets are deleted.
    """
    ALTER TABLE pushes ADD COLUMN title TEXT NOT NULL DEFAULT '';
    UPDATE pushes SET title = coalesce(json_extract(spec, '$.title'), '');
    DROP INDEX pushes_by_app_time;
    CREATE INDEX pushes_by_app_time ON pushes(app_id, accepted_at, push_id, title);
    CREATE TABLE push_stats (
        app_id INTEGER NOT NULL,
        slot INTEGER NOT NULL,  -- CAST(accepted_at / 900 AS INTEGER) of the pushes counted
        pushes INTEGER NOT NULL DEFAULT 0,
        targets INTEGER NOT NULL DEFAULT 0,
        pending INTEGER NOT NULL DEFAULT 0,
        arrived INTEGER NOT NULL DEFAULT 0,
        clicked INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, slot)
    ) WITHOUT ROWID;
    CREATE TABLE sms_stats (
        app_id INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        status INTEGER NOT NULL,
        records INTEGER NOT NULL DEFAULT 0,
        fee INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, slot, status)
    ) WITHOUT ROWID;
    INSERT INTO push_stats (app_id, slot, pushes, targets, pending)
        SELECT app_id, CAST(accepted_at / 900 AS INTEGER), count(*), sum(target_count), sum(fallback_state = 2)
        FROM pushes GROUP BY 1, 2;
    INSERT INTO push_stats (app_id, slot, arrived, clicked)
        SELECT p.app_id, CAST(p.accepted_at / 900 AS INTEGER), count(coalesce(t.arrived_at, t.clicked_at)), count(t.clicked_at)
        FROM pushes p JOIN targets t ON t.push = p.id WHERE true GROUP BY 1, 2
        ON CONFLICT (app_id, slot) DO UPDATE SET arrived = excluded.arrived, clicked = excluded.clicked;
    INSERT INTO sms_stats (app_id, slot, status, records, fee)
        SELECT p.app_id, CAST(p.accepted_at / 900 AS INTEGER), r.status, count(*), sum(r.fee)
        FROM pushes p JOIN sms_records r ON r.push = p.id GROUP BY 1, 2, 3;
    CREATE TRIGGER push_stats_insert AFTER INSERT ON pushes BEGIN
        INSERT INTO push_stats (app_id, slot, pushes, targets, pending)
            VALUES (NEW.app_id, CAST(NEW.accepted_at / 900 AS INTEGER), 1, NEW.target_count, NEW.fallback_state = 2)
            ON CONFLICT (app_id, slot) DO UPDATE SET pushes = pushes + 1, targets = targets + excluded.targets,
                pending = pending + excluded.pending;
    END;
    CREATE TRIGGER push_stats_update AFTER UPDATE OF target_count, fallback_state ON pushes
    WHEN NEW.target_count != OLD.target_count OR (NEW.fallback_state = 2) != (OLD.fallback_state = 2) BEGIN
        UPDATE push_stats SET targets = targets + NEW.target_count - OLD.target_count,
            pending = pending + (NEW.fallback_state = 2) - (OLD.fallback_state = 2)
            WHERE app_id = NEW.app_id AND slot = CAST(NEW.accepted_at / 900 AS INTEGER);
    END;
    -- A push deleted before its targets takes their arrivals with it (their trigger then finds no push).
    CREATE TRIGGER push_stats_delete AFTER DELETE ON pushes BEGIN
        UPDATE push_stats SET pushes = pushes - 1, targets = targets - OLD.target_count,
            pending = pending - (OLD.fallback_state = 2),
            arrived = arrived - (SELECT count(coalesce(arrived_at, clicked_at)) FROM targets WHERE push = OLD.id),
            clicked = clicked - (SELECT count(clicked_at) FROM targets WHERE push = OLD.id)
            WHERE app_id = OLD.app_id AND slot = CAST(OLD.accepted_at / 900 AS INTEGER);
        DELETE FROM push_stats WHERE app_id = OLD.app_id AND slot = CAST(OLD.accepted_at / 900 AS INTEGER)
            AND pushes = 0 AND arrived = 0 AND clicked = 0;
        UPDATE sms_stats SET records = records - (SELECT count(*) FROM sms_records r WHERE r.push = OLD.id AND r.status = sms_stats.status),
            fee = fee - (SELECT coalesce(sum(fee), 0) FROM sms_records r WHERE r.push = OLD.id AND r.status = sms_stats.status)
            WHERE app_id = OLD.app_id AND slot = CAST(OLD.accepted_at / 900 AS INTEGER);
    END;
    CREATE TRIGGER push_stats_target_delete AFTER DELETE ON targets
    WHEN OLD.arrived_at IS NOT NULL OR OLD.clicked_at IS NOT NULL BEGIN
        UPDATE push_stats SET arrived = arrived - 1, clicked = clicked - (OLD.clicked_at IS NOT NULL)
            WHERE app_id = (SELECT app_id FROM pushes WHERE id = OLD.push)
            AND slot = (SELECT CAST(accepted_at / 900 AS INTEGER) FROM pushes WHERE id = OLD.push);
    END;
    CREATE TRIGGER sms_stats_insert AFTER INSERT ON sms_records BEGIN
        INSERT INTO sms_stats (app_id, slot, status, records, fee)
            SELECT app_id, CAST(accepted_at / 900 AS INTEGER), NEW.status, 1, NEW.fee FROM pushes WHERE id = NEW.push
            ON CONFLICT (app_id, slot, status) DO UPDATE SET records = records + 1, fee = fee + excluded.fee;
    END;
    CREATE TRIGGER sms_stats_update AFTER UPDATE OF status, fee ON sms_records
    WHEN NEW.status != OLD.status OR NEW.fee != OLD.fee BEGIN
        UPDATE sms_stats SET records = records - 1, fee = fee - OLD.fee
            WHERE app_id = (SELECT app_id FROM pushes WHERE id = OLD.push)
            AND slot = (SELECT CAST(accepted_at / 900 AS INTEGER) FROM pushes WHERE id = OLD.push) AND status = OLD.status;
        INSERT INTO sms_stats (app_id, slot, status, records, fee)
            SELECT app_id, CAST(accepted_at / 900 AS INTEGER), NEW.status, 1, NEW.fee FROM pushes WHERE id = NEW.push
            ON CONFLICT (app_id, slot, status) DO UPDATE SET records = records + 1, fee = fee + excluded.fee;
    END;
    CREATE TRIGGER sms_stats_delete AFTER DELETE ON sms_records BEGIN
        UPDATE sms_stats SET records = records - 1, fee = fee - OLD.fee
            WHERE app_id = (SELECT app_id FROM pushes WHERE id = OLD.push)
            AND slot = (SELECT CAST(accepted_at / 900 AS INTEGER) FROM pushes WHERE id = OLD.push) AND status = OLD.status;
    END;
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations not yet applied, each in its own transaction; return the version."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = row[0] or 0
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this pushreach ({len(MIGRATIONS)})"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """The script's statements: split at the `;` that end one (a trigger's body holds several)."""
    found, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                found.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        found.append(pending)
    return found
