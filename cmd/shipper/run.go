package main

import (
	"context"
	"flag"
	"io"
	"os"

	"github.com/shipper-agent/shipper/agent"
)

func runCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/shipper/shipper.hcl", "configuration file")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cfg, err := agent.LoadConfig(*path)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, agent.NewLogger(cfg.Log, os.Stderr))
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
