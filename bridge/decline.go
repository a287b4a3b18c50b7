package bridge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
)

// A decline token is the call's UUID, the device id and an HMAC of both:
// it cannot be guessed, and it names one device of one call.
const (
	tokenMACSize = 16
	tokenSize    = 16 + 8 + tokenMACSize
)

// DeclinePath is the route of decline URLs on the HTTP server.
const DeclinePath = "/api/v1/decline/"

func (b *Bridge) declineToken(callID string, deviceID int64) string {
	id, err := uuid.Parse(callID)
	if err != nil {
		return ""
	}
	buf := make([]byte, 0, tokenSize)
	buf = append(buf, id[:]...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(deviceID))
	mac := hmac.New(sha256.New, b.cfg.DeclineSecret)
	mac.Write(buf)
	buf = append(buf, mac.Sum(nil)[:tokenMACSize]...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

func (b *Bridge) declineURL(callID string, deviceID int64) string {
	return strings.TrimRight(b.cfg.DeclineBaseURL, "/") + DeclinePath + b.declineToken(callID, deviceID)
}

// parseDeclineToken checks a token's MAC and returns what it names.
func (b *Bridge) parseDeclineToken(token string) (callID string, deviceID int64, ok bool) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != tokenSize {
		return "", 0, false
	}
	mac := hmac.New(sha256.New, b.cfg.DeclineSecret)
	mac.Write(raw[:24])
	if !hmac.Equal(mac.Sum(nil)[:tokenMACSize], raw[24:]) {
		return "", 0, false
	}
	id, _ := uuid.FromBytes(raw[:16])
	return id.String(), int64(binary.BigEndian.Uint64(raw[16:24])), true
}

// DeclineHandler serves POST <DeclinePath><token>: the user declined the call
// from the push. 200 when it declined the call, 410 when the call had
// already ended (or was declined by this link before), 403 for a forged link.
func (b *Bridge) DeclineHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply := func(status int, key, msg string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{key: msg})
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			reply(http.StatusMethodNotAllowed, "error", "use POST to decline the call")
			return
		}
		callID, deviceID, ok := b.parseDeclineToken(strings.TrimPrefix(r.URL.Path, DeclinePath))
		if !ok {
			reply(http.StatusForbidden, "error", "invalid decline link")
			return
		}
		c := b.lookup(callID)
		if c == nil {
			reply(http.StatusGone, "error", "the call has already ended")
			return
		}
		ev := evDecline{deviceID: deviceID, reply: make(chan int, 1)}
		c.send(ev)
		select {
		case status := <-ev.reply:
			if status == http.StatusOK {
				reply(http.StatusOK, "status", "declined")
				return
			}
			reply(http.StatusGone, "error", "the call has already ended")
		case <-c.done:
			reply(http.StatusGone, "error", "the call has already ended")
		case <-time.After(5 * time.Second):
			reply(http.StatusServiceUnavailable, "error", "the call did not answer in time")
		}
	})
}
