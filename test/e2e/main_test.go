//go:build e2e

// Package e2e runs the built shipper binary against a real Kafka broker and
// a real Elasticsearch node (see README.md and ./stack). Every test ends by
// counting: each produced record is in Elasticsearch exactly once.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

var (
	stack     *stacktest.Stack
	binary    string // the shipper binary under test
	repoRoot  string
	e2eTmpDir string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var err error
	// Never skip: a missing server is a failure that says what to install.
	stack, err = stacktest.Up(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot start the test stack (Kafka + Elasticsearch): %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: KAFKA_BROKERS=%s ES_URL=%s\n", stack.KafkaBrokers, stack.ESURL)
	if repoRoot, err = filepath.Abs("../.."); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if e2eTmpDir, err = os.MkdirTemp("", "shipper-e2e-"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(e2eTmpDir)
	binary = filepath.Join(e2eTmpDir, "shipper")
	build := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/shipper")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/shipper: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
