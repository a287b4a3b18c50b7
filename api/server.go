// Package api is callwake's HTTP side: the provisioning API, device
// registration over HTTP, health and metrics. Every error is JSON
// {"error": "..."} with a fitting status.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/callwake/callwake/db"
	"github.com/callwake/callwake/push"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// PushTester sends a test push to every device of an extension; with wait
// false the call_cancelled that ends the test follows in the background.
type PushTester interface {
	TestPush(ctx context.Context, ext string, wait bool) ([]push.Result, error)
}

// HealthChecker reports the health of one component; a non-nil error makes
// /healthz answer 503.
type HealthChecker func(ctx context.Context) (detail any, err error)

// Options configure the API server.
type Options struct {
	Store           *db.Store
	AdminToken      string
	Realm           string // digest realm new passwords are stored for
	MaxDevices      int
	PushTester      PushTester // nil: test-push answers 503
	Health          map[string]HealthChecker
	Gatherer        prometheus.Gatherer // for /metrics; nil: default registry
	Logger          *slog.Logger
	ExtraRoutes     map[string]http.Handler // more routes (e.g. decline URLs), by ServeMux pattern
	ExtensionChange func(ext string)        // called after an extension is added, changed or removed
}

// Server serves the API.
type Server struct {
	opts     Options
	log      *slog.Logger
	adminSum [32]byte
	mux      *http.ServeMux
}

// New builds the API server.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.DefaultGatherer
	}
	if opts.MaxDevices <= 0 {
		opts.MaxDevices = 5
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "api"), mux: http.NewServeMux()}
	s.adminSum = sha256.Sum256([]byte(opts.AdminToken))

	// Methods are dispatched inside the handlers so that a wrong method gets
	// a JSON 405 too.
	s.mux.HandleFunc("/api/v1/extensions", s.admin(methods{http.MethodGet: s.listExtensions, http.MethodPost: s.createExtension}))
	s.mux.HandleFunc("/api/v1/extensions/{ext}", s.admin(methods{
		http.MethodGet: s.getExtension, http.MethodPatch: s.patchExtension, http.MethodDelete: s.deleteExtension}))
	s.mux.HandleFunc("/api/v1/extensions/{ext}/devices", s.admin(methods{http.MethodGet: s.listDevices}))
	s.mux.HandleFunc("/api/v1/extensions/{ext}/devices/{id}", s.admin(methods{http.MethodDelete: s.deleteDevice}))
	s.mux.HandleFunc("/api/v1/extensions/{ext}/test-push", s.admin(methods{http.MethodPost: s.testPush}))
	s.mux.HandleFunc("/api/v1/calls", s.admin(methods{http.MethodGet: s.listCalls}))
	s.mux.HandleFunc("/api/v1/devices", methods{http.MethodPost: s.registerDevice}.serve)
	s.mux.HandleFunc("/healthz", methods{http.MethodGet: s.healthz}.serve)
	s.mux.Handle("/metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	// Profiles under load, behind the admin token like the rest of /api.
	s.mux.HandleFunc("/debug/pprof/", s.adminAny(pprof.Index))
	s.mux.HandleFunc("/debug/pprof/profile", s.adminAny(pprof.Profile))
	s.mux.HandleFunc("/debug/pprof/trace", s.adminAny(pprof.Trace))
	for pattern, h := range opts.ExtraRoutes {
		s.mux.Handle(pattern, h)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	s.mux.ServeHTTP(w, r)
}

type methods map[string]http.HandlerFunc

func (m methods) serve(w http.ResponseWriter, r *http.Request) {
	h, ok := m[r.Method]
	if !ok {
		allowed := make([]string, 0, len(m))
		for k := range m {
			allowed = append(allowed, k)
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method %s not allowed here", r.Method)
		return
	}
	h(w, r)
}

// adminAny is admin for a handler that takes any method.
func (s *Server) adminAny(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(w, r) {
			h(w, r)
		}
	}
}

// admin checks the bearer token in constant time before the handler runs.
func (s *Server) admin(m methods) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(w, r) {
			m.serve(w, r)
		}
	}
}

// authorized checks the admin bearer token and answers 401 when it fails.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.AdminToken == "" {
		writeError(w, http.StatusUnauthorized, "the admin API is disabled: set http.admin_token or CALLWAKE_ADMIN_TOKEN")
		return false
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(token))
	if !ok || subtle.ConstantTimeCompare(sum[:], s.adminSum[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="callwake"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// errUnprocessable marks a request that parsed but is not valid (422).
type errUnprocessable struct{ error }

// Unprocessable marks the error as bad input, for callers outside the API.
func (errUnprocessable) Unprocessable() {}

// decode reads a JSON body strictly; it writes the error answer itself and
// reports whether the handler should go on.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err == nil {
		_, err = io.Copy(io.Discard, r.Body)
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "request body is empty: send a JSON object")
	default:
		writeError(w, http.StatusBadRequest, "bad JSON: %v", err)
	}
	return false
}

// storeError answers an error from the store.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	var invalid errUnprocessable
	switch {
	case errors.Is(err, db.ErrNotFound):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, db.ErrExists):
		writeError(w, http.StatusConflict, "%v", err)
	case errors.As(err, &invalid):
		writeError(w, http.StatusUnprocessableEntity, "%v", invalid.error)
	case errors.Is(err, context.Canceled):
		// The client went away; nothing to answer.
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: %v", err)
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status, code := "ok", http.StatusOK
	checks := map[string]any{}
	dbCheck := map[string]string{"status": "ok"}
	if err := s.opts.Store.Ping(ctx); err != nil {
		dbCheck = map[string]string{"status": "unhealthy", "error": err.Error()}
		status, code = "unhealthy", http.StatusServiceUnavailable
	}
	checks["db"] = dbCheck
	for name, check := range s.opts.Health {
		detail, err := check(ctx)
		if err != nil {
			status, code = "unhealthy", http.StatusServiceUnavailable
		}
		checks[name] = detail
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}
