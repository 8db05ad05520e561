package drd_test

import (
	"testing"

	"vigil/internal/leakcheck"
)

// TestMain fails the run if the tests leave file descriptors (rings, memfds, eventfds, sockets,
// backing files) or goroutines behind.
func TestMain(m *testing.M) { leakcheck.Main(m) }
