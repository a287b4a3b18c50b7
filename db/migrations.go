package db

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; PRAGMA user_version records how many have
// run. Never edit one that has shipped: append a new one.
var migrations = []string{
	// 1: extensions and their devices.
	`CREATE TABLE extensions (
		extension     TEXT PRIMARY KEY,
		display_name  TEXT NOT NULL DEFAULT '',
		realm         TEXT NOT NULL,
		ha1_md5       TEXT NOT NULL,
		ha1_sha256    TEXT NOT NULL,
		pbx_username  TEXT NOT NULL DEFAULT '',
		pbx_password  TEXT NOT NULL DEFAULT '',
		pbx_registrar TEXT NOT NULL DEFAULT '',
		created_at    INTEGER NOT NULL,
		updated_at    INTEGER NOT NULL
	);
	CREATE TABLE devices (
		id            INTEGER PRIMARY KEY,
		extension     TEXT NOT NULL REFERENCES extensions(extension) ON DELETE CASCADE,
		provider      TEXT NOT NULL,
		token         TEXT NOT NULL,
		topic         TEXT NOT NULL DEFAULT '',
		project_id    TEXT NOT NULL DEFAULT '',
		instance      TEXT NOT NULL DEFAULT '',
		registered_at INTEGER NOT NULL,
		last_seen_at  INTEGER NOT NULL,
		last_push_at  INTEGER NOT NULL DEFAULT 0,
		last_error    TEXT NOT NULL DEFAULT '',
		UNIQUE (provider, token)
	);
	CREATE INDEX devices_by_extension ON devices (extension, last_seen_at);`,

	// 2: the call log and the push attempts of each call.
	`CREATE TABLE calls (
		seq               INTEGER PRIMARY KEY,
		id                TEXT NOT NULL UNIQUE,
		sip_call_id       TEXT NOT NULL,
		extension         TEXT NOT NULL,
		caller_name       TEXT NOT NULL DEFAULT '',
		caller_number     TEXT NOT NULL DEFAULT '',
		invite_at         INTEGER NOT NULL,
		push_at           INTEGER NOT NULL DEFAULT 0,
		first_register_at INTEGER NOT NULL DEFAULT 0,
		answer_at         INTEGER NOT NULL DEFAULT 0,
		end_at            INTEGER NOT NULL DEFAULT 0,
		outcome           TEXT NOT NULL DEFAULT 'ringing',
		status            INTEGER NOT NULL DEFAULT 0,
		answered_by       INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX calls_by_extension ON calls (extension, seq);
	CREATE TABLE push_attempts (
		id         INTEGER PRIMARY KEY,
		call_id    TEXT NOT NULL,
		device_id  INTEGER NOT NULL,
		provider   TEXT NOT NULL,
		type       TEXT NOT NULL,
		sent_at    INTEGER NOT NULL,
		latency_us INTEGER NOT NULL,
		outcome    TEXT NOT NULL,
		reason     TEXT NOT NULL DEFAULT '',
		status     INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX push_attempts_by_call ON push_attempts (call_id);`,

	// 3: settings that must survive restarts (signing secrets).
	`CREATE TABLE settings (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);`,

	// 4: register mode: the state of each extension's registration to the
	// PBX, written by the daemon so that the CLI can show it.
	`CREATE TABLE registrations (
		extension       TEXT PRIMARY KEY REFERENCES extensions(extension) ON DELETE CASCADE,
		status          TEXT NOT NULL,
		registrar       TEXT NOT NULL DEFAULT '',
		expires_at      INTEGER NOT NULL DEFAULT 0,
		last_success_at INTEGER NOT NULL DEFAULT 0,
		last_error      TEXT NOT NULL DEFAULT '',
		last_error_at   INTEGER NOT NULL DEFAULT 0,
		next_attempt_at INTEGER NOT NULL DEFAULT 0,
		updated_at      INTEGER NOT NULL
	);`,

	// 5: a count of changes to extensions and devices, which the daemon
	// watches to drop its in-memory directory when another process (the
	// CLI) changed them. Sightings and push stamps (last_seen_at,
	// last_push_at, last_error) do not count.
	`CREATE TABLE directory_version (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		n  INTEGER NOT NULL
	);
	INSERT INTO directory_version (id, n) VALUES (1, 0);
	CREATE TRIGGER extensions_inserted AFTER INSERT ON extensions
		BEGIN UPDATE directory_version SET n = n + 1; END;
	CREATE TRIGGER extensions_updated AFTER UPDATE ON extensions
		BEGIN UPDATE directory_version SET n = n + 1; END;
	CREATE TRIGGER extensions_deleted AFTER DELETE ON extensions
		BEGIN UPDATE directory_version SET n = n + 1; END;
	CREATE TRIGGER devices_inserted AFTER INSERT ON devices
		BEGIN UPDATE directory_version SET n = n + 1; END;
	CREATE TRIGGER devices_updated AFTER UPDATE OF extension, provider, token, topic, project_id, instance ON devices
		BEGIN UPDATE directory_version SET n = n + 1; END;
	CREATE TRIGGER devices_deleted AFTER DELETE ON devices
		BEGIN UPDATE directory_version SET n = n + 1; END;`,
}

// SchemaVersion is the version a fully migrated database has.
var SchemaVersion = len(migrations)

// migrate applies the migrations the database has not seen, each in its own
// transaction with the version bump, so a crash leaves a consistent version.
func migrate(ctx context.Context, db *sql.DB, upTo int) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this callwake (%d): upgrade callwake", version, len(migrations))
	}
	for v := version; v < upTo; v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	return nil
}
