package upstream

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestShutdownUnregistersAllAtOnce(t *testing.T) {
	pbx := newFakePBX(t)
	exts := []string{"1001", "1002", "1003"}
	accounts := []Account{{Ext: "1009", Password: "pw"}} // unknown at the PBX: failing, never bound
	for _, ext := range exts {
		accounts = append(accounts, Account{Ext: ext, Password: "pw"})
		pbx.set(func(p *fakePBX) { p.passwords[ext] = "pw" })
	}
	h := newHarness(t, pbx.uri, nil)
	h.Sync(accounts)
	h.run(t)
	h.scheduled(t, "1001", "1002", "1003", "1009")
	h.clock.Advance(time.Second)
	callIDs := map[string]string{}
	cseqs := map[string]uint32{}
	for _, ext := range exts {
		h.waitStatus(t, ext, StatusRegistered)
	}
	h.waitStatus(t, "1009", StatusFailing)
	for len(pbx.requests) > 0 {
		req := pbx.next(t)
		callIDs[req.To().Address.User] = req.CallID().Value()
		cseqs[req.To().Address.User] = req.CSeq().SeqNo
	}

	// Hold each first un-REGISTER until all of them are in: sent one after
	// the other, they would never all arrive.
	var mu sync.Mutex
	arrived := map[string]bool{}
	all := make(chan struct{})
	barrierMet := false
	pbx.set(func(p *fakePBX) {
		p.hook = func(req *sip.Request) (*sip.Response, bool) {
			if req.GetHeader("Authorization") != nil {
				return nil, false
			}
			mu.Lock()
			arrived[req.To().Address.User] = true
			if len(arrived) == len(exts) && !barrierMet {
				barrierMet = true
				close(all)
			}
			mu.Unlock()
			select {
			case <-all:
			case <-time.After(2 * time.Second):
			}
			return nil, false
		}
	})
	took := h.stop(t)

	mu.Lock()
	if !barrierMet {
		t.Errorf("un-REGISTERs were not sent concurrently; arrived: %v", arrived)
	}
	mu.Unlock()
	for len(pbx.requests) > 0 {
		req := pbx.next(t)
		user := req.To().Address.User
		if user == "1009" {
			t.Errorf("un-REGISTER for 1009, which was never registered")
			continue
		}
		if expiresParam(req) != 0 || header(req, "Expires") != "0" {
			t.Errorf("%s: want Expires 0, got:\n%s", user, req)
		}
		if req.CallID().Value() != callIDs[user] || req.CSeq().SeqNo <= cseqs[user] {
			t.Errorf("%s: un-REGISTER %s/%d, want Call-ID %s and CSeq above %d", user,
				req.CallID().Value(), req.CSeq().SeqNo, callIDs[user], cseqs[user])
		}
		cseqs[user] = req.CSeq().SeqNo
	}
	for _, ext := range exts {
		if _, ok := pbx.binding(ext); ok {
			t.Errorf("%s still bound at the PBX after shutdown", ext)
		}
		if st, _ := h.State(ext); st.Status != StatusDisabled || !st.ExpiresAt.IsZero() {
			t.Errorf("%s: state after shutdown %+v", ext, st)
		}
	}
	t.Logf("shutdown took %v", took)
}

func TestShutdownIsBoundedWhenPBXIsSilent(t *testing.T) {
	pbx := newFakePBX(t)
	pbx.set(func(p *fakePBX) { p.passwords["1001"] = "pw" })
	h := newHarness(t, pbx.uri, func(c *Config) { c.ShutdownTimeout = 500 * time.Millisecond })
	h.Sync([]Account{{Ext: "1001", Password: "pw"}})
	h.run(t)
	h.waitStatus(t, "1001", StatusRegistered)
	pbx.set(func(p *fakePBX) { p.hook = func(*sip.Request) (*sip.Response, bool) { return nil, true } })
	if took := h.stop(t); took > 3*time.Second {
		t.Errorf("Run took %v to return with ShutdownTimeout 500ms", took)
	}
}

func TestRunTwiceFails(t *testing.T) {
	h := newHarness(t, "", nil)
	h.Sync([]Account{{Ext: "1001"}})
	h.run(t)
	h.waitStatus(t, "1001", StatusDisabled) // the first Run is under way
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := h.Run(ctx); err == nil {
		t.Errorf("second Run did not fail")
	}
}
