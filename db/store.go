// Package db is callwake's embedded store: extensions, their devices, the call
// log and push attempts, in one SQLite file (modernc.org/sqlite, no cgo).
//
// The file is opened in WAL mode with a busy timeout and immediate write
// transactions, so that the CLI can change it while the daemon runs.
package db

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Errors the store returns; callers map them to HTTP and CLI answers.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// Store is the database. It is safe for concurrent use.
type Store struct {
	db  *sql.DB
	now func() time.Time
}

// Option changes how Open sets up the store.
type Option func(*Store)

// WithClock sets the clock used for timestamps (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Open opens (creating if needed) the database at path and migrates it to the
// latest schema.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	return open(ctx, path, SchemaVersion, opts...)
}

func open(ctx context.Context, path string, version int, opts ...Option) (*Store, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// Immediate transactions take the write lock at BEGIN, so two writers
	// queue on the busy timeout instead of one failing on lock upgrade.
	q.Set("_txlock", "immediate")
	sqlDB, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	s := &Store{db: sqlDB, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	if err := migrate(ctx, sqlDB, version); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("migrating database %s: %w", path, err)
	}
	return s, nil
}

// Close checkpoints the WAL and closes the database.
func (s *Store) Close() error {
	_, _ = s.db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return s.db.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Secret returns the named secret, creating a random one the first time, so
// that signatures (decline URLs, nonces) stay valid across restarts.
func (s *Store) Secret(ctx context.Context, name string) ([]byte, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("generating secret %s: %w", name, err)
	}
	key := "secret." + name
	if _, err := s.db.ExecContext(ctx,
		`INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`,
		key, hex.EncodeToString(buf)); err != nil {
		return nil, fmt.Errorf("storing secret %s: %w", name, err)
	}
	var value string
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&value); err != nil {
		return nil, fmt.Errorf("reading secret %s: %w", name, err)
	}
	return hex.DecodeString(value)
}

func (s *Store) millis() int64 { return s.now().UnixMilli() }

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func isUniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// inTx runs fn in a write transaction.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
