// Package testnet holds network helpers shared by the tests and the load
// harness that run real peers (SIPp, Kamailio, baresip) as processes.
package testnet

import (
	"fmt"
	"net"
)

// FreePort returns a loopback port that is free for both UDP and TCP at the
// moment of the call (SIP listens on both).
func FreePort() (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no loopback port free for both UDP and TCP")
}
