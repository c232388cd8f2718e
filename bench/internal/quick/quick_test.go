package quick

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestApply(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	records := fs.Int("records", 1000, "")
	rounds := fs.Int("rounds", 3, "")
	profile := fs.Bool("profile", true, "")
	if err := fs.Parse([]string{"-rounds", "5"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, map[string]string{"records": "20", "rounds": "1", "profile": "false"}); err != nil {
		t.Fatal(err)
	}
	if *records != 20 || *rounds != 5 || *profile {
		t.Errorf("records %d (want the smoke run's 20), rounds %d (want the given 5), profile %v (want false)", *records, *rounds, *profile)
	}
	for _, bad := range []map[string]string{{"nope": "1"}, {"records": "many"}} {
		fs := flag.NewFlagSet("y", flag.ContinueOnError)
		fs.Int("records", 1000, "")
		if err := Apply(fs, bad); err == nil || !strings.Contains(err.Error(), "-quick: -") {
			t.Errorf("Apply(%v) = %v, want an error naming the flag", bad, err)
		}
	}
}

func TestCommand(t *testing.T) {
	t.Setenv(Env, "1")
	if c := Command("peerbench", true); !strings.HasPrefix(c, "BENCH_QUICK=1 go run ./bench/cmd/peerbench") {
		t.Errorf("quick from the environment: %q", c)
	}
	if c := Command("peerbench", false); !strings.HasPrefix(c, "go run ./bench/cmd/peerbench") {
		t.Errorf("not quick: %q", c)
	}
	t.Setenv(Env, "")
	if c := Command("peerbench", true); strings.HasPrefix(c, Env) {
		t.Errorf("-quick on the command line is already in the line: %q", c)
	}
}
