// Package quick is the smoke run every benchmark program shares:
// BENCH_QUICK=1 in the environment (or -quick) shrinks its sizes so that it
// runs in seconds, to show that it works, not to measure. Flags given on the
// command line still win over the smoke run's settings.
package quick

import (
	"flag"
	"fmt"
	"os"

	"github.com/shipper-agent/shipper/bench/internal/machine"
)

// Env is the environment variable that turns every program's smoke run on
// (value "1").
const Env = "BENCH_QUICK"

// Flag registers -quick on fs into p, on by default when BENCH_QUICK=1;
// usage says what the smoke run does.
func Flag(fs *flag.FlagSet, p *bool, usage string) {
	fs.BoolVar(p, "quick", os.Getenv(Env) == "1", usage+" (default from "+Env+"=1)")
}

// Apply gives each flag named in settings its smoke-run value, unless the
// command line gave that flag. Call it after fs.Parse; an unknown name or
// a value the flag refuses is an error naming the flag.
func Apply(fs *flag.FlagSet, settings map[string]string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range settings {
		if given[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("-quick: -%s %s: %w", name, v, err)
		}
	}
	return nil
}

// Command is how to run the program name (its directory under bench/cmd)
// again: machine.Command's line, with BENCH_QUICK=1 before it when the
// smoke run came from the environment.
func Command(name string, quick bool) string {
	cmd := machine.Command(name)
	if quick && os.Getenv(Env) == "1" {
		cmd = Env + "=1 " + cmd
	}
	return cmd
}
