package hcldecode

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	shipper "github.com/shipper-agent/shipper"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.golden files")

// The test configuration mirrors the agent's: a root Config holding each
// package's Config as a block, plus a repeated labelled block.

type kafkaConfig struct {
	Brokers    []string          `hcl:"brokers,required"`
	Topics     []string          `hcl:"topics"`
	Group      string            `hcl:"group"`
	Password   shipper.Secret    `hcl:"password"`
	Partitions int32             `hcl:"partitions"`
	MaxBytes   int64             `hcl:"max_bytes"`
	Labels     map[string]string `hcl:"labels"`
}

type bufferConfig struct {
	Dir           string           `hcl:"dir"`
	ChunkSize     shipper.ByteSize `hcl:"chunk_size"`
	MemoryLimit   shipper.ByteSize `hcl:"memory_limit"`
	FlushInterval time.Duration    `hcl:"flush_interval"`
	Sync          bool             `hcl:"sync"`
}

func (c bufferConfig) Validate() error {
	var errs []error
	if c.MemoryLimit < c.ChunkSize {
		errs = append(errs, Errorf("memory_limit", "must be at least chunk_size (%s), got %s", c.ChunkSize, c.MemoryLimit))
	}
	if c.Dir == "" {
		errs = append(errs, Errorf("Dir", "must not be empty"))
	}
	return errors.Join(errs...)
}

type outputConfig struct {
	Name    string `hcl:"name,label"`
	URL     string `hcl:"url"`
	Workers int    `hcl:"workers"`
}

func (c outputConfig) Validate() error {
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return Errorf("url", "must be an http or https URL, got %q", c.URL)
	}
	return nil
}

type config struct {
	NodeName    string         `hcl:"node_name"`
	SampleRatio float64        `hcl:"sample_ratio"`
	Kafka       kafkaConfig    `hcl:"kafka,block"`
	Buffer      bufferConfig   `hcl:"buffer,block"`
	Outputs     []outputConfig `hcl:"output,block"`
	Untagged    string
	Ignored     string `hcl:"-"`
}

func (c config) Validate() error {
	errs := []error{Nest("buffer", c.Buffer.Validate())}
	for i, o := range c.Outputs {
		errs = append(errs, Nest(fmt.Sprintf("output[%d]", i), o.Validate()))
	}
	return errors.Join(errs...)
}

func defaults() config {
	return config{
		NodeName:    "default-node",
		SampleRatio: 1,
		Kafka: kafkaConfig{
			Brokers:    []string{"localhost:9092"},
			Group:      "shipper",
			Partitions: 3,
			MaxBytes:   1 << 20,
		},
		Buffer: bufferConfig{
			Dir:           "/var/lib/shipper",
			ChunkSize:     4 << 20,
			MemoryLimit:   64 << 20,
			FlushInterval: 5 * time.Second,
			Sync:          true,
		},
		Outputs:  []outputConfig{{Name: "default", URL: "http://localhost:9200", Workers: 1}},
		Untagged: "untagged default",
		Ignored:  "ignored default",
	}
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// decodeSrc parses and decodes src as file "agent.hcl" onto defaults().
func decodeSrc(t *testing.T, src string, env map[string]string) (config, *Positions, hcl.Diagnostics, map[string]*hcl.File) {
	t.Helper()
	body, files, diags := ParseFile("agent.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatalf("parse: %s", FormatDiagnostics(files, diags))
	}
	cfg := defaults()
	pos, diags := Decode(body, EvalContextWith(envMap(env)), &cfg)
	return cfg, pos, diags, files
}

func decodeFile(t *testing.T, path string, env map[string]string) (config, *Positions, hcl.Diagnostics, map[string]*hcl.File) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	body, files, diags := ParseFile(path, src)
	if diags.HasErrors() {
		t.Fatalf("parse: %s", FormatDiagnostics(files, diags))
	}
	cfg := defaults()
	pos, diags := Decode(body, EvalContextWith(envMap(env)), &cfg)
	return cfg, pos, diags, files
}

func at(r *hcl.Range) string {
	if r == nil {
		return "<no subject>"
	}
	return fmt.Sprintf("%s:%d:%d-%d:%d", r.Filename, r.Start.Line, r.Start.Column, r.End.Line, r.End.Column)
}

func TestDecodeValidFileOntoDefaults(t *testing.T) {
	cfg, _, diags, files := decodeFile(t, "testdata/valid.hcl", map[string]string{
		"SHIPPER_TEST_KAFKA_PASSWORD": "s3cr3t",
	})
	if diags.HasErrors() {
		t.Fatalf("unexpected diagnostics:\n%s", FormatDiagnostics(files, diags))
	}
	want := defaults()
	want.NodeName = "shipper-01"
	want.SampleRatio = 0.25
	want.Kafka.Brokers = []string{"kafka-1:9092", "kafka-2:9092"}
	want.Kafka.Topics = []string{"logs.app", "logs.nginx"}
	want.Kafka.Password = "s3cr3t"
	want.Kafka.MaxBytes = 1048576
	want.Kafka.Labels = map[string]string{"env": "prod", "team": "infra"}
	want.Buffer.ChunkSize = 8 << 20
	want.Buffer.MemoryLimit = 256 << 20
	want.Buffer.FlushInterval = 90 * time.Second
	// Dir comes from env()'s default; Group, Partitions, Sync, Untagged and
	// Ignored are not in the file and keep their defaults.
	want.Outputs = []outputConfig{
		{Name: "primary", URL: "https://es-1:9200", Workers: 4},
		// Repeated blocks start from the zero value, not from the defaults.
		{Name: "fallback", URL: "https://es-2:9200"},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("decoded\n%#v\nwant\n%#v", cfg, want)
	}
	// %#v redacts the Secret, so compare it explicitly too.
	if cfg.Kafka.Password.Reveal() != "s3cr3t" {
		t.Errorf("password = %q, want s3cr3t", cfg.Kafka.Password.Reveal())
	}
}

func TestDecodeEmptyFileKeepsDefaults(t *testing.T) {
	cfg, _, diags, files := decodeSrc(t, "# nothing here\n", nil)
	if len(diags) != 0 {
		t.Fatalf("unexpected diagnostics:\n%s", FormatDiagnostics(files, diags))
	}
	if !reflect.DeepEqual(cfg, defaults()) {
		t.Errorf("decoded %#v, want the defaults %#v", cfg, defaults())
	}
}

func TestDecodeAttributeTypes(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(c config) bool
	}{
		{"string", `node_name = "n1"`, func(c config) bool { return c.NodeName == "n1" }},
		{"number to string", `node_name = 42`, func(c config) bool { return c.NodeName == "42" }},
		{"float", `sample_ratio = 0.5`, func(c config) bool { return c.SampleRatio == 0.5 }},
		{"float from whole number", `sample_ratio = 2`, func(c config) bool { return c.SampleRatio == 2 }},
		{"null keeps default", `node_name = null`, func(c config) bool { return c.NodeName == "default-node" }},
		{"bool false", "buffer {\n sync = false\n}", func(c config) bool { return !c.Buffer.Sync }},
		{"bool from string", "buffer {\n sync = \"false\"\n}", func(c config) bool { return !c.Buffer.Sync }},
		{"int32", "kafka {\n brokers = [\"b\"]\n partitions = 12\n}", func(c config) bool { return c.Kafka.Partitions == 12 }},
		{"int32 negative", "kafka {\n brokers = [\"b\"]\n partitions = -1\n}", func(c config) bool { return c.Kafka.Partitions == -1 }},
		{"int32 from string", "kafka {\n brokers = [\"b\"]\n partitions = \"7\"\n}", func(c config) bool { return c.Kafka.Partitions == 7 }},
		{"int64 large", "kafka {\n brokers = [\"b\"]\n max_bytes = 9007199254740993\n}", func(c config) bool { return c.Kafka.MaxBytes == 9007199254740993 }},
		{"int", "output \"a\" {\n workers = 8\n}", func(c config) bool { return c.Outputs[0].Workers == 8 }},
		{"empty list replaces default", "kafka {\n brokers = []\n}", func(c config) bool { return c.Kafka.Brokers != nil && len(c.Kafka.Brokers) == 0 }},
		{"list of numbers to strings", "kafka {\n brokers = [1, 2]\n}", func(c config) bool {
			return reflect.DeepEqual(c.Kafka.Brokers, []string{"1", "2"})
		}},
		{"map", "kafka {\n brokers = [\"b\"]\n labels = { a = \"1\", \"b.c\" = 2 }\n}", func(c config) bool {
			return reflect.DeepEqual(c.Kafka.Labels, map[string]string{"a": "1", "b.c": "2"})
		}},
		{"secret", "kafka {\n brokers = [\"b\"]\n password = \"pw\"\n}", func(c config) bool { return c.Kafka.Password.Reveal() == "pw" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, diags, files := decodeSrc(t, tt.src+"\n", nil)
			if diags.HasErrors() {
				t.Fatalf("unexpected diagnostics:\n%s", FormatDiagnostics(files, diags))
			}
			if !tt.check(cfg) {
				t.Errorf("decoded %#v", cfg)
			}
		})
	}
}

func TestDecodeDurationsAndSizes(t *testing.T) {
	tests := []struct {
		src       string
		wantDur   time.Duration
		wantChunk shipper.ByteSize
	}{
		{`flush_interval = "5s"`, 5 * time.Second, 4 << 20},
		{`flush_interval = "250ms"`, 250 * time.Millisecond, 4 << 20},
		{`flush_interval = "1m30s"`, 90 * time.Second, 4 << 20},
		{`flush_interval = "0s"`, 0, 4 << 20},
		{`chunk_size = "64MiB"`, 5 * time.Second, 64 << 20},
		{`chunk_size = "4MB"`, 5 * time.Second, 4_000_000},
		{`chunk_size = "512KiB"`, 5 * time.Second, 512 << 10},
		{`chunk_size = "1048576"`, 5 * time.Second, 1 << 20},
		{`chunk_size = 1048576`, 5 * time.Second, 1 << 20},
		{`chunk_size = 0`, 5 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			cfg, _, diags, files := decodeSrc(t, "buffer {\n  "+tt.src+"\n}\n", nil)
			if diags.HasErrors() {
				t.Fatalf("unexpected diagnostics:\n%s", FormatDiagnostics(files, diags))
			}
			if cfg.Buffer.FlushInterval != tt.wantDur || cfg.Buffer.ChunkSize != tt.wantChunk {
				t.Errorf("flush_interval=%v chunk_size=%d, want %v and %d", cfg.Buffer.FlushInterval, cfg.Buffer.ChunkSize, tt.wantDur, tt.wantChunk)
			}
		})
	}
}

// wantDiag is one expected diagnostic: its summary, the exact range of its
// subject, and words its detail must contain.
type wantDiag struct {
	summary string
	at      string // file:line:col-line:col of the subject
	detail  []string
}

func TestDecodeDiagnostics(t *testing.T) {
	tests := []struct {
		name string
		src  string
		env  map[string]string
		want []wantDiag
	}{
		{
			name: "unknown attribute with suggestion",
			src:  "buffer {\n  chunck_size = \"1MiB\"\n}\n",
			want: []wantDiag{{"Unsupported argument", "agent.hcl:2:3-2:14", []string{`"chunck_size" is not expected here`, `Did you mean "chunk_size"?`}}},
		},
		{
			name: "unknown block with suggestion",
			src:  "bufer {\n}\n",
			want: []wantDiag{{"Unsupported block type", "agent.hcl:1:1-1:6", []string{`Blocks of type "bufer"`, `Did you mean "buffer"?`}}},
		},
		{
			name: "untagged and ignored fields are not in the schema",
			src:  "Untagged = \"x\"\nIgnored = \"y\"\n",
			want: []wantDiag{
				{"Unsupported argument", "agent.hcl:1:1-1:9", []string{`"Untagged"`}},
				{"Unsupported argument", "agent.hcl:2:1-2:8", []string{`"Ignored"`}},
			},
		},
		{
			name: "block written as attribute",
			src:  "buffer = {}\n",
			want: []wantDiag{{"Unsupported argument", "agent.hcl:1:1-1:7", []string{`define a block of type "buffer"`}}},
		},
		{
			name: "list for string",
			src:  "node_name = [\"a\", \"b\"]\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:1:13-1:23", []string{`"node_name"`, "a string is required", "got a list"}}},
		},
		{
			name: "object for string",
			src:  "node_name = { a = 1 }\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:1:13-1:22", []string{`"node_name"`, "a string is required", "got an object"}}},
		},
		{
			name: "string for bool",
			src:  "buffer {\n  sync = \"abc\"\n}\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:2:10-2:15", []string{`"sync"`, "a bool (true or false) is required", `got the string "abc"`}}},
		},
		{
			name: "string for int",
			src:  "kafka {\n  brokers    = [\"b\"]\n  partitions = \"abc\"\n}\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:3:16-3:21", []string{`"partitions"`, "a whole number is required", `got the string "abc"`}}},
		},
		{
			name: "fraction for int",
			src:  "output \"a\" {\n  workers = 1.5\n}\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:2:13-2:16", []string{`"workers"`, "a whole number is required", "got the number 1.5"}}},
		},
		{
			name: "int32 overflow",
			src:  "kafka {\n  brokers    = [\"b\"]\n  partitions = 3000000000\n}\n",
			want: []wantDiag{{"Invalid value", "agent.hcl:3:16-3:26", []string{`"partitions"`, "out of range for a 32-bit integer", "3e+09"}}},
		},
		{
			name: "string for float",
			src:  "sample_ratio = \"half\"\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:1:16-1:22", []string{`"sample_ratio"`, "a number is required"}}},
		},
		{
			name: "nested list for list of strings",
			src:  "kafka {\n  brokers = [\"a\", [\"b\"]]\n}\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:2:13-2:25", []string{`"brokers"`, "a list of strings is required"}}},
		},
		{
			name: "null element in list",
			src:  "kafka {\n  brokers = [\"a\", null]\n}\n",
			want: []wantDiag{{"Invalid value", "agent.hcl:2:13-2:24", []string{`Element 1 of "brokers" is null`}}},
		},
		{
			name: "list for map",
			src:  "kafka {\n  brokers = [\"a\"]\n  labels  = [\"a\"]\n}\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:3:13-3:18", []string{`"labels"`, "a map of strings is required", "got a list"}}},
		},
		{
			name: "secret value is not echoed",
			src:  "kafka {\n  brokers  = [\"a\"]\n  password = [\"hunter2\"]\n}\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:3:14-3:25", []string{`"password"`, "a string is required", "got a list"}}},
		},
		{
			name: "value from env() is not echoed",
			src:  "kafka {\n  brokers    = [\"a\"]\n  partitions = env(\"SHIPPER_TEST_PW\")\n}\n",
			env:  map[string]string{"SHIPPER_TEST_PW": "hunter2"},
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:3:16-3:38", []string{`"partitions"`, "a whole number is required, but got a string."}}},
		},
		{
			name: "long value is shortened",
			src:  "buffer {\n  sync = \"" + strings.Repeat("x", 50) + "\"\n}\n",
			want: []wantDiag{{"Incorrect attribute value type", "agent.hcl:2:10-2:62", []string{`got the string "` + strings.Repeat("x", 40) + `..."`}}},
		},
		{
			name: "bad duration",
			src:  "buffer {\n  flush_interval = \"5x\"\n}\n",
			want: []wantDiag{{"Invalid duration", "agent.hcl:2:20-2:24", []string{`"flush_interval"`, `"250ms", "5s", "1m30s"`, `got the string "5x"`}}},
		},
		{
			name: "duration without unit",
			src:  "buffer {\n  flush_interval = 5\n}\n",
			want: []wantDiag{{"Invalid duration", "agent.hcl:2:20-2:21", []string{`"flush_interval"`, "units: ns, us, ms, s, m, h", "got the number 5"}}},
		},
		{
			name: "negative duration",
			src:  "buffer {\n  flush_interval = \"-1s\"\n}\n",
			want: []wantDiag{{"Invalid duration", "agent.hcl:2:20-2:25", []string{`"flush_interval" must not be negative`, `"-1s"`}}},
		},
		{
			name: "bad size",
			src:  "buffer {\n  chunk_size = \"5x\"\n}\n",
			want: []wantDiag{{"Invalid size", "agent.hcl:2:16-2:20", []string{`"chunk_size"`, `"64MiB"`, "whole number of bytes", "KiB, MiB", `got the string "5x"`}}},
		},
		{
			name: "negative size",
			src:  "buffer {\n  chunk_size = -1\n}\n",
			want: []wantDiag{{"Invalid size", "agent.hcl:2:16-2:18", []string{`"chunk_size"`, "got the number -1"}}},
		},
		{
			name: "fractional byte count",
			src:  "buffer {\n  chunk_size = 1.5\n}\n",
			want: []wantDiag{{"Invalid size", "agent.hcl:2:16-2:19", []string{`"chunk_size"`, "whole number of bytes", "got the number 1.5"}}},
		},
		{
			name: "size too large",
			src:  "buffer {\n  chunk_size = \"9000000TiB\"\n  memory_limit = 9223372036854775807\n}\n",
			want: []wantDiag{
				{"Invalid size", "agent.hcl:2:16-2:28", []string{`"chunk_size" is too large`}},
				{"Invalid size", "agent.hcl:3:18-3:37", []string{`"memory_limit" is too large`}},
			},
		},
		{
			name: "size of wrong type",
			src:  "buffer {\n  chunk_size = true\n}\n",
			want: []wantDiag{{"Invalid size", "agent.hcl:2:16-2:20", []string{`"chunk_size"`, "got the bool true"}}},
		},
		{
			name: "missing required argument",
			src:  "kafka {\n  topics = [\"t\"]\n}\n",
			// hcl places it at the block's opening brace.
			want: []wantDiag{{"Missing required argument", "agent.hcl:1:7-1:7", []string{`The argument "brokers" is required`}}},
		},
		{
			name: "required argument set to null",
			src:  "kafka {\n  brokers = null\n}\n",
			want: []wantDiag{{"Missing required argument", "agent.hcl:2:13-2:17", []string{`"brokers" is required and must not be null`}}},
		},
		{
			name: "duplicate block",
			src:  "buffer {\n}\n\nbuffer {\n  dir = \"/x\"\n}\n",
			want: []wantDiag{{"Duplicate buffer block", "agent.hcl:4:1-4:7", []string{`Only one "buffer" block`, "agent.hcl:1:1"}}},
		},
		{
			name: "missing label",
			src:  "output {\n}\n",
			want: []wantDiag{{"Missing name for output", "agent.hcl:1:8-1:9", nil}},
		},
		{
			name: "extra label",
			src:  "output \"a\" \"b\" {\n}\n",
			want: []wantDiag{{"Extraneous label for output", "agent.hcl:1:12-1:15", nil}},
		},
		{
			name: "env unset without default",
			src:  "node_name = env(\"SHIPPER_TEST_UNSET\")\n",
			want: []wantDiag{{"Environment variable not set", "agent.hcl:1:13-1:38", []string{`"SHIPPER_TEST_UNSET" is not set`, `env("SHIPPER_TEST_UNSET", "...")`}}},
		},
		{
			name: "env unset inside a template",
			src:  "node_name = \"node-${env(\"SHIPPER_TEST_UNSET\")}\"\n",
			want: []wantDiag{{"Environment variable not set", "agent.hcl:1:21-1:46", []string{`"SHIPPER_TEST_UNSET" is not set`}}},
		},
		{
			name: "env unset evaluated twice is reported once",
			src:  "kafka {\n  brokers = [for b in [\"a\", \"b\"] : env(\"SHIPPER_TEST_UNSET\")]\n}\n",
			want: []wantDiag{{"Environment variable not set", "agent.hcl:2:36-2:61", []string{`"SHIPPER_TEST_UNSET" is not set`}}},
		},
		{
			name: "env with too many arguments",
			src:  "node_name = env(\"A\", \"b\", \"c\")\n",
			want: []wantDiag{{"Invalid function argument", "agent.hcl:1:28-1:29", []string{"optional default, no more"}}},
		},
		{
			name: "every error in one run, in file order",
			src:  "sample_ratio = \"x\"\nbuffer {\n  chunk_size = \"5x\"\n  flush_interval = \"5x\"\n}\nnode_name = [1]\n",
			want: []wantDiag{
				{"Incorrect attribute value type", "agent.hcl:1:16-1:19", []string{`"sample_ratio"`}},
				{"Invalid size", "agent.hcl:3:16-3:20", []string{`"chunk_size"`}},
				{"Invalid duration", "agent.hcl:4:20-4:24", []string{`"flush_interval"`}},
				{"Incorrect attribute value type", "agent.hcl:6:13-6:16", []string{`"node_name"`}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, diags, files := decodeSrc(t, tt.src, tt.env)
			rendered := FormatDiagnostics(files, diags)
			if len(diags) != len(tt.want) {
				t.Fatalf("got %d diagnostics, want %d:\n%s", len(diags), len(tt.want), rendered)
			}
			for i, w := range tt.want {
				d := diags[i]
				if d.Severity != hcl.DiagError {
					t.Errorf("diag %d: severity %v, want error", i, d.Severity)
				}
				if d.Summary != w.summary {
					t.Errorf("diag %d: summary %q, want %q", i, d.Summary, w.summary)
				}
				if got := at(d.Subject); got != w.at {
					t.Errorf("diag %d: subject at %s, want %s", i, got, w.at)
				}
				for _, s := range w.detail {
					if !strings.Contains(d.Detail, s) {
						t.Errorf("diag %d: detail %q does not contain %q", i, d.Detail, s)
					}
				}
			}
			if t.Failed() {
				t.Logf("rendered:\n%s", rendered)
			}
			if strings.Contains(diagsDetail(diags), "hunter2") {
				t.Errorf("a diagnostic detail echoes the secret:\n%s", rendered)
			}
		})
	}
}

func diagsDetail(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		b.WriteString(d.Summary + " " + d.Detail + "\n")
	}
	return b.String()
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name     string
		expr     string
		env      map[string]string
		want     string
		wantDiag string
	}{
		{"set, no default", `env("SHIPPER_TEST_X")`, map[string]string{"SHIPPER_TEST_X": "from-env"}, "from-env", ""},
		{"set, with default", `env("SHIPPER_TEST_X", "dflt")`, map[string]string{"SHIPPER_TEST_X": "from-env"}, "from-env", ""},
		{"set to empty counts as set", `env("SHIPPER_TEST_X", "dflt")`, map[string]string{"SHIPPER_TEST_X": ""}, "", ""},
		{"unset, with default", `env("SHIPPER_TEST_X", "dflt")`, nil, "dflt", ""},
		{"unset, no default", `env("SHIPPER_TEST_X")`, nil, "default-node", "Environment variable not set"},
		{"in a template", `"${env("SHIPPER_TEST_X")}-1"`, map[string]string{"SHIPPER_TEST_X": "n"}, "n-1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, diags, files := decodeSrc(t, "node_name = "+tt.expr+"\n", tt.env)
			if tt.wantDiag == "" && len(diags) > 0 {
				t.Fatalf("unexpected diagnostics:\n%s", FormatDiagnostics(files, diags))
			}
			if tt.wantDiag != "" && (len(diags) != 1 || diags[0].Summary != tt.wantDiag) {
				t.Fatalf("want one %q diagnostic, got:\n%s", tt.wantDiag, FormatDiagnostics(files, diags))
			}
			if cfg.NodeName != tt.want {
				t.Errorf("node_name = %q, want %q", cfg.NodeName, tt.want)
			}
		})
	}
}

// TestEvalContextReadsProcessEnv checks the real environment is wired in;
// the other tests use EvalContextWith to stay hermetic.
func TestEvalContextReadsProcessEnv(t *testing.T) {
	t.Setenv("SHIPPER_TEST_PROCESS_ENV", "from-process")
	body, files, diags := ParseFile("agent.hcl", []byte("node_name = env(\"SHIPPER_TEST_PROCESS_ENV\")\n"))
	cfg := defaults()
	_, d := Decode(body, EvalContext(), &cfg)
	diags = append(diags, d...)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(files, diags))
	}
	if cfg.NodeName != "from-process" {
		t.Errorf("node_name = %q, want from-process", cfg.NodeName)
	}
}

func TestNestedBlocks(t *testing.T) {
	src := `buffer {
  dir = "/data"
}
output "a" {
  url = "http://a"
}
output "b" {
  workers = 2
}
`
	cfg, pos, diags, files := decodeSrc(t, src, nil)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(files, diags))
	}
	if cfg.Buffer.Dir != "/data" || cfg.Buffer.ChunkSize != 4<<20 || !cfg.Buffer.Sync {
		t.Errorf("buffer = %+v, want dir set and the other defaults kept", cfg.Buffer)
	}
	wantOut := []outputConfig{{Name: "a", URL: "http://a"}, {Name: "b", Workers: 2}}
	if !reflect.DeepEqual(cfg.Outputs, wantOut) {
		t.Errorf("outputs = %+v, want %+v", cfg.Outputs, wantOut)
	}
	if got := at(pos.FieldRange("output[1].name").Ptr()); got != "agent.hcl:7:8-7:11" {
		t.Errorf("output[1] label at %s, want agent.hcl:7:8-7:11", got)
	}
}

func TestFieldRange(t *testing.T) {
	_, pos, diags, files := decodeFile(t, "testdata/valid.hcl", map[string]string{"SHIPPER_TEST_KAFKA_PASSWORD": "x"})
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(files, diags))
	}
	const f = "testdata/valid.hcl"
	tests := []struct {
		path string
		want string
	}{
		{"node_name", f + ":2:16-2:28"},
		{"NodeName", f + ":2:16-2:28"},
		{"buffer.chunk_size", f + ":18:20-18:26"},
		{"Buffer.ChunkSize", f + ":18:20-18:26"},
		{"buffer.ChunkSize", f + ":18:20-18:26"},
		{"buffer", f + ":16:1-16:7"},
		{"output[1].url", f + ":29:9-29:28"},
		{"Outputs[1].URL", f + ":29:9-29:28"},
		{"output[0].name", f + ":23:8-23:17"},
		{"output", f + ":23:1-23:17"},
		// Not set in the file: the enclosing block that is.
		{"buffer.sync", f + ":16:1-16:7"},
		{"Kafka.Group", f + ":5:1-5:6"},
		{"output[1].workers", f + ":28:1-28:18"},
		// An index beyond the blocks falls back to the first block.
		{"output[7].url", f + ":23:1-23:17"},
		// Unknown names fall back to the nearest known ancestor.
		{"buffer.no_such_field", f + ":16:1-16:7"},
		// Nothing set: the start of the file.
		{"untagged_nothing", f + ":1:1-1:1"},
		{"", f + ":1:1-1:1"},
	}
	for _, tt := range tests {
		if got := at(pos.FieldRange(tt.path).Ptr()); got != tt.want {
			t.Errorf("FieldRange(%q) = %s, want %s", tt.path, got, tt.want)
		}
	}

	_, pos, _, _ = decodeSrc(t, "node_name = \"x\"\n", nil)
	if got := at(pos.FieldRange("buffer.chunk_size").Ptr()); got != "agent.hcl:1:1-1:1" {
		t.Errorf("FieldRange in an absent block = %s, want the file start agent.hcl:1:1-1:1", got)
	}
	var nilPos *Positions
	if r := nilPos.FieldRange("x"); r != (hcl.Range{}) {
		t.Errorf("nil Positions returned %v", r)
	}
}

// TestGolden renders whole files' diagnostics, where the exact text matters.
// Run with -update to rewrite the .golden files after a deliberate change.
func TestGolden(t *testing.T) {
	tests := []struct {
		file     string
		validate bool
	}{
		{"testdata/errors.hcl", false},
		{"testdata/validate.hcl", true},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			cfg, pos, diags, files := decodeFile(t, tt.file, nil)
			if tt.validate {
				if diags.HasErrors() {
					t.Fatalf("decode: %s", FormatDiagnostics(files, diags))
				}
				diags = pos.Diagnostics(cfg.Validate())
			}
			got := FormatDiagnostics(files, diags)
			golden := strings.TrimSuffix(tt.file, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("diagnostics differ from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestValidateDiagnostics(t *testing.T) {
	cfg, pos, diags, files := decodeFile(t, "testdata/validate.hcl", nil)
	if diags.HasErrors() {
		t.Fatal(FormatDiagnostics(files, diags))
	}
	cfg.Buffer.Dir = "" // not in the file: must point at the buffer block
	diags = pos.Diagnostics(cfg.Validate())
	want := []struct{ summary, at, detail string }{
		{`Invalid value for "buffer.memory_limit"`, "testdata/validate.hcl:7:18-7:25", "Must be at least chunk_size (64MiB), got 32MiB."},
		{`Invalid value for "buffer.dir"`, "testdata/validate.hcl:5:1-5:7", `Must not be empty. ("buffer.dir" is not set in the file, so its default applies.)`},
		{`Invalid value for "output[0].url"`, "testdata/validate.hcl:11:9-11:21", `Must be an http or https URL, got "ftp://es-1".`},
	}
	if len(diags) != len(want) {
		t.Fatalf("got %d diagnostics, want %d:\n%s", len(diags), len(want), FormatDiagnostics(files, diags))
	}
	for i, w := range want {
		d := diags[i]
		if d.Summary != w.summary || at(d.Subject) != w.at || d.Detail != w.detail {
			t.Errorf("diag %d = {%q %s %q}, want {%q %s %q}", i, d.Summary, at(d.Subject), d.Detail, w.summary, w.at, w.detail)
		}
	}
	// The whole "name = value" is the context of an attribute's error.
	if d := diags[0]; d.Context == nil || at(d.Context) != "testdata/validate.hcl:7:3-7:25" {
		t.Errorf("context of memory_limit error = %s, want testdata/validate.hcl:7:3-7:25", at(d.Context))
	}

	// A plain error, not about one field, goes to the start of the file.
	diags = pos.Diagnostics(errors.New("no outputs configured"))
	if len(diags) != 1 || diags[0].Summary != "Invalid configuration" || diags[0].Detail != "No outputs configured." ||
		at(diags[0].Subject) != "testdata/validate.hcl:1:1-1:1" {
		t.Errorf("plain error gave %s", FormatDiagnostics(files, diags))
	}
	if diags := pos.Diagnostics(nil); len(diags) != 0 {
		t.Errorf("nil error gave %d diagnostics", len(diags))
	}
}

func TestFieldErrorAndNest(t *testing.T) {
	base := errors.New("too small")
	tests := []struct {
		name      string
		err       error
		wantPaths []string
		wantMsg   string
	}{
		{"field error", Nest("buffer", &FieldError{Path: "memory_limit", Err: base}), []string{"buffer.memory_limit"}, "buffer.memory_limit: too small"},
		{"plain error names the block", Nest("buffer", base), []string{"buffer"}, "buffer: too small"},
		{"index prefix", Nest("output[2]", Errorf("url", "bad")), []string{"output[2].url"}, "output[2].url: bad"},
		{"nested twice", Nest("agent", Nest("buffer", Errorf("dir", "bad"))), []string{"agent.buffer.dir"}, "agent.buffer.dir: bad"},
		{"joined", Nest("buffer", errors.Join(Errorf("dir", "a"), Errorf("chunk_size", "b"))), []string{"buffer.dir", "buffer.chunk_size"}, "buffer.dir: a\nbuffer.chunk_size: b"},
		{"empty path", Nest("buffer", &FieldError{Err: base}), []string{"buffer"}, "buffer: too small"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err.Error() != tt.wantMsg {
				t.Errorf("Error() = %q, want %q", tt.err.Error(), tt.wantMsg)
			}
			var paths []string
			for _, e := range flatten(tt.err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("errors.As found no *FieldError in %v", e)
				}
				paths = append(paths, fe.Path)
			}
			if !reflect.DeepEqual(paths, tt.wantPaths) {
				t.Errorf("paths = %q, want %q", paths, tt.wantPaths)
			}
		})
	}
	if Nest("buffer", nil) != nil {
		t.Error("Nest of nil is not nil")
	}
	// errors.As and errors.Is see through a FieldError and through wrapping.
	wrapped := fmt.Errorf("loading: %w", Nest("buffer", &FieldError{Path: "dir", Err: base}))
	var fe *FieldError
	if !errors.As(wrapped, &fe) || fe.Path != "buffer.dir" {
		t.Errorf("errors.As through fmt wrapping: %v", fe)
	}
	if !errors.Is(wrapped, base) {
		t.Error("errors.Is does not reach the underlying error")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	const secret = "hunter2-very-secret"
	for _, src := range []string{
		"kafka {\n  brokers = [\"b\"]\n  password = \"" + secret + "\"\n}\n",
		"kafka {\n  brokers = [\"b\"]\n  password = env(\"SHIPPER_TEST_PW\")\n}\n",
	} {
		cfg, _, diags, files := decodeSrc(t, src, map[string]string{"SHIPPER_TEST_PW": secret})
		if diags.HasErrors() {
			t.Fatal(FormatDiagnostics(files, diags))
		}
		if cfg.Kafka.Password.Reveal() != secret {
			t.Fatalf("password not decoded: got %d bytes", len(cfg.Kafka.Password.Reveal()))
		}
		out := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)
		if strings.Contains(out, secret) {
			t.Errorf("secret printed: %s", out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("expected [redacted] in %s", out)
		}
	}
}

func TestTidy(t *testing.T) {
	r := func(line, col, byteOff int) *hcl.Range {
		return &hcl.Range{Filename: "f", Start: hcl.Pos{Line: line, Column: col, Byte: byteOff}, End: hcl.Pos{Line: line, Column: col + 1, Byte: byteOff + 1}}
	}
	in := hcl.Diagnostics{
		{Severity: hcl.DiagError, Summary: "no subject"},
		{Severity: hcl.DiagError, Summary: "b", Subject: r(2, 1, 10)},
		{Severity: hcl.DiagError, Summary: "a", Subject: r(1, 1, 0)},
		{Severity: hcl.DiagError, Summary: "b", Subject: r(2, 1, 10)},
		{Severity: hcl.DiagError, Summary: "b", Detail: "other", Subject: r(2, 1, 10)},
	}
	var got []string
	for _, d := range tidy(in) {
		got = append(got, d.Summary+"/"+d.Detail)
	}
	want := []string{"a/", "b/", "b/other", "no subject/"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tidy = %q, want %q", got, want)
	}
}

func TestParseFileSyntaxError(t *testing.T) {
	_, files, diags := ParseFile("bad.hcl", []byte("buffer {\n  dir = \n}\n"))
	if !diags.HasErrors() {
		t.Fatal("no diagnostics for a syntax error")
	}
	out := FormatDiagnostics(files, diags)
	if !strings.HasPrefix(out, "bad.hcl:2:") || !strings.Contains(out, "   2:   dir = ") {
		t.Errorf("rendered syntax error lacks position or snippet:\n%s", out)
	}
}

func TestDecodePanicsOnProgrammingErrors(t *testing.T) {
	type badType struct {
		C chan int `hcl:"c"`
	}
	type badOption struct {
		A string `hcl:"a,sometimes"`
	}
	type dupName struct {
		A string `hcl:"a"`
		B string `hcl:"a"`
	}
	type unexported struct {
		a string `hcl:"a"`
	}
	type badBlock struct {
		B string `hcl:"b,block"`
	}
	type twoLabels struct {
		A string `hcl:"a,label"`
		B string `hcl:"b,label"`
	}
	type labelledBlocks struct {
		L []twoLabels `hcl:"l,block"`
	}
	type rootLabel struct {
		A string `hcl:"a,label"`
	}
	type nestedBad struct {
		Inner badType `hcl:"inner,block"`
	}
	_ = unexported{a: ""}
	tests := []struct {
		name   string
		target any
		want   string
	}{
		{"not a pointer", config{}, "non-nil pointer to a struct"},
		{"nil pointer", (*config)(nil), "non-nil pointer to a struct"},
		{"pointer to non-struct", new(int), "non-nil pointer to a struct"},
		{"unsupported type", &badType{}, "unsupported attribute type chan int"},
		{"unknown option", &badOption{}, `unknown hcl tag option "sometimes"`},
		{"duplicate name", &dupName{}, `"a" is used twice`},
		{"unexported", &unexported{}, "unexported"},
		{"block of non-struct", &badBlock{}, "must be a struct or a slice of structs"},
		{"two labels", &labelledBlocks{}, "only one is supported"},
		{"label at the root", &rootLabel{}, "top-level struct cannot have a label"},
		// Reported even though the file does not use the block.
		{"bad type in unused block", &nestedBad{}, "unsupported attribute type chan int"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("Decode did not panic")
				}
				if msg := fmt.Sprint(r); !strings.Contains(msg, tt.want) {
					t.Errorf("panic %q does not contain %q", msg, tt.want)
				}
			}()
			body, _, _ := ParseFile("x.hcl", nil)
			Decode(body, EvalContext(), tt.target)
		})
	}
}
