// Command shipper is a log shipping agent: it consumes records from Kafka,
// keeps them in a disk-backed buffer and indexes them in Elasticsearch.
//
//	shipper run -config FILE        run the agent
//	shipper validate -config FILE   check a configuration file
//	shipper buffer inspect -dir DIR list a stopped agent's buffer
//	shipper status [-json]          the running agent's state
//	shipper flush [-wait D]         deliver what the running agent buffers now
//	shipper dlq list|replay|purge   the dead-letter store of a running agent
//	shipper version                 print the version
package main

import (
	"context"
	"errors"
	"flag"
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

// errHelp marks a command line that asked for help (-h), which was printed.
var errHelp = errors.New("help")

// flagError maps a flag parsing error: help asked for, or a bad command line.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	return errUsage
}

func main() {
	// SIGHUP and SIGUSR1 end a Go process by default. Until `run` watches
	// them (a reload, a flush), they are ignored, so that one sent while
	// the agent starts (the buffer opening, a full disk waited out) does
	// not kill it.
	signal.Ignore(syscall.SIGHUP, syscall.SIGUSR1)
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal asks for a graceful stop, bounded by
		// shutdown_timeout; a second one ends the process at once.
		// Nothing is lost either way: undelivered records are on disk
		// or still in Kafka, uncommitted.
		s := <-sigs
		cancel()
		s = <-sigs
		fmt.Fprintf(os.Stderr, "shipper: second signal (%s): exiting now; undelivered records stay on disk or in Kafka\n", s)
		os.Exit(exitForced)
	}()
	os.Exit(exitCode(Run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitForced is the exit status after a second SIGINT or SIGTERM.
const exitForced = 3

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
	case "dlq":
		return dlqCmd(ctx, args[1:], stdout, stderr)
	case "status":
		return statusCmd(ctx, args[1:], stdout, stderr)
	case "flush":
		return flushCmd(ctx, args[1:], stdout, stderr)
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
  status [-json]          the running agent's input, buffer and output
  flush [-wait D]         deliver everything the running agent buffers now
  dlq list|replay|purge   the dead-letter store of a running agent (shipper dlq for help)
  version                 print the version

Each command prints its flags with -h.

Exit status: 0 done (or -h), 1 error (a flush not done within -wait too),
2 usage, 3 stopped by a second SIGINT or SIGTERM.
`)
}

// exitCode maps an error to the process exit status: 0 ok, 2 usage, 1
// otherwise (3, a forced stop, is set by main).
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, errHelp):
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
