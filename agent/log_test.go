package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// logLines decodes JSON log lines.
func logLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// Repeated warnings are written once per window per message and
// component; the next one says how many were left out. Info lines (state
// changes) are never limited. The level changes at run time.
func TestLoggerRateLimitsRepeats(t *testing.T) {
	var b bytes.Buffer
	log, level := NewLogger(LogConfig{Level: "info", Format: "json"}, &b)
	es, kafka := log.With("component", "elasticsearch"), log.With("component", "kafka")
	for range 50 {
		es.Warn("bulk request failed; retrying", "err", "503")
		kafka.Warn("bulk request failed; retrying", "err", "other component")
		es.Info("node dead", "node", "a")
	}
	lines := logLines(t, &b)
	var warns, infos int
	for _, l := range lines {
		switch l["level"] {
		case "WARN":
			warns++
		case "INFO":
			infos++
		}
	}
	if warns != 2 || infos != 50 {
		t.Fatalf("%d warnings (want 2: one per component) and %d info lines (want 50)", warns, infos)
	}
	// A record past the window carries the count of those left out.
	h := log.Handler()
	r := slog.NewRecord(time.Now().Add(repeatWindow+time.Second), slog.LevelWarn, "bulk request failed; retrying", 0)
	b.Reset()
	if err := h.WithAttrs([]slog.Attr{slog.String("component", "elasticsearch")}).Handle(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if l := logLines(t, &b); len(l) != 1 || l[0]["suppressed"] != float64(49) {
		t.Fatalf("after the window: %v, want one line with suppressed=49", l)
	}

	b.Reset()
	log.Debug("hidden")
	level.Set(slog.LevelDebug)
	log.Debug("shown")
	if l := logLines(t, &b); len(l) != 1 || l[0]["msg"] != "shown" {
		t.Fatalf("after the level changed to debug: %v", l)
	}
}

// The agent keeps its last warnings and errors, repeats counted in one
// entry, newest first, bounded.
func TestRecentErrors(t *testing.T) {
	recent := &recentLog{}
	var b bytes.Buffer
	base, _ := NewLogger(LogConfig{Level: "error", Format: "json"}, &b)
	log := slog.New(&recentHandler{next: base.Handler(), log: recent})
	es := log.With("component", "elasticsearch")
	for range 3 {
		es.Warn("bulk request failed; retrying", "err", "503 Service Unavailable")
	}
	log.Error("ack chunk", "err", "disk full")
	got := recent.list()
	if len(got) != 2 || got[0].Message != "ack chunk" || got[0].Err != "disk full" ||
		got[1].Count != 3 || got[1].Component != "elasticsearch" || got[1].Level != "WARN" {
		t.Fatalf("recent: %+v", got)
	}
	if strings.Contains(b.String(), "bulk request failed") {
		t.Fatal("a warning below the configured level (error) was written")
	}
	for i := range 2 * maxRecent {
		log.Error("error", "err", i)
	}
	if got := recent.list(); len(got) != 3 || got[0].Count != 2*maxRecent {
		t.Fatalf("repeats in a row are one entry: %+v", got)
	}
	for i := range 2 * maxRecent {
		log.Error("error " + string(rune('a'+i%26)) + string(rune('a'+i/26)))
	}
	if got := recent.list(); len(got) != maxRecent {
		t.Fatalf("%d entries kept, want %d", len(got), maxRecent)
	}
}
