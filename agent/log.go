package agent

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Logs are structured (log/slog), JSON or text, at a level that can change
// while the agent runs (SIGHUP re-reads log.level). Warnings and errors
// that repeat are rate-limited per message: the first of a window is
// written, the others are counted, and the next one written after the
// window says how many were left out ("suppressed"). State changes are
// logged at info level and never limited. The agent also keeps its last
// warnings and errors for /api/status.

// repeatWindow is how long identical warnings or errors are held back after
// the first.
const repeatWindow = 10 * time.Second

// maxRepeatKeys bounds the messages the rate limiter remembers; past it it
// starts afresh (messages are a fixed set of call sites, so it rarely does).
const maxRepeatKeys = 512

// NewLogger returns the structured logger the configuration asks for, and
// the level it logs at, which a reload may change.
func NewLogger(c LogConfig, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	l, _ := parseLevel(c.Level)
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if c.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(&repeatHandler{next: h, state: &repeatState{seen: map[string]*repeat{}}}), level
}

// repeatHandler rate-limits repeated warnings and errors: one per message
// (and component) per repeatWindow.
type repeatHandler struct {
	next  slog.Handler
	scope string // the attributes and groups added with With, as a key
	state *repeatState
}

type repeatState struct {
	mu   sync.Mutex
	seen map[string]*repeat
}

type repeat struct {
	since      time.Time // the start of the window
	suppressed int
}

func (h *repeatHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *repeatHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	key := r.Level.String() + "\x00" + h.scope + "\x00" + r.Message
	h.state.mu.Lock()
	rep := h.state.seen[key]
	suppressed := 0
	switch {
	case rep != nil && r.Time.Sub(rep.since) < repeatWindow:
		rep.suppressed++
		h.state.mu.Unlock()
		return nil
	case rep != nil:
		suppressed = rep.suppressed
		rep.since, rep.suppressed = r.Time, 0
	default:
		if len(h.state.seen) >= maxRepeatKeys {
			clear(h.state.seen)
		}
		h.state.seen[key] = &repeat{since: r.Time}
	}
	h.state.mu.Unlock()
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *repeatHandler) WithAttrs(as []slog.Attr) slog.Handler {
	scope := h.scope
	for _, a := range as {
		scope += a.String() + ";"
	}
	return &repeatHandler{next: h.next.WithAttrs(as), scope: scope, state: h.state}
}

func (h *repeatHandler) WithGroup(name string) slog.Handler {
	return &repeatHandler{next: h.next.WithGroup(name), scope: h.scope + name + ".", state: h.state}
}

// maxRecent bounds the warnings and errors /api/status shows.
const maxRecent = 20

// LogEntry is a warning or error the agent logged, as /api/status shows it.
type LogEntry struct {
	Time      time.Time `json:"time"`
	Level     string    `json:"level"`
	Message   string    `json:"msg"`
	Component string    `json:"component,omitempty"`
	Err       string    `json:"err,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	// Count is how many times in a row the message was logged (rate
	// limited or not); Time is the last.
	Count int `json:"count"`
}

// recentLog keeps the last maxRecent warnings and errors.
type recentLog struct {
	mu      sync.Mutex
	entries []LogEntry // oldest first
}

func (l *recentLog) add(e LogEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.entries); n > 0 {
		if last := &l.entries[n-1]; last.Message == e.Message && last.Component == e.Component && last.Level == e.Level {
			last.Time, last.Err, last.Reason = e.Time, e.Err, e.Reason
			last.Count++
			return
		}
	}
	e.Count = 1
	if len(l.entries) == maxRecent {
		l.entries = append(l.entries[:0], l.entries[1:]...)
	}
	l.entries = append(l.entries, e)
}

// list returns the entries, newest first.
func (l *recentLog) list() []LogEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]LogEntry, len(l.entries))
	for i, e := range l.entries {
		out[len(out)-1-i] = e
	}
	return out
}

// recentHandler copies the warnings and errors that reach it to a
// recentLog, a message repeated in a row counted in one entry. It sits in
// front of the logger the agent was given, so it counts repeats that the
// rate limiter leaves out of the log.
type recentHandler struct {
	next      slog.Handler
	component string
	log       *recentLog
}

func (h *recentHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *recentHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		e := LogEntry{Time: r.Time, Level: r.Level.String(), Message: r.Message, Component: h.component}
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "err":
				e.Err = a.Value.String()
			case "reason":
				e.Reason = a.Value.String()
			case "component":
				e.Component = a.Value.String()
			}
			return true
		})
		h.log.add(e)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *recentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := h.component
	for _, a := range as {
		if a.Key == "component" {
			c = a.Value.String()
		}
	}
	return &recentHandler{next: h.next.WithAttrs(as), component: c, log: h.log}
}

func (h *recentHandler) WithGroup(name string) slog.Handler {
	return &recentHandler{next: h.next.WithGroup(name), component: h.component, log: h.log}
}
