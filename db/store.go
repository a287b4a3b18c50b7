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
	"log/slog"
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
//
// Writes go through one connection (w): SQLite has one writer at a time,
// and queueing writers in Go is far cheaper than SQLite's busy handler,
// which sleeps. Reads use a pool (r) that WAL lets run beside the writer.
//
// Two things keep SQLite off the path of calls: the journal, which writes
// call-log rows, push attempts and device sightings in batches from one
// goroutine, and the directory, an in-memory view of extensions and their
// devices for INVITEs and REGISTERs.
type Store struct {
	w   *pool
	r   *pool
	now func() time.Time
	log *slog.Logger

	journal *journal
	dir     *directory
}

// Option changes how Open sets up the store.
type Option func(*Store)

// WithClock sets the clock used for timestamps (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithLogger sets where the store reports writes it could not make.
func WithLogger(log *slog.Logger) Option { return func(s *Store) { s.log = log } }

// Open opens (creating if needed) the database at path and migrates it to the
// latest schema.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	return open(ctx, path, SchemaVersion, opts...)
}

func open(ctx context.Context, path string, version int, opts ...Option) (*Store, error) {
	dsn := func(readOnly bool) string {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "synchronous(NORMAL)")
		if readOnly {
			q.Add("_pragma", "query_only(1)")
		} else {
			// The write lock is taken at BEGIN, so that another process
			// (the CLI) waits on the busy timeout instead of failing on
			// a lock upgrade.
			q.Set("_txlock", "immediate")
		}
		return "file:" + path + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite", dsn(false))
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	s := &Store{w: newPool(w), now: time.Now, log: slog.Default(), dir: newDirectory()}
	for _, o := range opts {
		o(s)
	}
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	if err := migrate(ctx, w, version); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrating database %s: %w", path, err)
	}
	// The read pool opens after the migrations, so it never sees a file
	// without the WAL set up.
	r, err := sql.Open("sqlite", dsn(true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	s.r = newPool(r)
	s.journal = newJournal(s, s.log.With("component", "db"))
	return s, nil
}

// Close writes what the journal holds, checkpoints the WAL and closes the
// database.
func (s *Store) Close() error {
	s.journal.close()
	rerr := s.r.Close()
	_, _ = s.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return errors.Join(rerr, s.w.Close())
}

// Flush waits until every call-log row, push attempt and device sighting
// written so far is committed. The Store's own reads of those tables flush
// first; call it before reading the file another way.
func (s *Store) Flush(ctx context.Context) error { return s.journal.flush(ctx) }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// Secret returns the named secret, creating a random one the first time, so
// that signatures (decline URLs, nonces) stay valid across restarts.
func (s *Store) Secret(ctx context.Context, name string) ([]byte, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("generating secret %s: %w", name, err)
	}
	key := "secret." + name
	if _, err := s.w.ExecContext(ctx,
		`INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`,
		key, hex.EncodeToString(buf)); err != nil {
		return nil, fmt.Errorf("storing secret %s: %w", name, err)
	}
	var value string
	if err := s.w.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&value); err != nil {
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
func (s *Store) inTx(ctx context.Context, fn func(*txn) error) error {
	tx, err := s.w.begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	err = tx.Commit()
	// The connection is free again: prepare what the transaction met.
	s.w.preparePending(ctx)
	return err
}
