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
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// FreePorts returns n distinct loopback ports, each free for both UDP and
// TCP at the moment of the call. Each is held until all are chosen: ports
// asked for one at a time can come back equal, as the kernel may hand out
// a port again once it is closed.
func FreePorts(n int) ([]int, error) {
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for try := 0; len(ports) < n; try++ {
		if try == 50*n {
			return nil, fmt.Errorf("no %d loopback ports free for both UDP and TCP", n)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			ln.Close()
			continue
		}
		pc.Close()
		held = append(held, ln)
		ports = append(ports, port)
	}
	return ports, nil
}
