package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Device is a phone (an app install) that callwake can push: identified by
// (Provider, Token); Instance (+sip.instance) ties a new token to the device
// it replaces.
type Device struct {
	ID           int64
	Extension    string
	Provider     string // apns | apns.dev | fcm
	Token        string
	Topic        string // APNs: <bundle-id>.voip
	ProjectID    string // FCM project id
	Instance     string
	RegisteredAt time.Time
	LastSeenAt   time.Time // last REGISTER or HTTP registration: the LRU key
	LastPushAt   time.Time
	LastError    string
}

// Push providers.
const (
	ProviderAPNs        = "apns"
	ProviderAPNsSandbox = "apns.dev"
	ProviderFCM         = "fcm"
)

var (
	apnsToken = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// FCM registration tokens are URL-safe base64 with ':' separators.
	fcmToken = regexp.MustCompile(`^[A-Za-z0-9_:\-.]+$`)
	topic    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)
)

// ValidateDevice checks provider, token and topic, and lower-cases an APNs
// token (device tokens are hex, and the same token must be one device).
func ValidateDevice(d *Device) error {
	switch d.Provider {
	case ProviderAPNs, ProviderAPNsSandbox:
		d.Token = strings.ToLower(d.Token)
		if !apnsToken.MatchString(d.Token) {
			return fmt.Errorf("APNs token must be 64 hex characters")
		}
		if !topic.MatchString(d.Topic) {
			return fmt.Errorf("APNs topic must be the app's <bundle-id>.voip")
		}
	case ProviderFCM:
		if len(d.Token) > 4096 || !fcmToken.MatchString(d.Token) {
			return fmt.Errorf("FCM token must be 1-4096 characters of A-Z a-z 0-9 _ - : .")
		}
		if d.ProjectID != "" && !topic.MatchString(d.ProjectID) {
			return fmt.Errorf("FCM project id %q is not valid", d.ProjectID)
		}
	default:
		return fmt.Errorf("provider %q is not one of apns, apns.dev, fcm", d.Provider)
	}
	if len(d.Instance) > 256 {
		return fmt.Errorf("instance is longer than 256 characters")
	}
	return nil
}

const deviceColumns = `id, extension, provider, token, topic, project_id, instance,
	registered_at, last_seen_at, last_push_at, last_error`

func scanDevice(row interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var registered, seen, pushed int64
	err := row.Scan(&d.ID, &d.Extension, &d.Provider, &d.Token, &d.Topic, &d.ProjectID,
		&d.Instance, &registered, &seen, &pushed, &d.LastError)
	d.RegisteredAt, d.LastSeenAt, d.LastPushAt = fromMillis(registered), fromMillis(seen), fromMillis(pushed)
	return d, err
}

func queryDevices(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, where string, args ...any) ([]Device, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeviceUpsert is what UpsertDevice did.
type DeviceUpsert struct {
	Device  Device   // the device as stored
	Created bool     // a new device, not a known one refreshed
	Evicted []Device // devices removed to keep the extension's limit
}

// UpsertDevice records a device registration for d.Extension: the device with
// the same (provider, token) is refreshed, else the extension's device with
// the same instance gets the new token, else a device is added. Then, in the
// same transaction, the extension's least recently seen devices beyond max
// are removed.
func (s *Store) UpsertDevice(ctx context.Context, d Device, max int) (DeviceUpsert, error) {
	if err := ValidateDevice(&d); err != nil {
		return DeviceUpsert{}, err
	}
	// Most registrations are refreshes of a device stored as it is: the
	// sighting goes to the journal, and nothing waits for the writer. An
	// unknown extension, or a failed lookup, is the transaction's to report.
	if e, err := s.Lookup(ctx, d.Extension); err == nil {
		if known, ok := e.device(d); ok {
			known.LastSeenAt, known.LastError = fromMillis(s.millis()), ""
			err := s.journal.write(ctx, journalOp{stampDevice: &deviceStamp{deviceID: known.ID, seen: true,
				seenAt: toMillis(known.LastSeenAt)}})
			if err != nil {
				return DeviceUpsert{}, fmt.Errorf("registering device for %s: %w", d.Extension, err)
			}
			return DeviceUpsert{Device: known}, nil
		}
	}
	// The LRU below must see every sighting.
	if err := s.Flush(ctx); err != nil {
		return DeviceUpsert{}, err
	}
	var evicted []Device
	created := false
	err := s.inTx(ctx, func(tx *txn) error {
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM extensions WHERE extension = ?`, d.Extension).Scan(&exists); err != nil {
			return err
		}
		if exists == 0 {
			return fmt.Errorf("extension %s: %w", d.Extension, ErrNotFound)
		}
		now := s.millis()
		id, err := findDevice(ctx, tx, d)
		if err != nil {
			return err
		}
		if id == 0 {
			created = true
			res, err := tx.ExecContext(ctx, `INSERT INTO devices (extension, provider, token, topic,
				project_id, instance, registered_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				d.Extension, d.Provider, d.Token, d.Topic, d.ProjectID, d.Instance, now, now)
			if err != nil {
				return err
			}
			id, _ = res.LastInsertId()
		} else {
			// A token that moves to another extension (the app logged in as
			// someone else) or an instance with a new token: same row.
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET extension = ?, provider = ?, token = ?,
				topic = ?, project_id = ?, instance = CASE WHEN ? = '' THEN instance ELSE ? END,
				last_seen_at = ?, last_error = '' WHERE id = ?`,
				d.Extension, d.Provider, d.Token, d.Topic, d.ProjectID, d.Instance, d.Instance, now, id); err != nil {
				return err
			}
		}
		rows, err := queryDevices(ctx, tx, `extension = ? AND id != ? ORDER BY last_seen_at DESC, id DESC`, d.Extension, id)
		if err != nil {
			return err
		}
		if keep := max - 1; len(rows) > keep && keep >= 0 {
			for _, old := range rows[keep:] {
				if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = ?`, old.ID); err != nil {
					return err
				}
				evicted = append(evicted, old)
			}
		}
		d, err = scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id))
		return err
	})
	// A token may have moved from another extension: drop them all.
	s.dir.forgetAll()
	if err != nil {
		return DeviceUpsert{}, fmt.Errorf("registering device for %s: %w", d.Extension, err)
	}
	return DeviceUpsert{Device: d, Created: created, Evicted: evicted}, nil
}

// device finds d among the entry's devices, stored exactly as d says (same
// provider, token, topic, project and, when d names one, instance). The
// returned device's push stamps (LastPushAt, LastError) are those of when
// the entry was loaded.
func (e *Entry) device(d Device) (Device, bool) {
	for _, known := range e.Devices {
		if known.Provider == d.Provider && known.Token == d.Token && known.Topic == d.Topic &&
			known.ProjectID == d.ProjectID && (d.Instance == "" || known.Instance == d.Instance) {
			return known, true
		}
	}
	return Device{}, false
}

// findDevice returns the id of the row d updates, or 0 for a new device.
func findDevice(ctx context.Context, tx *txn, d Device) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM devices WHERE provider = ? AND token = ?`, d.Provider, d.Token).Scan(&id)
	if err == nil || !errors.Is(err, sql.ErrNoRows) {
		return id, err
	}
	if d.Instance == "" {
		return 0, nil
	}
	err = tx.QueryRowContext(ctx, `SELECT id FROM devices WHERE extension = ? AND instance = ?
		ORDER BY last_seen_at DESC LIMIT 1`, d.Extension, d.Instance).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return id, err
}

// ListDevices returns the extension's devices, most recently seen first.
func (s *Store) ListDevices(ctx context.Context, ext string) ([]Device, error) {
	if err := s.Flush(ctx); err != nil {
		return nil, err
	}
	out, err := queryDevices(ctx, s.r, `extension = ? ORDER BY last_seen_at DESC, id DESC`, ext)
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", ext, err)
	}
	return out, nil
}

// DeleteDevice removes the extension's device id; ErrNotFound when the
// extension has no such device.
func (s *Store) DeleteDevice(ctx context.Context, ext string, id int64) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM devices WHERE extension = ? AND id = ?`, ext, id)
	s.dir.forget(ext)
	if err != nil {
		return fmt.Errorf("deleting device %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("device %d of %s: %w", id, ext, ErrNotFound)
	}
	return nil
}

// DeleteDeviceByToken removes the extension's device with that token (the
// user logged out: REGISTER Expires 0). It reports whether one was removed.
func (s *Store) DeleteDeviceByToken(ctx context.Context, ext, provider, token string) (bool, error) {
	if provider != ProviderFCM {
		token = strings.ToLower(token)
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM devices WHERE extension = ? AND provider = ? AND token = ?`,
		ext, provider, token)
	s.dir.forget(ext)
	if err != nil {
		return false, fmt.Errorf("deleting device of %s: %w", ext, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// RemoveDevice removes a device whose token the provider declared dead.
func (s *Store) RemoveDevice(ctx context.Context, id int64, reason string) error {
	var ext string
	err := s.w.QueryRowContext(ctx, `DELETE FROM devices WHERE id = ? RETURNING extension`, id).Scan(&ext)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // already gone
	}
	if err != nil {
		return fmt.Errorf("removing device %d (%s): %w", id, reason, err)
	}
	s.dir.forget(ext)
	return nil
}
