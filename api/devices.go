package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/callwake/callwake/db"
)

type deviceJSON struct {
	ID           int64      `json:"id"`
	Extension    string     `json:"extension"`
	Provider     string     `json:"provider"`
	Token        string     `json:"token"`
	Topic        string     `json:"topic,omitempty"`
	ProjectID    string     `json:"project_id,omitempty"`
	Instance     string     `json:"instance,omitempty"`
	RegisteredAt time.Time  `json:"registered_at"`
	LastSeenAt   time.Time  `json:"last_seen_at"`
	LastPushAt   *time.Time `json:"last_push_at,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
}

func toDeviceJSON(d db.Device) deviceJSON {
	out := deviceJSON{
		ID: d.ID, Extension: d.Extension, Provider: d.Provider, Token: d.Token, Topic: d.Topic,
		ProjectID: d.ProjectID, Instance: d.Instance, RegisteredAt: d.RegisteredAt,
		LastSeenAt: d.LastSeenAt, LastError: d.LastError,
	}
	if !d.LastPushAt.IsZero() {
		out.LastPushAt = &d.LastPushAt
	}
	return out
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	ext := r.PathValue("ext")
	if _, err := s.opts.Store.GetExtension(r.Context(), ext); err != nil {
		s.storeError(w, r, err)
		return
	}
	devs, err := s.opts.Store.ListDevices(r.Context(), ext)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make([]deviceJSON, 0, len(devs))
	for _, d := range devs {
		out = append(out, toDeviceJSON(d))
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "device id %q is not a number", r.PathValue("id"))
		return
	}
	ext := r.PathValue("ext")
	if err := s.opts.Store.DeleteDevice(r.Context(), ext, id); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.log.Info("device removed", "ext", ext, "device_id", id)
	w.WriteHeader(http.StatusNoContent)
}

// DeviceInput is the body of POST /api/v1/devices.
type DeviceInput struct {
	Provider  string `json:"provider"`
	Token     string `json:"token"`
	Topic     string `json:"topic"`
	ProjectID string `json:"project_id"`
	Instance  string `json:"instance"`
}

// registerDevice registers a push address for the app stacks that do not
// speak SIP until woken. It authenticates with the extension's own
// credentials (HTTP basic), not the admin token.
func (s *Server) registerDevice(w http.ResponseWriter, r *http.Request) {
	user, password, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="callwake"`)
		writeError(w, http.StatusUnauthorized, "use basic auth with <extension>:<password>")
		return
	}
	ext, err := s.opts.Store.GetExtension(r.Context(), user)
	if err != nil && !errors.Is(err, db.ErrNotFound) {
		s.storeError(w, r, err)
		return
	}
	// The same answer for an unknown extension and a wrong password.
	if err != nil || !ext.CheckPassword(password) {
		w.Header().Set("WWW-Authenticate", `Basic realm="callwake"`)
		writeError(w, http.StatusUnauthorized, "wrong extension or password")
		return
	}
	var in DeviceInput
	if !decode(w, r, &in) {
		return
	}
	d := db.Device{Extension: ext.Extension, Provider: in.Provider, Token: in.Token, Topic: in.Topic,
		ProjectID: in.ProjectID, Instance: in.Instance}
	if err := db.ValidateDevice(&d); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	up, err := s.opts.Store.UpsertDevice(r.Context(), d, s.opts.MaxDevices)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	saved := up.Device
	// A refreshed device comes from the store's in-memory directory, with
	// the push stamps of when it was loaded: answer with the row as it is.
	if !up.Created {
		if devs, err := s.opts.Store.ListDevices(r.Context(), ext.Extension); err == nil {
			for _, d := range devs {
				if d.ID == saved.ID {
					saved = d
				}
			}
		}
	}
	evictedIDs := make([]int64, 0, len(up.Evicted))
	for _, e := range up.Evicted {
		evictedIDs = append(evictedIDs, e.ID)
		s.log.Info("device evicted: too many devices", "ext", ext.Extension, "device_id", e.ID)
	}
	status := http.StatusOK
	if up.Created {
		status = http.StatusCreated
	}
	s.log.Info("device registered over HTTP", "ext", ext.Extension, "device_id", saved.ID, "provider", saved.Provider)
	writeJSON(w, status, map[string]any{"device": toDeviceJSON(saved), "evicted": evictedIDs})
}
