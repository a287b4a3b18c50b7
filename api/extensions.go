package api

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/callwake/callwake/db"
)

// extensionJSON is an extension as the API shows it: never a password.
type extensionJSON struct {
	Extension      string `json:"extension"`
	DisplayName    string `json:"display_name"`
	PBXUsername    string `json:"pbx_username,omitempty"`
	PBXRegistrar   string `json:"pbx_registrar,omitempty"`
	HasPBXPassword bool   `json:"has_pbx_password"`
	Devices        *int   `json:"devices,omitempty"`
	// Registration is register mode's state toward the PBX, when it
	// registers this extension.
	Registration *registrationJSON `json:"registration,omitempty"`
	CreatedAt    time.Time         `json:"created_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
}

type registrationJSON struct {
	Status      string     `json:"status"` // registered, registering, failing, disabled
	Registrar   string     `json:"registrar,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

func toRegistrationJSON(r db.Registration) *registrationJSON {
	return &registrationJSON{Status: r.Status, Registrar: r.Registrar, ExpiresAt: optTime(r.ExpiresAt),
		LastSuccess: optTime(r.LastSuccess), LastError: r.LastError, LastErrorAt: optTime(r.LastErrorAt),
		NextAttempt: optTime(r.NextAttempt), UpdatedAt: r.UpdatedAt}
}

func toExtensionJSON(e db.Extension) extensionJSON {
	return extensionJSON{
		Extension: e.Extension, DisplayName: e.DisplayName, PBXUsername: e.PBXUsername,
		PBXRegistrar: e.PBXRegistrar, HasPBXPassword: e.PBXPassword != "",
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
	}
}

// ExtensionInput is the body of POST and PATCH /api/v1/extensions; on PATCH
// only the fields present change.
type ExtensionInput struct {
	Extension    *string `json:"extension"`
	Password     *string `json:"password"`
	DisplayName  *string `json:"display_name"`
	PBXUsername  *string `json:"pbx_username"`
	PBXPassword  *string `json:"pbx_password"`
	PBXRegistrar *string `json:"pbx_registrar"`
}

// Apply validates the input and writes it into e (realm: for a new password).
func (in ExtensionInput) Apply(e *db.Extension, realm string) error {
	if in.Password != nil {
		if err := validatePassword(*in.Password); err != nil {
			return err
		}
		e.SetPassword(realm, *in.Password)
	}
	set := func(dst *string, src *string, name string, max int) error {
		if src == nil {
			return nil
		}
		if len(*src) > max || strings.ContainsAny(*src, "\r\n\x00") {
			return errUnprocessable{errors.New(name + " is too long or has control characters")}
		}
		*dst = *src
		return nil
	}
	for _, f := range []struct {
		dst  *string
		src  *string
		name string
	}{
		{&e.DisplayName, in.DisplayName, "display_name"},
		{&e.PBXUsername, in.PBXUsername, "pbx_username"},
		{&e.PBXPassword, in.PBXPassword, "pbx_password"},
		{&e.PBXRegistrar, in.PBXRegistrar, "pbx_registrar"},
	} {
		if err := set(f.dst, f.src, f.name, 256); err != nil {
			return err
		}
	}
	if e.PBXRegistrar != "" && !strings.HasPrefix(e.PBXRegistrar, "sip:") && !strings.HasPrefix(e.PBXRegistrar, "sips:") {
		return errUnprocessable{errors.New("pbx_registrar must be a SIP URI such as sip:pbx.example.com")}
	}
	if (e.PBXUsername == "") != (e.PBXPassword == "") {
		return errUnprocessable{errors.New("pbx_username and pbx_password go together")}
	}
	return nil
}

func validatePassword(pw string) error {
	if len(pw) < 8 || len(pw) > 128 {
		return errUnprocessable{errors.New("password must be 8-128 characters")}
	}
	return nil
}

func (s *Server) createExtension(w http.ResponseWriter, r *http.Request) {
	var in ExtensionInput
	if !decode(w, r, &in) {
		return
	}
	if in.Extension == nil || in.Password == nil {
		writeError(w, http.StatusUnprocessableEntity, "extension and password are required")
		return
	}
	if err := db.ValidateExtensionID(*in.Extension); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	e := db.Extension{Extension: *in.Extension}
	if err := in.Apply(&e, s.opts.Realm); err != nil {
		s.storeError(w, r, err)
		return
	}
	e, err := s.opts.Store.CreateExtension(r.Context(), e)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.changed(e.Extension)
	s.log.Info("extension added", "ext", e.Extension)
	writeJSON(w, http.StatusCreated, toExtensionJSON(e))
}

func (s *Server) listExtensions(w http.ResponseWriter, r *http.Request) {
	exts, err := s.opts.Store.ListExtensions(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make([]extensionJSON, 0, len(exts))
	for _, e := range exts {
		out = append(out, toExtensionJSON(e))
	}
	writeJSON(w, http.StatusOK, map[string]any{"extensions": out})
}

func (s *Server) getExtension(w http.ResponseWriter, r *http.Request) {
	e, err := s.opts.Store.GetExtension(r.Context(), r.PathValue("ext"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	devs, err := s.opts.Store.ListDevices(r.Context(), e.Extension)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := toExtensionJSON(e)
	n := len(devs)
	out.Devices = &n
	reg, err := s.opts.Store.GetRegistration(r.Context(), e.Extension)
	switch {
	case err == nil:
		out.Registration = toRegistrationJSON(reg)
	case !errors.Is(err, db.ErrNotFound):
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) patchExtension(w http.ResponseWriter, r *http.Request) {
	var in ExtensionInput
	if !decode(w, r, &in) {
		return
	}
	ext := r.PathValue("ext")
	if in.Extension != nil && *in.Extension != ext {
		writeError(w, http.StatusUnprocessableEntity, "an extension cannot be renamed: delete it and add the new one")
		return
	}
	e, err := s.opts.Store.UpdateExtension(r.Context(), ext, func(e *db.Extension) error {
		return in.Apply(e, s.opts.Realm)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	s.changed(ext)
	s.log.Info("extension changed", "ext", ext)
	writeJSON(w, http.StatusOK, toExtensionJSON(e))
}

func (s *Server) deleteExtension(w http.ResponseWriter, r *http.Request) {
	ext := r.PathValue("ext")
	if err := s.opts.Store.DeleteExtension(r.Context(), ext); err != nil {
		s.storeError(w, r, err)
		return
	}
	s.changed(ext)
	s.log.Info("extension removed", "ext", ext)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) changed(ext string) {
	if s.opts.ExtensionChange != nil {
		s.opts.ExtensionChange(ext)
	}
}
