package elasticsearch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elastic/elastic-transport-go/v8/elastictransport"
)

// The connection pool: which Elasticsearch node each request goes to, and
// whether a node is alive. go-elasticsearch asks it for a node (Next); the
// pool's own transport (transport.go) carries the request and decides, from
// what happened on the wire, whether the node failed: refused, reset on a
// fresh connection, a TLS failure, a stall, a proxy's 502/503/504, or no
// answer while another node answered. The client's own OnSuccess/OnFailure
// calls are ignored: it calls OnFailure when the caller's deadline expires,
// which says nothing about the node.
//
// A dead node is probed about every probe_interval (jittered) with a plain
// TCP connect, cheap for the node and for a fleet of agents; once it accepts
// connections, a full probe (GET / on a fresh connection, short timeout,
// with the nodes' TLS and the credentials) brings it back. Full probes that
// fail back off up to resurrect_max; the connect probes never do, so a node
// back after ten minutes rejoins as fast as one back after ten seconds. A
// node whose certificate does not verify stays dead, and says why
// (certProblem): its connect probes pass, its full probes fail the same way.

// NodeStatus is one node as /api/status shows it.
type NodeStatus struct {
	URL string `json:"url"`
	// State is "alive" or "dead".
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Reason says why the node is dead, or how it came back.
	Reason string `json:"reason,omitempty"`
	// Failures counts consecutive failures; a success resets it.
	Failures  int    `json:"failures"`
	LastError string `json:"last_error,omitempty"`
	// InFlight is the number of requests on the node now.
	InFlight int64 `json:"in_flight"`
	// NextProbe is when a dead node is probed next.
	NextProbe *time.Time `json:"next_probe,omitempty"`
	// IdleLimit is how long idle connections to the node live, when it
	// was learned that something in between drops them silently.
	IdleLimit     string `json:"idle_limit,omitempty"`
	Stalls        int64  `json:"stalls"`
	Hedges        int64  `json:"hedges"`
	Resurrections int64  `json:"resurrections"`
}

// PoolStats counts what the pool did since start, for metrics.
type PoolStats struct {
	// StateChanges counts nodes marked dead (Deaths) and back (Resurrections).
	Deaths, Resurrections int64
	// Stalls by the layer that caught them: "upload", "response", "body".
	Stalls map[string]int64
	// Hedges counts requests sent again while the first was unanswered,
	// HedgeWins those where the hedge answered first.
	Hedges, HedgeWins int64
	// Probes by kind ("connect", "full") and result ("ok", "failed").
	Probes map[string]int64
	// Reroutes counts requests sent to another node after a failure.
	Reroutes int64
}

// errNoLiveNode is returned by Next when every node is dead; senders wait
// for a live node before they ask (waitAlive), so it is rare.
var errNoLiveNode = errors.New("no live Elasticsearch node")

type node struct {
	url  *url.URL
	conn *elastictransport.Connection // what the client is handed
	// pooled keeps connections alive between requests; fresh opens a
	// new connection for every request: hedges, re-routes and probes,
	// which must not land on a connection already in trouble.
	pooled, fresh *http.Transport
	inflight      atomic.Int64

	mu        sync.Mutex
	alive     bool
	since     time.Time
	reason    string
	failures  int
	lastErr   string
	nextProbe time.Time
	lat       latencies
	maxIdle   time.Duration // learned: idle connections die past it; 0 until learned
	// certProblem says why the node's certificate did not verify (or the
	// node refused ours) when that is why it is dead; "" otherwise.
	certProblem   string
	stalls        int64
	hedges        int64
	resurrections int64
}

func (n *node) String() string { return n.url.Redacted() }

// idleLimit is how long a pooled connection may stay idle before the
// watchdog retires it: what was learned of the path to the node, else no
// limit beyond idle_conn_timeout.
func (n *node) idleLimit() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.maxIdle == 0 {
		return time.Duration(1<<63 - 1)
	}
	return n.maxIdle
}

type pool struct {
	cfg Config
	log *slog.Logger
	// tls is the nodes' TLS configuration (nil without https:// URLs) and
	// auth sets the Authorization header (nil: none), for every request
	// to a node: bulk requests, probes and the start-up check.
	tls    *tls.Config
	auth   *credentials
	nodes  []*node
	byHost map[string]*node
	next   atomic.Uint64

	ctx    context.Context // ends at Close: stops probes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when a node comes back
	waiting bool          // a sender waits for a live node (logged once)
	stats   PoolStats
	// recent requests and hedges, and the last 429, for the hedge budget.
	window   time.Time
	requests int
	hedges   int
	last429  time.Time
}

func newPool(cfg Config, log *slog.Logger, transports func(*node) (pooled, fresh *http.Transport)) (*pool, error) {
	p := &pool{cfg: cfg, log: log, byHost: map[string]*node{}, changed: make(chan struct{}),
		stats: PoolStats{Stalls: map[string]int64{}, Probes: map[string]int64{}}}
	for _, a := range cfg.Addresses() {
		u, err := url.Parse(a)
		if err != nil {
			return nil, fmt.Errorf("node %q: %w", a, err)
		}
		if _, dup := p.byHost[u.Host]; dup {
			return nil, fmt.Errorf("node %s is listed twice", u.Redacted())
		}
		n := &node{url: u, conn: &elastictransport.Connection{URL: u}, alive: true, since: time.Now()}
		n.pooled, n.fresh = transports(n)
		p.nodes = append(p.nodes, n)
		p.byHost[u.Host] = n
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// close stops the probes and closes idle connections.
func (p *pool) close() {
	p.cancel()
	p.wg.Wait()
	for _, n := range p.nodes {
		n.pooled.CloseIdleConnections()
		n.fresh.CloseIdleConnections()
	}
}

// Next returns a live node's connection, round robin, preferring the node
// with the fewest requests in flight among the next two. It implements
// elastictransport.ConnectionPool.
func (p *pool) Next() (*elastictransport.Connection, error) {
	n := p.pick(nil)
	if n == nil {
		return nil, errNoLiveNode
	}
	return n.conn, nil
}

// OnSuccess and OnFailure are the client's reports; node health is decided
// in the transport instead, from what happened on the wire.
func (p *pool) OnSuccess(*elastictransport.Connection) error { return nil }
func (p *pool) OnFailure(*elastictransport.Connection) error { return nil }

// URLs returns every node's URL.
func (p *pool) URLs() []*url.URL {
	out := make([]*url.URL, len(p.nodes))
	for i, n := range p.nodes {
		out[i] = n.url
	}
	return out
}

// ConcurrentSafe tells the client not to wrap the pool in a mutex.
func (p *pool) ConcurrentSafe() {}

// pick returns a live node other than not, or nil if there is none.
func (p *pool) pick(not *node) *node {
	var live []*node
	for _, n := range p.nodes {
		if n != not && n.isAlive() {
			live = append(live, n)
		}
	}
	switch len(live) {
	case 0:
		return nil
	case 1:
		return live[0]
	}
	i := p.next.Add(1)
	a, b := live[i%uint64(len(live))], live[(i+1)%uint64(len(live))]
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

func (n *node) isAlive() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.alive
}

// waitAlive returns once a node is alive, or when ctx ends: while every
// node is dead, senders wait here (the buffer holds the data) and probes go
// on; nothing spins.
func (p *pool) waitAlive(ctx context.Context) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		for _, n := range p.nodes {
			if n.isAlive() {
				return nil
			}
		}
		p.mu.Lock()
		if !p.waiting {
			p.waiting = true
			p.log.Warn("no live Elasticsearch node: sends wait while dead nodes are probed")
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// succeeded records an answer from the node; serverTime is how long it took
// to answer once the request was written, size the request body's length.
func (p *pool) succeeded(n *node, serverTime time.Duration, size int) {
	n.mu.Lock()
	n.failures = 0
	n.lat.add(serverTime, size)
	n.mu.Unlock()
}

// failed records a failure that is the node's, and marks it dead.
func (p *pool) failed(n *node, reason string) {
	n.mu.Lock()
	n.failures++
	n.lastErr = reason
	if !n.alive {
		n.mu.Unlock()
		return
	}
	n.alive, n.since, n.reason = false, time.Now(), reason
	n.mu.Unlock()
	p.mu.Lock()
	p.stats.Deaths++
	p.mu.Unlock()
	p.log.Warn("Elasticsearch node marked dead; probing it", "node", n.String(), "reason", reason)
	p.wg.Add(1)
	go p.probe(n)
}

// learnIdle records that a pooled connection to n, idle for idle, was
// dropped without a word (a hedge on a fresh connection answered instead):
// from now on idle connections to n are retired after half that, so the
// next request does not meet a dead one. It only ever falls, to 500ms at
// the least.
func (p *pool) learnIdle(n *node, idle time.Duration) {
	if idle <= 0 {
		return
	}
	limit := max(idle/2, 500*time.Millisecond)
	n.mu.Lock()
	lower := n.maxIdle == 0 || limit < n.maxIdle
	if lower {
		n.maxIdle = limit
	}
	n.mu.Unlock()
	if lower {
		p.log.Warn("a pooled connection idle this long went silent while a fresh one answered: something in between drops idle connections; "+
			"retiring idle connections to this node sooner (set idle_conn_timeout below that path's idle timeout)",
			"node", n.String(), "idle", idle.Round(time.Millisecond).String(), "retire_after", limit.Round(time.Millisecond).String())
	}
}

// revive brings a dead node back into rotation.
func (p *pool) revive(n *node, how string) {
	n.mu.Lock()
	down := time.Since(n.since)
	n.alive, n.since, n.reason, n.failures = true, time.Now(), how, 0
	n.certProblem = ""
	n.resurrections++
	n.nextProbe = time.Time{}
	n.mu.Unlock()
	p.mu.Lock()
	p.stats.Resurrections++
	p.waiting = false
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.log.Info("Elasticsearch node back in rotation", "node", n.String(), "down_for", down.Round(time.Millisecond).String(), "how", how)
}

// probe runs while n is dead: a TCP connect every probe_interval (jittered),
// and a full probe once a connect succeeds and the full probes' backoff
// allows. It returns when the node is back or the pool closes.
func (p *pool) probe(n *node) {
	defer p.wg.Done()
	var fullAt time.Time // full probes wait until then
	fullFailures := 0
	for {
		wait := jitter(p.cfg.ProbeInterval)
		n.mu.Lock()
		n.nextProbe = time.Now().Add(wait)
		n.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-p.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := p.connectProbe(n); err != nil {
			// Down for good, not half-there: once it accepts
			// connections again, probe it fully at once.
			p.probed("connect", err, n)
			fullAt, fullFailures = time.Time{}, 0
			continue
		}
		p.probed("connect", nil, n)
		if time.Now().Before(fullAt) {
			continue
		}
		if err := p.fullProbe(n); err != nil {
			if problem, cert := tlsProblem(err); cert {
				p.certFailed(n, problem)
			}
			p.probed("full", err, n)
			fullFailures++
			fullAt = time.Now().Add(jitter(min(p.cfg.ProbeInterval<<min(fullFailures, 16), p.cfg.ResurrectMax)))
			continue
		}
		p.probed("full", nil, n)
		p.revive(n, "a probe was answered")
		return
	}
}

func (p *pool) probed(kind string, err error, n *node) {
	result := "ok"
	if err != nil {
		result = "failed"
		n.mu.Lock()
		n.lastErr = kind + " probe: " + err.Error()
		n.mu.Unlock()
	}
	p.mu.Lock()
	p.stats.Probes[kind+"_"+result]++
	p.mu.Unlock()
}

// connectProbe opens and closes a plain TCP connection: no TLS, no HTTP.
func (p *pool) connectProbe(n *node) error {
	ctx, cancel := context.WithTimeout(p.ctx, min(p.cfg.DialTimeout, p.probeTimeout()))
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", hostPort(n.url))
	if err != nil {
		return err
	}
	return c.Close()
}

// fullProbe asks the node for GET / on a fresh connection. Any answer but a
// proxy's 502, 503 or 504 means it is there (401 too: credentials are the
// delivery loop's business, not the pool's).
func (p *pool) fullProbe(n *node) error {
	ctx, cancel := context.WithTimeout(p.ctx, p.probeTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url.String()+"/", nil)
	if err != nil {
		return err
	}
	p.auth.authorize(req.Header)
	res, err := n.fresh.RoundTrip(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if proxyDown(res) {
		return fmt.Errorf("answered %s", res.Status)
	}
	return nil
}

// certFailed records that n failed because a certificate did not verify.
func (p *pool) certFailed(n *node, problem string) {
	n.mu.Lock()
	n.certProblem = problem
	n.mu.Unlock()
}

// certProblem returns why no node can be reached when every node is dead
// on a certificate that does not verify, else "". Waiting does not mend
// that: the configuration (tls.ca_file, server_name, a client
// certificate) or the nodes' certificates must change.
func (p *pool) certProblem() string {
	problem := ""
	for _, n := range p.nodes {
		n.mu.Lock()
		alive, cp := n.alive, n.certProblem
		n.mu.Unlock()
		if alive || cp == "" {
			return ""
		}
		problem = cp
	}
	return problem
}

// probeTimeout bounds one probe.
func (p *pool) probeTimeout() time.Duration { return max(2*p.cfg.ProbeInterval, time.Second) }

// proxyDown reports an answer that says the node behind a proxy is gone:
// 502, 503 or 504 without Elasticsearch's product header.
func proxyDown(res *http.Response) bool {
	switch res.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return res.Header.Get("X-Elastic-Product") != "Elasticsearch"
	}
	return false
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// jitter spreads d over [0.75d, 1.25d], so agents that lost a node together
// do not come back to it together.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2+1)
}

// hedgeAllowed says whether a request may be hedged now: hedges stay within
// a share of the recent requests (at least a few a minute, so that a quiet
// agent can still hedge), and stop while the cluster answers 429.
func (p *pool) hedgeAllowed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.roll()
	if time.Since(p.last429) < 30*time.Second {
		return false
	}
	if p.hedges >= max(3, int(float64(p.requests)*p.cfg.HedgeBudget)) {
		return false
	}
	p.hedges++
	p.stats.Hedges++
	return true
}

// counted records a request for the hedge budget.
func (p *pool) counted() {
	p.mu.Lock()
	p.roll()
	p.requests++
	p.mu.Unlock()
}

// roll starts a new budget window each minute. The caller holds p.mu.
func (p *pool) roll() {
	if time.Since(p.window) > time.Minute {
		p.window, p.requests, p.hedges = time.Now(), 0, 0
	}
}

// throttled records a 429: hedging pauses.
func (p *pool) throttled() {
	p.mu.Lock()
	p.last429 = time.Now()
	p.mu.Unlock()
}

func (p *pool) count(f func(*PoolStats)) {
	p.mu.Lock()
	f(&p.stats)
	p.mu.Unlock()
}

// snapshot returns every node's status and the pool's counters.
func (p *pool) snapshot() ([]NodeStatus, PoolStats) {
	out := make([]NodeStatus, len(p.nodes))
	for i, n := range p.nodes {
		n.mu.Lock()
		s := NodeStatus{URL: n.String(), State: "alive", Since: n.since, Reason: n.reason, Failures: n.failures,
			LastError: n.lastErr, InFlight: n.inflight.Load(), Stalls: n.stalls, Hedges: n.hedges, Resurrections: n.resurrections}
		if n.maxIdle > 0 {
			s.IdleLimit = n.maxIdle.String()
		}
		if !n.alive {
			s.State = "dead"
			if !n.nextProbe.IsZero() {
				np := n.nextProbe
				s.NextProbe = &np
			}
		}
		n.mu.Unlock()
		out[i] = s
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Stalls, st.Probes = map[string]int64{}, map[string]int64{}
	for k, v := range p.stats.Stalls {
		st.Stalls[k] = v
	}
	for k, v := range p.stats.Probes {
		st.Probes[k] = v
	}
	return out, st
}

// latencies keeps a node's recent answer times, normalised per MiB of
// request, to set a request's hedge deadline from what the node has shown.
type latencies struct {
	perMiB [32]time.Duration
	n      int
}

func (l *latencies) add(d time.Duration, size int) {
	l.perMiB[l.n%len(l.perMiB)] = time.Duration(float64(d) / max(float64(size)/(1<<20), 1))
	l.n++
}

// worst is the slowest recent answer time per MiB; 0 before any answer.
func (l *latencies) worst() time.Duration {
	var w time.Duration
	for i := range min(l.n, len(l.perMiB)) {
		w = max(w, l.perMiB[i])
	}
	return w
}

// hedgeAfter is how long to wait for the node's answer to a request of
// size bytes, once written, before hedging: three times the slowest answer
// it gave recently for that size, and at least hedge_after per 8 MiB of
// request (Elasticsearch takes longer over a larger bulk before it says
// anything).
func (p *pool) hedgeAfter(n *node, size int) time.Duration {
	n.mu.Lock()
	w := n.lat.worst()
	n.mu.Unlock()
	mib := max(float64(size)/(1<<20), 1)
	floor := time.Duration(float64(p.cfg.HedgeAfter) * max(mib/8, 1))
	return min(max(floor, time.Duration(3*float64(w)*mib)), p.cfg.RequestTimeout)
}
