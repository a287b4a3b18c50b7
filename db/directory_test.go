package db

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

func lookupTokens(t *testing.T, s *Store, ext string) []string {
	t.Helper()
	e, err := s.Lookup(context.Background(), ext)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range e.Devices {
		out = append(out, d.Token[:4]+d.Token[60:])
	}
	return out
}

// The directory follows this Store's writes at once.
func TestDirectoryFollowsOwnWrites(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if _, err := s.Lookup(ctx, "1001"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown extension: %v, want ErrNotFound", err)
	}
	addExtension(t, s, "1001")
	if got := lookupTokens(t, s, "1001"); len(got) != 0 {
		t.Fatalf("devices %v, want none", got)
	}
	up, err := s.UpsertDevice(ctx, apnsDevice("1001", 1), 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := lookupTokens(t, s, "1001"); len(got) != 1 {
		t.Fatalf("after a new device: %v", got)
	}
	// A sighting leaves the entry as it is: same pointer.
	before, _ := s.Lookup(ctx, "1001")
	if _, err := s.UpsertDevice(ctx, apnsDevice("1001", 1), 5); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Lookup(ctx, "1001"); after != before {
		t.Error("a sighting reloaded the entry")
	}
	if _, err := s.UpdateExtension(ctx, "1001", func(e *Extension) error { e.SetPassword("example.com", "new"); return nil }); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Lookup(ctx, "1001"); e.Extension.HA1MD5 != HA1("MD5", "1001", "example.com", "new") {
		t.Error("password change not seen")
	}
	if err := s.DeleteDevice(ctx, "1001", up.Device.ID); err != nil {
		t.Fatal(err)
	}
	if got := lookupTokens(t, s, "1001"); len(got) != 0 {
		t.Errorf("after deleting: %v", got)
	}
	if _, err := s.UpsertDevice(ctx, apnsDevice("1001", 2), 5); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.DeleteDeviceByToken(ctx, "1001", ProviderAPNs, apnsDevice("1001", 2).Token); err != nil || !removed {
		t.Fatal(removed, err)
	}
	if got := lookupTokens(t, s, "1001"); len(got) != 0 {
		t.Errorf("after logout: %v", got)
	}
	up, _ = s.UpsertDevice(ctx, apnsDevice("1001", 3), 5)
	lookupTokens(t, s, "1001")
	if err := s.RemoveDevice(ctx, up.Device.ID, "Unregistered"); err != nil {
		t.Fatal(err)
	}
	if got := lookupTokens(t, s, "1001"); len(got) != 0 {
		t.Errorf("after a dead token: %v", got)
	}
	// A token moving to another extension leaves the first one's entry.
	addExtension(t, s, "1002")
	s.UpsertDevice(ctx, apnsDevice("1001", 4), 5)
	lookupTokens(t, s, "1001")
	s.UpsertDevice(ctx, Device{Extension: "1002", Provider: ProviderAPNs, Token: apnsDevice("", 4).Token, Topic: "com.example.app.voip"}, 5)
	if got := lookupTokens(t, s, "1001"); len(got) != 0 {
		t.Errorf("1001 after its token moved: %v", got)
	}
	if err := s.DeleteExtension(ctx, "1002"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "1002"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted extension: %v", err)
	}
}

// Another process's writes (the CLI) reach the directory when it checks;
// sightings and push stamps do not count as changes.
func TestDirectoryFollowsOtherProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.db")
	ctx := context.Background()
	daemon, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()
	cli, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	addExtension(t, cli, "1001")
	up, _ := cli.UpsertDevice(ctx, apnsDevice("1001", 1), 5)
	daemon.checkDirectory(ctx)
	entry, err := daemon.Lookup(ctx, "1001")
	if err != nil || len(entry.Devices) != 1 {
		t.Fatalf("entry %+v, %v", entry, err)
	}

	// Not changes: a sighting, a push stamp.
	cli.UpsertDevice(ctx, apnsDevice("1001", 1), 5)
	cli.RecordPushAttempt(ctx, PushAttempt{CallID: "c", DeviceID: up.Device.ID, Provider: "apns", Outcome: "delivered"})
	cli.Flush(ctx)
	daemon.checkDirectory(ctx)
	if again, _ := daemon.Lookup(ctx, "1001"); again != entry {
		t.Error("a sighting or push stamp reloaded the directory")
	}

	if err := cli.DeleteDevice(ctx, "1001", up.Device.ID); err != nil {
		t.Fatal(err)
	}
	if e, _ := daemon.Lookup(ctx, "1001"); len(e.Devices) != 1 {
		t.Fatal("changed before the check: the test proves nothing")
	}
	daemon.checkDirectory(ctx)
	if e, _ := daemon.Lookup(ctx, "1001"); len(e.Devices) != 0 {
		t.Errorf("devices %+v after the CLI removed the device", e.Devices)
	}
}

// Lookups racing writes never keep what a write replaced: once the writes
// are over, every entry is what the file says.
func TestDirectoryLookupsRacingWrites(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	exts := []string{"1001", "1002", "1003"}
	for _, x := range exts {
		addExtension(t, s, x)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 30 {
				x := exts[(w+i)%len(exts)]
				d := apnsDevice(x, w*1000+i)
				d.Token = fmt.Sprintf("%064x", w*1000+i)
				if _, err := s.UpsertDevice(ctx, d, 3); err != nil {
					t.Error(err)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := s.Lookup(ctx, exts[i%len(exts)]); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, x := range exts {
		e, _ := s.Lookup(ctx, x)
		stored, _ := s.ListDevices(ctx, x)
		if len(e.Devices) != len(stored) {
			t.Errorf("%s: directory has %d devices, the file %d", x, len(e.Devices), len(stored))
			continue
		}
		for i := range stored {
			if e.Devices[i].ID != stored[i].ID {
				t.Errorf("%s: directory %d, file %d", x, e.Devices[i].ID, stored[i].ID)
			}
		}
	}
}
