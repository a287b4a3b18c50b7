package bridge_test

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// sipgo logs through the default logger; keep test output readable.
	slog.SetDefault(testLogger())
	os.Exit(m.Run())
}
