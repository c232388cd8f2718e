package kafka_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// Input's Run has returned and every fake cluster is closed by then, so a
// goroutine left is a leak of the input or of kafka-go as the input uses it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
