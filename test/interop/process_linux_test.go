package interop

import (
	"os/exec"
	"syscall"
)

// killWithParent makes the kernel kill the child if the test binary dies
// without running its cleanups (a timeout panic, SIGKILL): no callwake or
// peer is left running behind a dead test.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
