package loadtest

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// calibrate measures what SIPp itself adds to INVITE→180: ring_timeout.xml
// against a stateless responder that answers 180 and 487 the moment an
// INVITE arrives. Whatever SIPp reports there is SIPp's own, not
// callwake's.
func (h *harness) calibrate() (Latencies, error) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return Latencies{}, err
	}
	defer conn.Close()
	go respondRinging(conn)
	h.sippRuns++
	run := sippRun{Scenario: filepath.Join(h.opts.Root, "bench", "sipp", "ring_timeout.xml"), Target: conn.LocalAddr().String(),
		Extensions: h.extCSV, Rate: 100, Calls: 200, RecvTimeout: 5 * time.Second,
		Dir: filepath.Join(h.dir, fmt.Sprintf("sipp-%02d-calibration", h.sippRuns))}
	proc, err := startSIPp(run, time.Minute)
	if err != nil {
		return Latencies{}, err
	}
	res, err := proc.wait(time.Minute)
	if err != nil {
		return Latencies{}, err
	}
	if res.Successful != run.Calls {
		return Latencies{}, fmt.Errorf("calibration: %d of %d calls succeeded", res.Successful, run.Calls)
	}
	return summarise(res.Invite180), nil
}

// respondRinging answers each INVITE on conn with 180 and 487 at once, and
// ignores everything else (the ACKs), until conn is closed.
func respondRinging(conn net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		msg := buf[:n]
		if !bytes.HasPrefix(msg, []byte("INVITE ")) {
			continue
		}
		var headers []string
		for _, line := range strings.Split(string(msg), "\r\n") {
			name, _, _ := strings.Cut(line, ":")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "via", "from", "call-id", "cseq":
				headers = append(headers, line)
			case "to":
				headers = append(headers, line+";tag=calibration")
			}
		}
		for _, status := range []string{"180 Ringing", "487 Request Terminated"} {
			res := "SIP/2.0 " + status + "\r\n" + strings.Join(headers, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
			_, _ = conn.WriteTo([]byte(res), addr)
		}
	}
}
