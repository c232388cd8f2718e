package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/shipper-agent/shipper/agent"
)

func validateCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/shipper/shipper.hcl", "configuration file")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if _, err := agent.LoadConfig(*path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: valid\n", *path)
	return nil
}

func versionCmd(stdout io.Writer) error {
	fmt.Fprintln(stdout, "shipper", agent.Version)
	return nil
}
