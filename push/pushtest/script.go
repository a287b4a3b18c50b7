package pushtest

import (
	"sync"
	"time"
)

// script holds scripted answers: per device token, else for all. A
// sequence is answered in order and its last answer repeats.
type script[R any] struct {
	perToken map[string][]R
	all      []R
}

func (s *script[R]) set(token string, answers []R) {
	if token == "" {
		s.all = answers
		return
	}
	if s.perToken == nil {
		s.perToken = map[string][]R{}
	}
	s.perToken[token] = answers
}

func (s *script[R]) next(token string) (R, bool) {
	if q := s.perToken[token]; len(q) > 0 {
		if len(q) > 1 {
			s.perToken[token] = q[1:]
		}
		return q[0], true
	}
	if len(s.all) > 0 {
		r := s.all[0]
		if len(s.all) > 1 {
			s.all = s.all[1:]
		}
		return r, true
	}
	var zero R
	return zero, false
}

// notifier lets tests wait for the mock's state to change instead of
// sleeping.
type notifier struct {
	mu      sync.Mutex
	changed chan struct{}
}

func (n *notifier) wake() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.changed != nil {
		close(n.changed)
		n.changed = nil
	}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.changed == nil {
		n.changed = make(chan struct{})
	}
	return n.changed
}

// waitFor polls cond on every change until it holds or timeout passes.
func (n *notifier) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := n.wait()
		if cond() {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return cond()
		}
	}
}

// WaitTimeout bounds every Wait* helper.
var WaitTimeout = 10 * time.Second

// sleep waits d, or less if the request is gone or the mock is closing.
func sleep(d time.Duration, request, mock <-chan struct{}) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-request:
	case <-mock:
	}
}
