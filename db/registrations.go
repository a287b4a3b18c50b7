package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Registration is the state of an extension's registration to the PBX
// (register mode), as the daemon last saw it.
type Registration struct {
	Extension   string
	Status      string // registered, registering, failing, disabled
	Registrar   string
	ExpiresAt   time.Time
	LastSuccess time.Time
	LastError   string
	LastErrorAt time.Time
	NextAttempt time.Time
	UpdatedAt   time.Time
}

// SaveRegistrations writes the given states and deletes the rows of
// extensions not among them, in one transaction.
func (s *Store) SaveRegistrations(ctx context.Context, regs []Registration) error {
	now := s.millis()
	err := s.inTx(ctx, func(tx *txn) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM registrations`); err != nil {
			return err
		}
		for _, r := range regs {
			// An extension deleted meanwhile has no row to refer to.
			if _, err := tx.ExecContext(ctx, `INSERT INTO registrations (extension, status, registrar,
				expires_at, last_success_at, last_error, last_error_at, next_attempt_at, updated_at)
				SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM extensions WHERE extension = ?)`,
				r.Extension, r.Status, r.Registrar, toMillis(r.ExpiresAt), toMillis(r.LastSuccess), r.LastError,
				toMillis(r.LastErrorAt), toMillis(r.NextAttempt), now, r.Extension); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("saving registration states: %w", err)
	}
	return nil
}

// GetRegistration returns the extension's registration state; ErrNotFound
// when register mode does not handle it.
func (s *Store) GetRegistration(ctx context.Context, ext string) (Registration, error) {
	var r Registration
	var expires, success, errAt, next, updated int64
	err := s.r.QueryRowContext(ctx, `SELECT extension, status, registrar, expires_at, last_success_at,
		last_error, last_error_at, next_attempt_at, updated_at FROM registrations WHERE extension = ?`, ext).
		Scan(&r.Extension, &r.Status, &r.Registrar, &expires, &success, &r.LastError, &errAt, &next, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return Registration{}, fmt.Errorf("registration of %s: %w", ext, ErrNotFound)
	}
	if err != nil {
		return Registration{}, fmt.Errorf("reading registration of %s: %w", ext, err)
	}
	r.ExpiresAt, r.LastSuccess, r.LastErrorAt = fromMillis(expires), fromMillis(success), fromMillis(errAt)
	r.NextAttempt, r.UpdatedAt = fromMillis(next), fromMillis(updated)
	return r, nil
}
