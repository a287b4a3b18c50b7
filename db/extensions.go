package db

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Extension is a mobile extension: the user the PBX calls and the phone app
// registers as. Its password is kept only as digest HA1 values.
type Extension struct {
	Extension   string
	DisplayName string
	// Realm is the digest realm the HA1 values were computed for.
	Realm     string
	HA1MD5    string
	HA1SHA256 string
	// PBX credentials for register mode; empty when not used.
	PBXUsername  string
	PBXPassword  string
	PBXRegistrar string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

var extensionID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// ValidateExtensionID checks that id can be a SIP user part and a URL path
// segment: 1-64 of letters, digits and . _ + - , starting with a letter or digit.
func ValidateExtensionID(id string) error {
	if !extensionID.MatchString(id) {
		return fmt.Errorf("extension %q: use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit", id)
	}
	return nil
}

// SetPassword stores the digest HA1 values of password for realm.
func (e *Extension) SetPassword(realm, password string) {
	e.Realm = realm
	e.HA1MD5 = HA1("MD5", e.Extension, realm, password)
	e.HA1SHA256 = HA1("SHA-256", e.Extension, realm, password)
}

// CheckPassword reports whether password is the extension's, in constant time.
func (e *Extension) CheckPassword(password string) bool {
	got := HA1("SHA-256", e.Extension, e.Realm, password)
	return subtle.ConstantTimeCompare([]byte(got), []byte(e.HA1SHA256)) == 1
}

// HA1 is the digest HA1 = H(user:realm:password) in lower-case hex, for
// algorithm "MD5" or "SHA-256" (RFC 8760).
func HA1(algorithm, user, realm, password string) string {
	data := []byte(user + ":" + realm + ":" + password)
	if algorithm == "SHA-256" {
		sum := sha256.Sum256(data)
		return hex.EncodeToString(sum[:])
	}
	sum := md5.Sum(data)
	return hex.EncodeToString(sum[:])
}

const extensionColumns = `extension, display_name, realm, ha1_md5, ha1_sha256,
	pbx_username, pbx_password, pbx_registrar, created_at, updated_at`

func scanExtension(row interface{ Scan(...any) error }) (Extension, error) {
	var e Extension
	var created, updated int64
	err := row.Scan(&e.Extension, &e.DisplayName, &e.Realm, &e.HA1MD5, &e.HA1SHA256,
		&e.PBXUsername, &e.PBXPassword, &e.PBXRegistrar, &created, &updated)
	e.CreatedAt, e.UpdatedAt = fromMillis(created), fromMillis(updated)
	return e, err
}

// CreateExtension adds e; ErrExists when the extension is already there.
func (s *Store) CreateExtension(ctx context.Context, e Extension) (Extension, error) {
	if err := ValidateExtensionID(e.Extension); err != nil {
		return Extension{}, err
	}
	now := s.millis()
	_, err := s.w.ExecContext(ctx, `INSERT INTO extensions (`+extensionColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Extension, e.DisplayName, e.Realm, e.HA1MD5, e.HA1SHA256,
		e.PBXUsername, e.PBXPassword, e.PBXRegistrar, now, now)
	s.dir.forget(e.Extension)
	if isUniqueViolation(err) {
		return Extension{}, fmt.Errorf("extension %s: %w", e.Extension, ErrExists)
	}
	if err != nil {
		return Extension{}, fmt.Errorf("creating extension %s: %w", e.Extension, err)
	}
	e.CreatedAt, e.UpdatedAt = fromMillis(now), fromMillis(now)
	return e, nil
}

// GetExtension returns the extension; ErrNotFound when it does not exist.
func (s *Store) GetExtension(ctx context.Context, ext string) (Extension, error) {
	e, err := scanExtension(s.r.QueryRowContext(ctx,
		`SELECT `+extensionColumns+` FROM extensions WHERE extension = ?`, ext))
	if errors.Is(err, sql.ErrNoRows) {
		return Extension{}, fmt.Errorf("extension %s: %w", ext, ErrNotFound)
	}
	if err != nil {
		return Extension{}, fmt.Errorf("reading extension %s: %w", ext, err)
	}
	return e, nil
}

// ListExtensions returns every extension, ordered by id.
func (s *Store) ListExtensions(ctx context.Context) ([]Extension, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+extensionColumns+` FROM extensions ORDER BY extension`)
	if err != nil {
		return nil, fmt.Errorf("listing extensions: %w", err)
	}
	defer rows.Close()
	var out []Extension
	for rows.Next() {
		e, err := scanExtension(rows)
		if err != nil {
			return nil, fmt.Errorf("listing extensions: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ListPBXAccounts returns the extensions that have PBX credentials: the
// ones register mode registers. Cheap to call often.
func (s *Store) ListPBXAccounts(ctx context.Context) ([]Extension, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+extensionColumns+` FROM extensions
		WHERE pbx_username != '' AND pbx_password != '' ORDER BY extension`)
	if err != nil {
		return nil, fmt.Errorf("listing PBX accounts: %w", err)
	}
	defer rows.Close()
	var out []Extension
	for rows.Next() {
		e, err := scanExtension(rows)
		if err != nil {
			return nil, fmt.Errorf("listing PBX accounts: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// UpdateExtension reads the extension, lets change modify it and writes it
// back, in one transaction. The extension id cannot change.
func (s *Store) UpdateExtension(ctx context.Context, ext string, change func(*Extension) error) (Extension, error) {
	var out Extension
	err := s.inTx(ctx, func(tx *txn) error {
		e, err := scanExtension(tx.QueryRowContext(ctx,
			`SELECT `+extensionColumns+` FROM extensions WHERE extension = ?`, ext))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("extension %s: %w", ext, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := change(&e); err != nil {
			return err
		}
		e.Extension = ext
		now := s.millis()
		_, err = tx.ExecContext(ctx, `UPDATE extensions SET display_name = ?, realm = ?, ha1_md5 = ?,
			ha1_sha256 = ?, pbx_username = ?, pbx_password = ?, pbx_registrar = ?, updated_at = ?
			WHERE extension = ?`,
			e.DisplayName, e.Realm, e.HA1MD5, e.HA1SHA256, e.PBXUsername, e.PBXPassword,
			e.PBXRegistrar, now, ext)
		e.UpdatedAt = fromMillis(now)
		out = e
		return err
	})
	s.dir.forget(ext)
	if err != nil {
		return Extension{}, fmt.Errorf("updating extension %s: %w", ext, err)
	}
	return out, nil
}

// DeleteExtension removes the extension and its devices; the call log stays.
func (s *Store) DeleteExtension(ctx context.Context, ext string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM extensions WHERE extension = ?`, ext)
	s.dir.forget(ext)
	if err != nil {
		return fmt.Errorf("deleting extension %s: %w", ext, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("extension %s: %w", ext, ErrNotFound)
	}
	return nil
}
