package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfig(t *testing.T) {
	for _, v := range []string{"SHIPPER_DATA_DIR", "KAFKA_BROKERS", "ES_URL", "ES_USERNAME", "ES_PASSWORD", "SHIPPER_TOPIC"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	cfg, err := LoadConfig("../config.example.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// The example documents the defaults: decoding it must change nothing
	// but the values it derives from the environment's defaults.
	want := DefaultConfig()
	want.Kafka.Topics = []string{"app-logs"}
	want.Elasticsearch.Username = ""
	want.resolve()
	if got, w := fmt.Sprintf("%+v", cfg), fmt.Sprintf("%+v", want); got != w {
		t.Fatalf("config.example.hcl differs from the defaults:\n got %s\nwant %s", got, w)
	}
	if cfg.Buffer.Dir != "/var/lib/shipper/buffer" {
		t.Fatalf("buffer dir = %q", cfg.Buffer.Dir)
	}
}

func TestExampleConfigFromEnvironment(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "k1:9092,k2:9092")
	t.Setenv("ES_URL", "https://es.example:9200")
	t.Setenv("ES_USERNAME", "shipper")
	t.Setenv("ES_PASSWORD", "hunter2-secret")
	t.Setenv("SHIPPER_DATA_DIR", "/data")
	cfg, err := LoadConfig("../config.example.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.Kafka.BrokerList()); got != "[k1:9092 k2:9092]" {
		t.Errorf("brokers = %s", got)
	}
	if cfg.Elasticsearch.Password.Reveal() != "hunter2-secret" || cfg.Buffer.Dir != "/data/buffer" {
		t.Errorf("env not applied: %+v", cfg)
	}
	if s := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg); strings.Contains(s, "hunter2") {
		t.Fatal("the password appears in the printed config")
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // each must appear in the error text
	}{
		{"unknown attribute", "data_dir = \"/x\"\nkafka {\n  topics = [\"a\"]\n  brokres = [\"b:1\"]\n}\n",
			[]string{"cfg.hcl:4:3: Error: Unsupported argument", `Did you mean "brokers"?`}},
		{"unknown block", "kafak {\n}\n", []string{"cfg.hcl:1:1: Error: Unsupported block type"}},
		{"bad size", "kafka {\n  topics = [\"a\"]\n}\nbuffer {\n  chunk_size = \"5x\"\n}\n",
			[]string{"cfg.hcl:5:16: Error: Invalid size", `"5x"`}},
		{"bad duration", "shutdown_timeout = \"soon\"\nkafka {\n  topics = [\"a\"]\n}\n",
			[]string{"cfg.hcl:1:20: Error: Invalid duration"}},
		{"wrong type", "kafka {\n  topics = \"a\"\n}\n", []string{"cfg.hcl:2:12:", "topics"}},
		{"missing topics", "kafka {\n  group_id = \"g\"\n}\n", []string{"cfg.hcl:1:1:", "kafka.topics", "t least one topic is required"}},
		{"semantic", "kafka {\n  topics = [\"a\"]\n}\nbuffer {\n  memory_limit = \"1MiB\"\n}\n",
			[]string{"cfg.hcl:5:18:", "buffer.memory_limit", "at least 4 × chunk_size"}},
		{"unset env", "kafka {\n  topics = [env(\"SHIPPER_TEST_SURELY_UNSET\")]\n}\n",
			[]string{"cfg.hcl:2:", "SHIPPER_TEST_SURELY_UNSET"}},
		{"syntax", "kafka {\n  topics = [\"a\"\n}\n", []string{"cfg.hcl:"}},
		{"missing secret file", "kafka {\n  topics = [\"a\"]\n}\nelasticsearch {\n  username = \"u\"\n  password_file = \"/nonexistent/pw\"\n}\n",
			[]string{"cfg.hcl:6:19:", "elasticsearch.password_file", "/nonexistent/pw", "no such file"}},
		{"two schemes", "kafka {\n  topics = [\"a\"]\n}\nelasticsearch {\n  username = \"u\"\n  password = \"p\"\n  api_key = \"k\"\n}\n",
			[]string{"cfg.hcl:7:13:", "elasticsearch.api_key", "one way to authenticate"}},
		{"tls over http", "kafka {\n  topics = [\"a\"]\n}\nelasticsearch {\n  urls = [\"http://es:9200\"]\n  tls {\n    server_name = \"es\"\n  }\n}\n",
			[]string{"cfg.hcl:6:", "elasticsearch.tls", "https://"}},
		{"missing ca", "kafka {\n  topics = [\"a\"]\n}\nelasticsearch {\n  urls = [\"https://es:9200\"]\n  tls {\n    ca_file = \"/nonexistent/ca.pem\"\n  }\n}\n",
			[]string{"cfg.hcl:7:15:", "elasticsearch.tls.ca_file", "/nonexistent/ca.pem"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("cfg.hcl", []byte(tc.src))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a ConfigError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(ce.Text, w) {
					t.Errorf("error does not contain %q:\n%s", w, ce.Text)
				}
			}
		})
	}
}

func TestConfigOverrides(t *testing.T) {
	src := `
data_dir = "/srv/shipper"
shutdown_timeout = "45s"
kafka {
  topics = ["a", "b"]
}
buffer {
  dir          = "/fast/buffer"
  memory_limit = "128MiB"
}
elasticsearch {
  max_in_flight = 4
}
`
	cfg, err := ParseConfig("cfg.hcl", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownTimeout != 45*time.Second || cfg.Buffer.Dir != "/fast/buffer" || cfg.Buffer.MemoryLimit != 128<<20 ||
		cfg.Elasticsearch.MaxInFlight != 4 || len(cfg.Kafka.Topics) != 2 || cfg.Kafka.GroupID != "shipper" ||
		cfg.Buffer.ChunkSize != 4<<20 {
		t.Fatalf("cfg = %+v", cfg)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "ok.hcl")
	os.WriteFile(path, []byte(src), 0o644)
	if _, err := LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.hcl")); err == nil || !strings.Contains(err.Error(), "missing.hcl") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestMemoryOverhead(t *testing.T) {
	cfg := DefaultConfig()
	// 48 MiB + two 4 MiB memtables (64 MiB / 16) + 4 workers (max_in_flight)
	// × 2 × 4 MiB chunks + 2 × 4 MiB for a dead-letter replay page
	if got := cfg.MemoryOverhead(); got != 96<<20 {
		t.Fatalf("overhead at 64MiB = %d MiB, want 96", got>>20)
	}
	cfg.Buffer.MemoryLimit = 256 << 20 // memtables grow to 16 MiB each
	if got := cfg.MemoryOverhead(); got != 120<<20 || cfg.SoftMemoryLimit() != (256+120)<<20 {
		t.Fatalf("overhead at 256MiB = %d MiB, soft limit %d MiB", got>>20, cfg.SoftMemoryLimit()>>20)
	}
}

// The API refuses to listen beyond loopback without a token.
func TestAPIAddressNeedsTokenOffLoopback(t *testing.T) {
	cases := []struct {
		address, token string
		ok             bool
	}{
		{"127.0.0.1:8686", "", true},
		{"[::1]:8686", "", true},
		{"localhost:8686", "", true},
		{"0.0.0.0:8686", "", false},
		{":8686", "", false},
		{"10.1.2.3:8686", "", false},
		{"0.0.0.0:8686", "t0ken", true},
	}
	for _, c := range cases {
		src := fmt.Sprintf("api {\n  address = %q\n  token = %q\n}\nkafka {\n  topics = [\"t\"]\n}\n", c.address, c.token)
		_, err := ParseConfig("shipper.hcl", []byte(src))
		if c.ok != (err == nil) {
			t.Errorf("address %s, token %q: %v", c.address, c.token, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "api.token") || !strings.Contains(err.Error(), "shipper.hcl:")) {
			t.Errorf("address %s: error does not name api.token and the file: %v", c.address, err)
		}
	}
}
