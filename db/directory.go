package db

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Entry is an extension as INVITEs and REGISTERs need it: its credentials
// and its devices (most recently seen first, as when the entry was loaded).
// Entries are shared: never modify one.
type Entry struct {
	Extension Extension
	Devices   []Device
}

// directory keeps Entries in memory, loaded on first use. The Store drops
// an extension's entry when it writes that extension or its devices; for
// writes by other processes (the CLI, an admin's sqlite3), triggers count
// changes in directory_version and WatchDirectory drops every entry when the
// count moves. Device sightings (last_seen_at) and push stamps are not
// changes: they do not drop entries, and entries do not show them.
type directory struct {
	mu      sync.Mutex
	entries map[string]*Entry
	// epoch moves with every drop; a load that began in another epoch may
	// hold what a write has since changed, and is not kept.
	epoch   uint64
	version int64 // directory_version when WatchDirectory last looked
}

func newDirectory() *directory { return &directory{entries: map[string]*Entry{}} }

func (d *directory) get(ext string) (*Entry, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.entries[ext], d.epoch
}

func (d *directory) put(ext string, e *Entry, epoch uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.epoch == epoch {
		d.entries[ext] = e
	}
}

// forget drops the entries of exts.
func (d *directory) forget(exts ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.epoch++
	for _, ext := range exts {
		delete(d.entries, ext)
	}
}

// forgetAll drops every entry.
func (d *directory) forgetAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.epoch++
	clear(d.entries)
}

// Lookup returns the extension's entry, from memory once loaded;
// ErrNotFound when the extension does not exist (not remembered, so that
// an extension added by the CLI is found at once).
func (s *Store) Lookup(ctx context.Context, ext string) (*Entry, error) {
	e, epoch := s.dir.get(ext)
	if e != nil {
		return e, nil
	}
	x, err := s.GetExtension(ctx, ext)
	if err != nil {
		return nil, err
	}
	devs, err := queryDevices(ctx, s.r, `extension = ? ORDER BY last_seen_at DESC, id DESC`, ext)
	if err != nil {
		return nil, fmt.Errorf("listing devices of %s: %w", ext, err)
	}
	e = &Entry{Extension: x, Devices: devs}
	s.dir.put(ext, e, epoch)
	return e, nil
}

// WatchDirectory makes the directory follow writes by other processes,
// looking every interval until ctx ends. Without it, only this Store's own
// writes are followed.
func (s *Store) WatchDirectory(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.checkDirectory(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkDirectory drops every entry if the extensions or devices changed
// since it last looked. This process's own writes move the count too: they
// cost one reload, as they are rare.
func (s *Store) checkDirectory(ctx context.Context) {
	var v int64
	if err := s.r.QueryRowContext(ctx, `SELECT n FROM directory_version`).Scan(&v); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("reading directory version", "err", err)
			s.dir.forgetAll() // unsure: read from the file until it answers
		}
		return
	}
	s.dir.mu.Lock()
	changed := v != s.dir.version
	s.dir.version = v
	s.dir.mu.Unlock()
	if changed {
		s.dir.forgetAll()
	}
}
