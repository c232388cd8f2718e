package agent

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/buffer"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// handler serves the operator API:
//
//	GET  /api/health       200 while the agent delivers; 503 while delivery is held or wedged,
//	                       no Elasticsearch node's certificate verifies, or the Kafka input
//	                       cannot join its group
//	GET  /api/health/live  503 only when the pipeline is wedged (a Kubernetes liveness probe)
//	GET  /api/health/ready 200 once the input joined its group, a node is alive and /api/health is ok
//	GET  /api/status       JSON: input, buffer and output state
//	POST /api/flush        seal the open chunk and deliver everything buffered
//	                       now; ?wait=DURATION blocks until done or the wait ends;
//	                       200 when done, else 202 with the flush's id
//	GET  /api/flush/{id}   a flush's progress: done, what it still waits for
//	GET  /api/metrics      Prometheus metrics (also GET /metrics)
//	GET  /debug/pprof/     Go profiles, with api.pprof = true
//	GET  /api/dlq          dead letters, a page at a time (?after=ID&limit=N&topic=&reason=&value_bytes=N)
//	POST /api/dlq/replay   re-send dead letters (?topic=&reason=&dry_run=true)
//	POST /api/dlq/purge    delete dead letters (?topic=&reason=, or ?all=true)
//
// With api.token set, flush and the dead-letter endpoints need it as a
// bearer token.
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", a.handleHealth)
	mux.HandleFunc("GET /api/health/live", a.handleLive)
	mux.HandleFunc("GET /api/health/ready", a.handleReady)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /api/flush", a.authorized(a.handleFlush))
	mux.HandleFunc("GET /api/flush/{id}", a.handleFlushStatus)
	metrics := promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})
	mux.Handle("GET /api/metrics", metrics)
	mux.Handle("GET /metrics", metrics) // where Prometheus looks by default
	mux.HandleFunc("GET /api/dlq", a.authorized(a.handleDLQList))
	mux.HandleFunc("POST /api/dlq/replay", a.authorized(a.handleDLQReplay))
	mux.HandleFunc("POST /api/dlq/purge", a.authorized(a.handleDLQPurge))
	if a.cfg.API.Pprof {
		// Profiles show what the process does, not what it holds; they
		// still need the token when one is set.
		mux.HandleFunc("GET /debug/pprof/", a.authorized(pprof.Index))
		mux.HandleFunc("GET /debug/pprof/cmdline", a.authorized(pprof.Cmdline))
		mux.HandleFunc("GET /debug/pprof/profile", a.authorized(pprof.Profile))
		mux.HandleFunc("GET /debug/pprof/symbol", a.authorized(pprof.Symbol))
		mux.HandleFunc("GET /debug/pprof/trace", a.authorized(pprof.Trace))
	}
	// No endpoint reads a body: a client sending one gets at most this
	// much read.
	return http.MaxBytesHandler(mux, maxRequestBody)
}

// maxRequestBody bounds what the API reads of a request body, in bytes.
const maxRequestBody = 64 << 10

// authorized requires api.token, when set, as a bearer token. The
// comparison takes the same time whatever the bytes given. Dead-letter
// listings are guarded too: they hold records' contents.
func (a *Agent) authorized(h http.HandlerFunc) http.HandlerFunc {
	want := a.cfg.API.Token.Reveal()
	if want == "" {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="shipper"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "this endpoint needs the api.token as \"Authorization: Bearer <token>\""})
			return
		}
		h(w, r)
	}
}

// Health answers GET /api/health.
type Health struct {
	// Status is "ok"; "held" while Elasticsearch refuses documents for a
	// reason that is not theirs (Held says why); "wedged" when the
	// delivery pipeline stopped and restarting its workers did not help
	// (Reason says so): the process needs a restart; "input_failing"
	// while the Kafka input cannot join its consumer group, e.g. the
	// brokers refuse its login or their certificate does not verify
	// (Reason is the last error; the input keeps retrying);
	// "output_failing" while no Elasticsearch node can be reached because
	// no node's certificate verifies (Reason says which setting to check;
	// the nodes are still probed).
	Status string      `json:"status"`
	Held   *HoldStatus `json:"held,omitempty"`
	Reason string      `json:"reason,omitempty"`
}

// healthStatuses are the values of Health.Status for /api/health, in the
// order health checks them after "ok"; the metric shipper_health_status
// has one series each.
var healthStatuses = []string{"ok", "wedged", "held", "output_failing", "input_failing"}

// health is what /api/health answers: the first problem found, or ok.
func (a *Agent) health() Health {
	if reason := a.watchdog.reason(); reason != "" {
		return Health{Status: "wedged", Reason: reason}
	}
	if h := a.deliver.held(); h != nil {
		return Health{Status: "held", Held: h}
	}
	if err := a.output().Problem(); err != nil {
		return Health{Status: "output_failing", Reason: err.Error()}
	}
	if err := a.in.Problem(); err != nil {
		return Health{Status: "input_failing", Reason: err.Error()}
	}
	return Health{Status: "ok"}
}

func (a *Agent) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeHealth(w, a.health())
}

func writeHealth(w http.ResponseWriter, h Health) {
	code := http.StatusOK
	if h.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

// handleLive answers GET /api/health/live: 503 only when the process is
// wedged (the pipeline watchdog fired and restarting the workers did not
// help), the one state a restart cures. A held delivery, a failing input or
// a dead cluster are not: a restart would not fix them, and the agent
// recovers by itself once they clear.
func (a *Agent) handleLive(w http.ResponseWriter, r *http.Request) {
	h := Health{Status: "ok"}
	if reason := a.watchdog.reason(); reason != "" {
		h = Health{Status: "wedged", Reason: reason}
	}
	writeHealth(w, h)
}

// handleReady answers GET /api/health/ready: 200 once the agent does its
// job: what /api/health checks, and the input has joined its consumer
// group and the output has a live node. 503 "starting" until then, with
// what is missing.
func (a *Agent) handleReady(w http.ResponseWriter, r *http.Request) {
	writeHealth(w, a.readiness())
}

// readiness is what /api/health/ready answers.
func (a *Agent) readiness() Health {
	if a.in.Stats().Generation == 0 {
		return Health{Status: "starting", Reason: "the Kafka input has not joined its consumer group yet"}
	}
	nodes, _ := a.output().Nodes()
	if !slices.ContainsFunc(nodes, func(n elasticsearch.NodeStatus) bool { return n.State == "alive" }) {
		return Health{Status: "no_live_node", Reason: "no Elasticsearch node is alive; dead nodes are probed"}
	}
	return a.health()
}

// dlqQuery reads a dead-letter filter (and paging) from the query string.
func dlqQuery(r *http.Request) (buffer.DeadLetterQuery, error) {
	v := r.URL.Query()
	q := buffer.DeadLetterQuery{After: v.Get("after"), Topic: v.Get("topic"), Reason: v.Get("reason"), MaxValueBytes: 4096}
	for name, dst := range map[string]*int{"limit": &q.Limit, "value_bytes": &q.MaxValueBytes} {
		if s := v.Get(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return q, fmt.Errorf("%s: want a number, got %q", name, s)
			}
			*dst = n
		}
	}
	return q, nil
}

// DeadLetterEntry is a dead letter as the API shows it: the value as text
// when it is valid UTF-8, else base64.
type DeadLetterEntry struct {
	buffer.DeadLetter
	Topic         string           `json:"topic"`
	Partition     int32            `json:"partition"`
	Offset        int64            `json:"offset"`
	Timestamp     time.Time        `json:"timestamp"`
	Key           string           `json:"key,omitempty"`
	Headers       []shipper.Header `json:"headers,omitempty"`
	Value         string           `json:"value"`
	ValueEncoding string           `json:"value_encoding"`
}

// DeadLetterList answers GET /api/dlq.
type DeadLetterList struct {
	Entries []DeadLetterEntry      `json:"entries"`
	Next    string                 `json:"next,omitempty"`
	Store   buffer.DeadLetterStats `json:"store"`
}

func apiEntry(d buffer.DeadLetter) DeadLetterEntry {
	r := d.Record
	e := DeadLetterEntry{DeadLetter: d, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Time,
		Key: string(r.Key), Headers: r.Headers, Value: string(r.Value), ValueEncoding: "utf-8"}
	if !utf8.Valid(r.Value) {
		e.Value, e.ValueEncoding = base64.StdEncoding.EncodeToString(r.Value), "base64"
	}
	return e
}

func (a *Agent) handleDLQList(w http.ResponseWriter, r *http.Request) {
	q, err := dlqQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	page, err := a.buf.DeadLetters().List(q)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	out := DeadLetterList{Entries: make([]DeadLetterEntry, len(page.Entries)), Next: page.Next, Store: a.buf.DeadLetters().Stats()}
	for i, d := range page.Entries {
		out.Entries[i] = apiEntry(d)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleDLQReplay(w http.ResponseWriter, r *http.Request) {
	q, err := dlqQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	dry := r.URL.Query().Get("dry_run") == "true"
	res, err := a.Replay(r.Context(), q, dry)
	switch {
	case errors.Is(err, errReplayRunning):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case err != nil:
		res.Error = err.Error()
		writeJSON(w, http.StatusInternalServerError, res)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// PurgeResult answers POST /api/dlq/purge.
type PurgeResult struct {
	Purged int    `json:"purged"`
	Error  string `json:"error,omitempty"`
}

func (a *Agent) handleDLQPurge(w http.ResponseWriter, r *http.Request) {
	q, err := dlqQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if q.Topic == "" && q.Reason == "" && r.URL.Query().Get("all") != "true" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "say what to purge: topic=, reason=, or all=true"})
		return
	}
	n, err := a.buf.DeadLetters().Purge(r.Context(), q)
	res := PurgeResult{Purged: n}
	if err != nil {
		res.Error = err.Error()
		writeJSON(w, http.StatusInternalServerError, res)
		return
	}
	a.log.Info("dead letters purged", "purged", n, "topic", q.Topic, "reason", q.Reason)
	writeJSON(w, http.StatusOK, res)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
