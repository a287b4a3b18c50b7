package db

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testClock ticks one millisecond per call, so "least recently used" is
// well-defined in tests.
type testClock struct{ ms atomic.Int64 }

func (c *testClock) now() time.Time { return time.UnixMilli(1_700_000_000_000 + c.ms.Add(1)) }

func openTest(t *testing.T) *Store {
	t.Helper()
	clock := &testClock{}
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "test.db"), WithClock(clock.now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addExtension(t *testing.T, s *Store, id string) Extension {
	t.Helper()
	e := Extension{Extension: id, DisplayName: "User " + id}
	e.SetPassword("example.com", "pw-"+id)
	out, err := s.CreateExtension(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func apnsDevice(ext string, n int) Device {
	return Device{Extension: ext, Provider: ProviderAPNs, Token: fmt.Sprintf("%064x", n), Topic: "com.example.app.voip"}
}

func schema(t *testing.T, s *Store) string {
	t.Helper()
	rows, err := s.r.Query(`SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, name string
		var sql *string
		if err := rows.Scan(&typ, &name, &sql); err != nil {
			t.Fatal(err)
		}
		b.WriteString(typ + " " + name + "\n")
		if sql != nil {
			b.WriteString(*sql + "\n")
		}
	}
	return b.String()
}

// A database left at any earlier version migrates to the same schema as a
// new one, keeping its data.
func TestMigrationsFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	fresh := openTest(t)
	want := schema(t, fresh)
	for v := 0; v < SchemaVersion; v++ {
		t.Run(fmt.Sprintf("from_v%d", v), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "old.db")
			old, err := open(ctx, path, v)
			if err != nil {
				t.Fatal(err)
			}
			if v >= 1 {
				e := Extension{Extension: "1001"}
				e.SetPassword("r", "p")
				if _, err := old.CreateExtension(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			old.Close()
			s, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := schema(t, s); got != want {
				t.Errorf("schema after migrating from v%d differs:\n%s\nwant:\n%s", v, got, want)
			}
			var version int
			s.r.QueryRow("PRAGMA user_version").Scan(&version)
			if version != SchemaVersion {
				t.Errorf("version %d, want %d", version, SchemaVersion)
			}
			if v >= 1 {
				if _, err := s.GetExtension(ctx, "1001"); err != nil {
					t.Errorf("data lost in migration: %v", err)
				}
			}
		})
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "new.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.w.Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion+1))
	s.Close()
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "newer than this callwake") {
		t.Fatalf("Open = %v, want a newer-schema error", err)
	}
}

func TestExtensionCRUD(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	e := addExtension(t, s, "1001")
	if _, err := s.CreateExtension(ctx, e); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate create: %v, want ErrExists", err)
	}
	if _, err := s.CreateExtension(ctx, Extension{Extension: "bad id"}); err == nil {
		t.Error("invalid id accepted")
	}
	got, err := s.GetExtension(ctx, "1001")
	if err != nil || got.DisplayName != "User 1001" || !got.CheckPassword("pw-1001") || got.CheckPassword("nope") {
		t.Fatalf("GetExtension = %+v, %v", got, err)
	}
	if got.HA1MD5 != HA1("MD5", "1001", "example.com", "pw-1001") {
		t.Error("MD5 HA1 not stored")
	}
	upd, err := s.UpdateExtension(ctx, "1001", func(e *Extension) error { e.DisplayName = "Alice"; return nil })
	if err != nil || upd.DisplayName != "Alice" {
		t.Fatalf("UpdateExtension = %+v, %v", upd, err)
	}
	if _, err := s.UpdateExtension(ctx, "9999", func(*Extension) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("update unknown: %v", err)
	}
	if _, _, err := upsert(s, apnsDevice("1001", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteExtension(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetExtension(ctx, "1001"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if devs, _ := s.ListDevices(ctx, "1001"); len(devs) != 0 {
		t.Errorf("devices survived their extension: %v", devs)
	}
	if err := s.DeleteExtension(ctx, "1001"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func TestSixthDeviceEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	addExtension(t, s, "1001")
	var ids []int64
	for i := 1; i <= 5; i++ {
		d, evicted, err := upsert(s, apnsDevice("1001", i))
		if err != nil || len(evicted) != 0 {
			t.Fatalf("device %d: %v, evicted %v", i, err, evicted)
		}
		ids = append(ids, d.ID)
	}
	// Device 1 registers again: device 2 is now the least recently used.
	if _, _, err := upsert(s, apnsDevice("1001", 1)); err != nil {
		t.Fatal(err)
	}
	_, evicted, err := upsert(s, apnsDevice("1001", 6))
	if err != nil {
		t.Fatal(err)
	}
	if len(evicted) != 1 || evicted[0].ID != ids[1] {
		t.Fatalf("evicted %+v, want device %d", evicted, ids[1])
	}
	devs, _ := s.ListDevices(ctx, "1001")
	if len(devs) != 5 {
		t.Fatalf("%d devices, want 5", len(devs))
	}
}

// Registrations racing from many goroutines never leave more than max devices
// and never fail.
func TestConcurrentRegistrationsKeepTheLimit(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	addExtension(t, s, "1001")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, _, err := upsert(s, apnsDevice("1001", i)); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent upsert: %v", err)
	}
	devs, _ := s.ListDevices(ctx, "1001")
	if len(devs) != 5 {
		t.Fatalf("%d devices after racing registrations, want 5", len(devs))
	}
}

func TestInstanceTiesNewTokenToDevice(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	addExtension(t, s, "1001")
	first := apnsDevice("1001", 1)
	first.Instance = "<urn:uuid:00000000-0000-0000-0000-000000000001>"
	d1, _, err := upsert(s, first)
	if err != nil {
		t.Fatal(err)
	}
	next := apnsDevice("1001", 2)
	next.Instance = first.Instance
	d2, _, err := upsert(s, next)
	if err != nil {
		t.Fatal(err)
	}
	if d2.ID != d1.ID || d2.Token != next.Token {
		t.Fatalf("new token made a new device: %+v vs %+v", d2, d1)
	}
	if devs, _ := s.ListDevices(ctx, "1001"); len(devs) != 1 {
		t.Fatalf("%d devices, want 1", len(devs))
	}
}

func TestTokenMovesToAnotherExtension(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	addExtension(t, s, "1001")
	addExtension(t, s, "1002")
	d1, _, _ := upsert(s, apnsDevice("1001", 7))
	d2, _, err := upsert(s, apnsDevice("1002", 7))
	if err != nil || d2.ID != d1.ID || d2.Extension != "1002" {
		t.Fatalf("moved device = %+v, %v", d2, err)
	}
	if devs, _ := s.ListDevices(ctx, "1001"); len(devs) != 0 {
		t.Errorf("token still on 1001")
	}
}

func TestDeviceValidation(t *testing.T) {
	s := openTest(t)
	addExtension(t, s, "1001")
	bad := []Device{
		{Extension: "1001", Provider: "apns", Token: "abc", Topic: "com.x.voip"},
		{Extension: "1001", Provider: "apns", Token: strings.Repeat("g", 64), Topic: "com.x.voip"},
		{Extension: "1001", Provider: "apns", Token: strings.Repeat("a", 64)},
		{Extension: "1001", Provider: "fcm", Token: ""},
		{Extension: "1001", Provider: "fcm", Token: "has space"},
		{Extension: "1001", Provider: "fcm", Token: strings.Repeat("a", 4097)},
		{Extension: "1001", Provider: "gcm", Token: "x"},
	}
	for _, d := range bad {
		if _, _, err := upsert(s, d); err == nil {
			t.Errorf("accepted %+v", d)
		}
	}
	upper := apnsDevice("1001", 3)
	upper.Token = strings.ToUpper(upper.Token[:10]) + upper.Token[10:]
	d, _, err := upsert(s, upper)
	if err != nil || d.Token != apnsDevice("1001", 3).Token {
		t.Errorf("APNs token not normalised: %+v %v", d, err)
	}
	if _, _, err := upsert(s, apnsDevice("9999", 1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("device for unknown extension: %v", err)
	}
}

func TestDeviceRemoval(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	addExtension(t, s, "1001")
	d, _, _ := upsert(s, apnsDevice("1001", 1))
	if err := s.DeleteDevice(ctx, "1002", d.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete via wrong extension: %v", err)
	}
	removed, err := s.DeleteDeviceByToken(ctx, "1001", "apns", strings.ToUpper(d.Token))
	if err != nil || !removed {
		t.Errorf("DeleteDeviceByToken = %v, %v", removed, err)
	}
	d, _, _ = upsert(s, apnsDevice("1001", 2))
	if err := s.RemoveDevice(ctx, d.ID, "Unregistered"); err != nil {
		t.Fatal(err)
	}
	if devs, _ := s.ListDevices(ctx, "1001"); len(devs) != 0 {
		t.Errorf("devices left: %v", devs)
	}
}

func TestCallLogPagination(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for i := 0; i < 7; i++ {
		c := Call{ID: fmt.Sprintf("call-%d", i), SIPCallID: "sip", Extension: "1001", InviteAt: time.UnixMilli(int64(1000 + i))}
		if err := s.InsertCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := s.GetCall(ctx, "call-3")
	c.Outcome, c.Status, c.EndAt = "timeout", 487, time.UnixMilli(5000)
	if err := s.UpdateCall(ctx, c); err != nil {
		t.Fatal(err)
	}
	page, err := s.ListCalls(ctx, CallQuery{Limit: 3})
	if err != nil || len(page) != 3 || page[0].ID != "call-6" {
		t.Fatalf("first page = %+v, %v", page, err)
	}
	page, _ = s.ListCalls(ctx, CallQuery{Limit: 3, BeforeSeq: page[2].Seq})
	if len(page) != 3 || page[0].ID != "call-3" || page[0].Outcome != "timeout" || page[0].Status != 487 {
		t.Fatalf("second page = %+v", page)
	}
	if _, err := s.GetCall(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetCall unknown: %v", err)
	}
}

func TestSecretIsStable(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	a, err := s.Secret(ctx, "decline")
	if err != nil || len(a) != 32 {
		t.Fatal(err)
	}
	b, _ := s.Secret(ctx, "decline")
	c, _ := s.Secret(ctx, "nonce")
	if string(a) != string(b) || string(a) == string(c) {
		t.Error("secret not stable per name")
	}
}

func TestRegistrationStates(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	addExtension(t, s, "1001")
	addExtension(t, s, "1002")
	exp := time.UnixMilli(1_800_000_000_000).UTC()
	err := s.SaveRegistrations(ctx, []Registration{
		{Extension: "1001", Status: "registered", Registrar: "sip:pbx", ExpiresAt: exp},
		{Extension: "1002", Status: "failing", LastError: "403 Forbidden"},
		{Extension: "9999", Status: "registered"}, // deleted meanwhile: skipped
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.GetRegistration(ctx, "1001")
	if err != nil || r.Status != "registered" || !r.ExpiresAt.Equal(exp) || r.Registrar != "sip:pbx" {
		t.Fatalf("1001 = %+v, %v", r, err)
	}
	if _, err := s.GetRegistration(ctx, "9999"); !errors.Is(err, ErrNotFound) {
		t.Errorf("9999: %v", err)
	}
	// The next save replaces the set: 1002 left register mode.
	if err := s.SaveRegistrations(ctx, []Registration{{Extension: "1001", Status: "failing"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRegistration(ctx, "1002"); !errors.Is(err, ErrNotFound) {
		t.Errorf("1002 kept: %v", err)
	}
}

// upsert registers d with the default limit of five devices.
func upsert(s *Store, d Device) (Device, []Device, error) {
	r, err := s.UpsertDevice(context.Background(), d, 5)
	return r.Device, r.Evicted, err
}

func TestUpsertTellsNewFromKnown(t *testing.T) {
	s := openTest(t)
	addExtension(t, s, "1001")
	first, err := s.UpsertDevice(context.Background(), apnsDevice("1001", 1), 5)
	if err != nil || !first.Created {
		t.Fatalf("first registration: %+v, %v", first, err)
	}
	again, err := s.UpsertDevice(context.Background(), apnsDevice("1001", 1), 5)
	if err != nil || again.Created || again.Device.ID != first.Device.ID {
		t.Fatalf("second registration: %+v, %v", again, err)
	}
}

// Transactions and plain writes race on the one writer connection while
// their statements are first prepared: none may wait for the other forever.
func TestConcurrentWritesDoNotDeadlock(t *testing.T) {
	s := openTest(t)
	addExtension(t, s, "1001")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			if _, err := s.UpsertDevice(ctx, apnsDevice("1001", i), 5); err != nil {
				t.Errorf("upsert: %v", err)
			}
		}(i)
		go func(i int) {
			defer wg.Done()
			if err := s.InsertCall(ctx, Call{ID: fmt.Sprintf("c%d", i), Extension: "1001", InviteAt: time.Now()}); err != nil {
				t.Errorf("insert call: %v", err)
			}
			if _, err := s.GetExtension(ctx, "1001"); err != nil {
				t.Errorf("get: %v", err)
			}
		}(i)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("writes deadlocked")
	}
}
