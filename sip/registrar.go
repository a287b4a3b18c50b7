package sip

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Registration intervals, as RFC 3261 10.3 lets a registrar choose them.
const (
	DefaultMinExpires     = 60 * time.Second
	DefaultMaxExpires     = 3600 * time.Second
	DefaultDefaultExpires = 600 * time.Second
)

// StatusPushNotSupported is RFC 8599's answer to a REGISTER naming a push
// service the registrar cannot use.
const StatusPushNotSupported = 555

// registerTimeout bounds the credential lookup and RegisterHandler calls of
// one REGISTER; the phone retransmits meanwhile over UDP.
const registerTimeout = 10 * time.Second

// RegisterHandler is told of binding changes; the bridge implements it.
type RegisterHandler interface {
	// OnRegister is called after authentication, before answering, once
	// per binding the REGISTER adds, refreshes or removes, on the
	// goroutine of the SIP transaction: hand long work off. Returning an
	// error answers 500 with its text (or a *StatusError with its code)
	// and leaves the bindings as they were. The binding table is updated
	// after every call returned nil, so Bindings still shows the old state
	// during the calls.
	OnRegister(ctx context.Context, ev RegisterEvent) error
}

// RegisterEvent is one binding change.
//
// Removed is false when the binding was added (Refresh false) or refreshed
// or updated (Refresh true): Targets are its push targets (the bridge
// upserts their devices) and PreviousTargets those it carried before this
// REGISTER, so a new token can replace an old one even without
// +sip.instance.
//
// Removed is true when the phone removed the binding (expires 0, or
// "Contact: *"): Targets are the devices it logged out, which the bridge
// deletes. They come from the REGISTER's push parameters or, if it carried
// none, from the stored binding; an expires-0 REGISTER with push
// parameters is reported even when no binding is stored (callwake
// restarted since). A "*" sweeps bindings of other phones (other Call-IDs)
// too; those are reported with no Targets: their devices did not log out.
//
// A binding that merely expired is never reported: its device stays.
type RegisterEvent struct {
	Ext             string
	Binding         Binding
	Removed         bool
	Refresh         bool
	Targets         []PushTarget
	PreviousTargets []PushTarget
}

// StatusError lets a RegisterHandler choose the SIP answer.
type StatusError struct {
	Code   int    // 300-699
	Reason string // reason phrase; empty for the standard one
	Err    error
}

func (e *StatusError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Code, e.Reason, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Code, e.Reason)
}

func (e *StatusError) Unwrap() error { return e.Err }

// RegistrarConfig configures a Registrar. Zero durations take the defaults.
type RegistrarConfig struct {
	// Domain is the registrar domain and digest realm (sip.domain).
	Domain      string
	Credentials CredentialStore
	// Handler may be nil: bindings are then only kept.
	Handler RegisterHandler
	// NonceSecret keys digest nonces; empty: random at start.
	NonceSecret []byte
	NonceTTL    time.Duration
	// DigestAlgorithms are challenged in order; default SHA-256, MD5.
	DigestAlgorithms []string
	// MinExpires answers shorter non-zero intervals with 423.
	MinExpires time.Duration
	// MaxExpires caps longer intervals.
	MaxExpires time.Duration
	// DefaultExpires applies when the REGISTER names no interval.
	DefaultExpires time.Duration
	// ConnAlive reports whether a connection-oriented transport still has
	// an open connection to addr (see ConnAliveFunc). Nil: such bindings
	// are taken as live until they expire.
	ConnAlive func(transport, addr string) bool
	Now       func() time.Time
	Logger    *slog.Logger
}

// Registrar is the phones' registrar (RFC 3261 10.3): mount HandleRegister
// on a sipgo server. Bindings are kept in memory.
//
// The address-of-record is the To URI; its user part is the extension and
// its host is not checked (apps often put callwake's IP there). Answers:
//   - 401 with SHA-256 and MD5 challenges to a REGISTER without valid
//     credentials, stale=true when only the nonce expired. An unknown
//     extension gets the same 401 as a wrong password, never 404, so that
//     extensions cannot be enumerated.
//   - 403 when the credentials are valid but for another extension.
//   - 423 with Min-Expires to a non-zero interval below MinExpires; longer
//     ones than MaxExpires are shortened.
//   - 555 to push parameters naming a service callwake cannot push through
//     (RFC 8599), 400 with a Warning saying why to malformed ones. Push
//     parameters with only an APNs alert ("remote") token are not an error:
//     the binding is kept without push targets and without Feature-Caps.
//   - 400 "Stale CSeq" to a REGISTER from the same Call-ID with a CSeq not
//     above the binding's (RFC 3261 10.3 step 7): a reordered or replayed
//     request changes nothing.
//   - 200 listing every binding with its expires, a Date, and a
//     Feature-Caps: *;+sip.pns="<provider>" for RFC 8599 push parameters
//     accepted (RFC 8599 5). No +sip.pnsreg: callwake pushes for calls
//     only, never to ask for a binding refresh.
type Registrar struct {
	auth           *DigestAuth
	handler        RegisterHandler
	minExpires     time.Duration
	maxExpires     time.Duration
	defaultExpires time.Duration
	connAlive      func(transport, addr string) bool
	now            func() time.Time
	log            *slog.Logger

	table *bindingTable
	// extLocks serialise the REGISTERs of one extension (striped), so the
	// handler calls and the table update of one are not interleaved with
	// another's; the table has its own lock, so handlers may call Bindings.
	extLocks [64]sync.Mutex
}

// NewRegistrar checks cfg and returns a Registrar.
func NewRegistrar(cfg RegistrarConfig) (*Registrar, error) {
	r := &Registrar{
		handler:        cfg.Handler,
		minExpires:     orDefault(cfg.MinExpires, DefaultMinExpires),
		maxExpires:     orDefault(cfg.MaxExpires, DefaultMaxExpires),
		defaultExpires: orDefault(cfg.DefaultExpires, DefaultDefaultExpires),
		connAlive:      cfg.ConnAlive,
		now:            cfg.Now,
		log:            cfg.Logger,
		table:          newBindingTable(),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("component", "sip")
	if r.minExpires < 0 || r.maxExpires < 0 || r.defaultExpires < 0 {
		return nil, fmt.Errorf("registrar: negative expires (min %v, max %v, default %v)", r.minExpires, r.maxExpires, r.defaultExpires)
	}
	if r.minExpires > r.maxExpires {
		return nil, fmt.Errorf("registrar: min expires %v above max expires %v", r.minExpires, r.maxExpires)
	}
	if r.defaultExpires < r.minExpires || r.defaultExpires > r.maxExpires {
		return nil, fmt.Errorf("registrar: default expires %v outside [%v, %v]", r.defaultExpires, r.minExpires, r.maxExpires)
	}
	auth, err := NewDigestAuth(DigestConfig{
		Realm:      cfg.Domain,
		Secret:     cfg.NonceSecret,
		NonceTTL:   cfg.NonceTTL,
		Algorithms: cfg.DigestAlgorithms,
		Store:      cfg.Credentials,
		Now:        r.now,
		Logger:     r.log,
	})
	if err != nil {
		return nil, fmt.Errorf("registrar: %w", err)
	}
	r.auth = auth
	return r, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Auth is the registrar's digest authenticator, for other requests from
// phones.
func (r *Registrar) Auth() *DigestAuth { return r.auth }

// ConnAliveFunc reports liveness from a sipgo transport layer's connection
// pools, for RegistrarConfig.ConnAlive.
func ConnAliveFunc(tl *sip.TransportLayer) func(transport, addr string) bool {
	return func(transport, addr string) bool {
		pool := tl.Pool(transport)
		if pool == nil {
			return false
		}
		conn := pool.Get(addr)
		if conn == nil {
			return false
		}
		conn.Ref(-1) // Get took a reference
		return true
	}
}

// Bindings returns the unexpired bindings of ext, most recently refreshed
// first, with Live set.
func (r *Registrar) Bindings(ext string) []Binding {
	current := r.table.current(ext, r.now())
	sorted := make([]*Binding, 0, len(current))
	for _, b := range current {
		sorted = append(sorted, b)
	}
	slices.SortFunc(sorted, compareBindings)
	out := make([]Binding, len(sorted))
	for i, b := range sorted {
		out[i] = b.clone()
		out[i].Live = r.live(b)
	}
	return out
}

func (r *Registrar) live(b *Binding) bool {
	if !b.ConnectionOriented() {
		return false
	}
	if r.connAlive == nil {
		return true
	}
	return r.connAlive(b.Transport, b.Source)
}

// HandleRegister answers a REGISTER; mount it with server.OnRegister.
func (r *Registrar) HandleRegister(req *sip.Request, tx sip.ServerTransaction) {
	log := requestLogger{log: r.log, source: req.Source()}
	if h := req.CallID(); h != nil {
		log.callID = h.Value()
	}
	res, events := r.register(log, req)
	if err := tx.Respond(res); err != nil {
		log.Warn("sending REGISTER answer failed", "status", res.StatusCode, "error", err)
		return
	}
	if after, ok := r.handler.(AfterRegisterHandler); ok && res.IsSuccess() {
		for _, ev := range events {
			after.AfterRegister(ev)
		}
	}
}

// AfterRegisterHandler is an optional part of a RegisterHandler: it is told
// of each binding change once the phone has its 200 OK, which is when a
// ringing call may send the phone an INVITE.
type AfterRegisterHandler interface {
	AfterRegister(ev RegisterEvent)
}

func (r *Registrar) register(log requestLogger, req *sip.Request) (*sip.Response, []RegisterEvent) {
	now := r.now()
	r.table.sweep(now)

	to, callID, cseq := req.To(), req.CallID(), req.CSeq()
	if to == nil || to.Address.User == "" || callID == nil || cseq == nil {
		return reply(req, sip.StatusBadRequest, "Missing To user, Call-ID or CSeq"), nil
	}
	ext := to.Address.User
	log.ext = ext

	// A phone's first REGISTER carries no credentials: it is challenged
	// before the context (and its timer) that only the store and the
	// handler need.
	if req.GetHeader("Authorization") == nil {
		log.Debug("REGISTER not authenticated", "result", AuthMissing)
		return r.auth.Response(req, AuthMissing), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), registerTimeout)
	defer cancel()
	result, err := r.auth.Verify(ctx, req, ext)
	if err != nil {
		log.Error("authenticating REGISTER failed", "error", err)
		return reply(req, sip.StatusInternalServerError, "Server Internal Error"), nil
	}
	if result != AuthOK {
		log.Debug("REGISTER not authenticated", "result", result)
		return r.auth.Response(req, result), nil
	}

	updates, res := r.parseContacts(&log, req)
	if res != nil {
		return res, nil
	}

	lock := r.extLock(ext)
	lock.Lock()
	defer lock.Unlock()

	bindings := r.table.current(ext, now)
	rq := registerRequest{
		ext:       ext,
		callID:    string(*callID),
		cseq:      cseq.SeqNo,
		transport: strings.ToLower(req.Transport()),
		source:    req.Source(),
		now:       now,
	}
	events, ok := rq.apply(bindings, updates)
	if !ok {
		log.Info("REGISTER with a stale CSeq ignored", "cseq", rq.cseq)
		return reply(req, sip.StatusBadRequest, "Stale CSeq"), nil
	}
	if r.handler != nil {
		for _, ev := range events {
			// Copies, so that the handler cannot reach into the table.
			ev.Binding = ev.Binding.clone()
			ev.Binding.Live = r.live(&ev.Binding)
			ev.Targets = slices.Clone(ev.Targets)
			ev.PreviousTargets = slices.Clone(ev.PreviousTargets)
			if err := r.handler.OnRegister(ctx, ev); err != nil {
				log.Warn("register handler refused binding", "contact", ev.Binding.Contact.String(), "removed", ev.Removed, "error", err)
				return errorReply(req, err), nil
			}
		}
	}
	r.table.set(ext, bindings)
	for i := range events {
		logEvent(&log, &events[i])
	}
	// The events become copies for AfterRegister.
	for i := range events {
		events[i].Binding = events[i].Binding.clone()
		events[i].Binding.Live = r.live(&events[i].Binding)
	}
	return r.okReply(req, bindings, updates, now), events
}

func (r *Registrar) extLock(ext string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(ext))
	return &r.extLocks[h.Sum32()%uint32(len(r.extLocks))]
}

func logEvent(log *requestLogger, ev *RegisterEvent) {
	level, msg := slog.LevelDebug, "binding refreshed"
	switch {
	case ev.Removed:
		level, msg = slog.LevelInfo, "binding removed"
	case !ev.Refresh:
		level, msg = slog.LevelInfo, "binding added"
	}
	// A refresh, the common case, is at debug level: build nothing for it.
	if !log.enabled(level) {
		return
	}
	attrs := []any{
		"contact", ev.Binding.Contact.String(),
		"instance", ev.Binding.Instance,
		"transport", ev.Binding.Transport,
		"push_targets", len(ev.Targets),
	}
	if !ev.Removed {
		attrs = append(attrs, "expires", ev.Binding.Expires)
	}
	log.write(level, msg, attrs)
}
