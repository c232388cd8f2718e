// Command stackctl manages the end-to-end test stack (a real Kafka broker and
// a real Elasticsearch node on 127.0.0.1). Run it through test/e2e/stack.
//
//	stack up             start (or reuse) the stack; print KAFKA_BROKERS=…, ES_URL=… and the rest
//	stack up-secure      the same, and the secured Elasticsearch node too; print its ES_SECURE_* lines as well
//	stack down           stop the stack and delete its data
//	stack status         show what runs; exit 0 only if both servers are healthy
//	stack env            print the lines of `up` for a running stack, start nothing
//	stack restart-kafka  stop the broker gracefully and start it again on the same data and ports
//
// Only the KEY=value lines go to stdout; progress and errors go to stderr, so
// `eval "$(test/e2e/stack up)"` or `test/e2e/stack up >> "$GITHUB_ENV"` work.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage: test/e2e/stack [-timeout D] up|up-secure|down|status|env|restart-kafka

  up             start Kafka %s and Elasticsearch %s (or reuse a running stack),
                 wait until both answer, print KAFKA_BROKERS=..., ES_URL=...
                 and the broker's SASL and TLS settings (KAFKA_SASL_*, KAFKA_TLS_*)
  up-secure      up, and a second Elasticsearch node with security on (HTTPS
                 with the stack's CA, a user, a service token); print ES_SECURE_* too
  down           stop every server and delete their data
  status         show pids, ports and health; exit 0 only if both are healthy
  env            print the lines of "up" for the running stack without starting it
  restart-kafka  stop the broker (SIGTERM, wait) and start it again with the
                 same configuration, data and ports; wait until it answers

state dir: %s (set %s to change)
`, stacktest.KafkaVersion, stacktest.ESVersion, stacktest.Dir(), stacktest.EnvDir)
	flag.PrintDefaults()
}

func main() {
	timeout := flag.Duration("timeout", 0, "give up after this long (default: up 15m, down 2m, restart-kafka 3m, status/env 30s)")
	flag.Usage = usage
	flag.Parse()
	if flag.NArg() != 1 {
		usage()
		os.Exit(2)
	}
	cmd := flag.Arg(0)
	defaults := map[string]time.Duration{"up": 15 * time.Minute, "up-secure": 15 * time.Minute, "down": 2 * time.Minute, "status": 30 * time.Second,
		"env": 30 * time.Second, "restart-kafka": 3 * time.Minute}
	d, ok := defaults[cmd]
	if !ok {
		fmt.Fprintf(os.Stderr, "stack: unknown command %q\n\n", cmd)
		usage()
		os.Exit(2)
	}
	if *timeout > 0 {
		d = *timeout
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	os.Exit(run(ctx, cmd))
}

func run(ctx context.Context, cmd string) int {
	switch cmd {
	case "up":
		start := time.Now()
		s, err := stacktest.Up(ctx, os.Stderr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "stack up: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "stack: up in %s\n", time.Since(start).Round(100*time.Millisecond))
		printEnv(s)
	case "up-secure":
		start := time.Now()
		s, err := stacktest.UpSecure(ctx, os.Stderr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "stack up-secure: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "stack: up, with the secured node, in %s\n", time.Since(start).Round(100*time.Millisecond))
		printEnv(s)
	case "down":
		if err := stacktest.Down(ctx, os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "stack down: %v\n", err)
			return 1
		}
	case "restart-kafka":
		if err := stacktest.RestartKafka(ctx, os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "stack restart-kafka: %v\n", err)
			return 1
		}
	case "status":
		st, err := stacktest.Status(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "stack status: %v\n", err)
			return 1
		}
		fmt.Print(st)
		if !st.OK() {
			return 1
		}
	case "env":
		s, err := stacktest.Running(ctx)
		if err != nil {
			fmt.Fprintf(os.Stderr, "stack env: %v\n", err)
			return 1
		}
		printEnv(s)
	}
	return 0
}

func printEnv(s *stacktest.Stack) {
	for _, line := range s.Env() {
		fmt.Println(line)
	}
}
