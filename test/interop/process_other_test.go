//go:build !linux

package interop

import "os/exec"

// killWithParent has no portable equivalent outside Linux: a child of a
// test binary that dies without its cleanups keeps running there.
func killWithParent(*exec.Cmd) {}
