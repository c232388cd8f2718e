package agent

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/shipper-agent/shipper"
)

func TestReload(t *testing.T) {
	running := DefaultConfig()
	running.Kafka.Topics = []string{"t"}
	level := new(slog.LevelVar)
	level.Set(slog.LevelInfo)

	next := running
	next.Log.Level = "debug"
	next.Elasticsearch.URLs = []string{"http://es-2:9200"}
	next.Elasticsearch.Password = shipper.Secret("new-secret")
	next.Buffer.ChunkSize = 8 << 20
	eff, applied, restart := Reload(running, next, level)
	if level.Level() != slog.LevelDebug || eff.Log.Level != "debug" || !slices.Equal(applied, []string{"log.level"}) {
		t.Fatalf("log.level not applied: level %v, effective %q, applied %v", level.Level(), eff.Log.Level, applied)
	}
	want := []string{"buffer.chunk_size", "elasticsearch.password", "elasticsearch.urls"}
	if !slices.Equal(restart, want) {
		t.Fatalf("needs restart: %v, want %v", restart, want)
	}
	if eff.Elasticsearch.URLs[0] != running.Elasticsearch.URLs[0] {
		t.Fatal("a setting that needs a restart became effective")
	}
	// Reloading the same file again reports the same, nothing new applied.
	_, applied, restart = Reload(eff, next, level)
	if len(applied) != 0 || !slices.Equal(restart, want) {
		t.Fatalf("second reload: applied %v, restart %v", applied, restart)
	}
	if _, applied, restart := Reload(running, running, level); len(applied)+len(restart) != 0 {
		t.Fatalf("an unchanged file: applied %v, restart %v", applied, restart)
	}
}
