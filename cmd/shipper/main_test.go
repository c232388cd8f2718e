package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shipper-agent/shipper/buffer"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("kafka {\n  topics = [\"a\"]\n  colour = \"red\"\n}\n"), 0o644)
	bufDir := filepath.Join(dir, "buf")
	cfg := buffer.DefaultConfig()
	cfg.Dir = bufDir
	b, err := buffer.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	cases := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"validate example", []string{"validate", "-config", "../../config.example.hcl"}, 0, "valid", ""},
		{"validate unknown attribute", []string{"validate", "-config", bad}, 1, "", bad + ":3:3: Error: Unsupported argument"},
		{"validate missing file", []string{"validate", "-config", filepath.Join(dir, "nope.hcl")}, 1, "", "nope.hcl"},
		{"run with broken config", []string{"run", "-config", bad}, 1, "", "Unsupported argument"},
		{"unknown flag", []string{"validate", "-cfg", "x"}, 2, "", "flag provided but not defined"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"no command", nil, 2, "", "Usage:"},
		{"help", []string{"help"}, 0, "Usage:", ""},
		{"version", []string{"version"}, 0, "shipper dev", ""},
		{"inspect empty buffer", []string{"buffer", "inspect", "-dir", bufDir}, 0, "total: 0 chunks", ""},
		{"inspect no buffer", []string{"buffer", "inspect", "-dir", dir}, 1, "", "no buffer in " + dir},
		{"buffer without subcommand", []string{"buffer"}, 2, "", "Usage: shipper buffer inspect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := exitCode(Run(context.Background(), tc.args, &stdout, &stderr), &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.inStdout) || !strings.Contains(stderr.String(), tc.inStderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
		})
	}
}
