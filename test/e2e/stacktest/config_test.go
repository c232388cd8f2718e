package stacktest

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestVersionsComeFromPom(t *testing.T) {
	if KafkaVersion != "3.9.2" || ESVersion != "8.19.21" {
		t.Fatalf("KafkaVersion=%q ESVersion=%q; update the test if pom.xml changed on purpose", KafkaVersion, ESVersion)
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || p > 65535 || seen[p] {
			t.Fatalf("bad or repeated port %d in %v", p, ports)
		}
		seen[p] = true
	}
}

func TestNewClusterID(t *testing.T) {
	for range 200 {
		id := newClusterID()
		if len(id) != 22 || strings.HasPrefix(id, "-") {
			t.Fatalf("bad cluster id %q", id)
		}
		if b, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(b) != 16 {
			t.Fatalf("cluster id %q does not decode to 16 bytes: %v", id, err)
		}
	}
}

func TestServerProperties(t *testing.T) {
	got := kafkaConfig{Port: 1001, ControllerPort: 1002, DataDir: "/d"}.serverProperties()
	for _, want := range []string{
		"process.roles=broker,controller\n",
		"controller.quorum.voters=1@127.0.0.1:1002\n",
		"listeners=PLAINTEXT://127.0.0.1:1001,CONTROLLER://127.0.0.1:1002\n",
		"advertised.listeners=PLAINTEXT://127.0.0.1:1001\n",
		"log.dirs=/d\n",
		"offsets.topic.replication.factor=1\n",
		"transaction.state.log.min.isr=1\n",
		"group.initial.rebalance.delay.ms=0\n",
		"auto.create.topics.enable=true\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("server.properties lacks %q:\n%s", want, got)
		}
	}
}

func TestElasticsearchYML(t *testing.T) {
	got := esConfig{HTTPPort: 2001, TransportPort: 2002, DataDir: "/data dir", LogsDir: "/l"}.elasticsearchYML()
	for _, want := range []string{
		"network.host: 127.0.0.1\n",
		"http.port: 2001\n",
		"transport.port: 2002\n",
		"discovery.type: single-node\n",
		"cluster.routing.allocation.disk.threshold_enabled: false\n",
		`path.data: "/data dir"` + "\n",
		`path.logs: "/l"` + "\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("elasticsearch.yml lacks %q:\n%s", want, got)
		}
	}
}

func TestParseJavaMajor(t *testing.T) {
	for out, want := range map[string]int{
		`openjdk version "17.0.15" 2025-04-15`:                       17,
		`openjdk version "25" 2025-09-16 LTS`:                        25,
		`openjdk version "21-ea" 2023-09-19`:                         21,
		`java version "1.8.0_402"`:                                   8,
		"Picked up JAVA_TOOL_OPTIONS: x\nopenjdk version \"11.0.2\"": 11,
	} {
		got, err := parseJavaMajor(out)
		if err != nil || got != want {
			t.Errorf("parseJavaMajor(%q) = %d, %v; want %d", out, got, err, want)
		}
	}
	if _, err := parseJavaMajor("no version here"); err == nil {
		t.Error("parseJavaMajor accepted output without a version")
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines([]byte("a\nb\nc\n"), 2); got != "b\nc" {
		t.Errorf("got %q", got)
	}
	if got := lastLines([]byte("a\n"), 5); got != "a" {
		t.Errorf("got %q", got)
	}
	if got := lastLines(nil, 5); got != "" {
		t.Errorf("got %q", got)
	}
}

func TestReadProcSelf(t *testing.T) {
	p, ok := readProc(1)
	if !ok {
		t.Fatal("cannot read /proc/1/stat; the stack needs Linux /proc")
	}
	if !alive(1, 0) {
		t.Error("pid 1 should be alive")
	}
	if alive(1, p.StartTime+1) {
		t.Error("a different start time must not count as the same process")
	}
}

func TestESHealth(t *testing.T) {
	var status, code = "red", 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_cluster/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"cluster_name":"x","status":%q}`, status)
	}))
	defer srv.Close()
	ctx := context.Background()
	if got, err := esHealth(ctx, srv.URL, false); err != nil || got != "red" {
		t.Errorf("red cluster, reuse check: got %q, %v; want red, nil", got, err)
	}
	code = http.StatusRequestTimeout // what wait_for_status answers when it times out
	if _, err := esHealth(ctx, srv.URL, true); err == nil {
		t.Error("a 408 from wait_for_status=yellow must be an error")
	}
	status, code = "yellow", 200
	if got, err := esHealth(ctx, srv.URL, true); err != nil || got != "yellow" {
		t.Errorf("got %q, %v; want yellow, nil", got, err)
	}
}
