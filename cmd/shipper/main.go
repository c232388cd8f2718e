// Command shipper is a log shipping agent: it consumes records from Kafka,
// keeps them in a disk-backed buffer and indexes them in Elasticsearch.
//
//	shipper run -config FILE        run the agent
//	shipper validate -config FILE   check a configuration file
//	shipper buffer inspect -dir DIR list a stopped agent's buffer
//	shipper version                 print the version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/shipper-agent/shipper/agent"
)

// errUsage marks a command line that could not be understood; flag has
// already printed why.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(Run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// Run runs the subcommand named by args[0].
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stderr)
	case "validate":
		return validateCmd(args[1:], stdout, stderr)
	case "version":
		return versionCmd(stdout)
	case "buffer":
		return bufferCmd(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return nil
	}
	fmt.Fprintf(stderr, "shipper: unknown command %q\n", args[0])
	usage(stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: shipper <command> [flags]

Commands:
  run -config FILE        run the agent
  validate -config FILE   check a configuration file and print every problem
  buffer inspect -dir DIR list the chunks a buffer holds (agent stopped)
  version                 print the version
`)
}

// exitCode maps an error to the process exit status: 0 ok, 2 usage, 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	var cfgErr *agent.ConfigError
	if errors.As(err, &cfgErr) {
		// Already formatted: file:line:col, message, snippet.
		fmt.Fprint(stderr, cfgErr.Text)
		return 1
	}
	fmt.Fprintln(stderr, "shipper:", err)
	return 1
}
