package elasticsearch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The pool's transport carries each request to a node and catches stalls in
// layers:
//
//   - kernel: TCP keepalive probes idle connections, and TCP_USER_TIMEOUT
//     (2 × stall_timeout) aborts a connection whose sent data goes
//     unacknowledged, instead of the kernel's 15 minutes;
//   - upload: the watchdog closes a connection that drained no bytes of the
//     request body for stall_timeout; body: the same while reading the
//     answer; response: no answer within request_timeout
//     (ResponseHeaderTimeout);
//   - hedging: a written request left unanswered past a deadline learned
//     from the node's recent answers (at least hedge_after) is sent again
//     on a fresh connection, then, still unanswered, to another node. The
//     first answer wins and the others are cancelled. Bulk requests use
//     create with deterministic ids, so a document indexed twice is a 409,
//     never a duplicate. Hedges are bounded by hedge_budget and stop while
//     the cluster answers 429, so they never pile load on a sick cluster.
//
// A proxy or tunnel that stops forwarding usually still acknowledges at the
// TCP level: the request is "sent" and no answer comes, as while
// Elasticsearch processes a large bulk. Waiting for request_timeout tells
// the two apart at the cost of a minute; hedging costs a second request.
//
// A connection that is stalled, or lost a hedge, is closed and never
// reused. A request that fails on a reused connection before any answer is
// replayed once on a fresh one by net/http (bulk requests are marked
// idempotent) and does not count against the node: one stale socket never
// takes a healthy node out of rotation. Idle connections are retired after
// idle_conn_timeout, and any connection after conn_max_lifetime.

// trackedConn is a connection that records when it last moved bytes.
type trackedConn struct {
	net.Conn
	node      *node
	written   atomic.Int64 // bytes
	idleSince atomic.Int64 // unix nanoseconds; 0 while busy or new
	created   time.Time
	lastWrite atomic.Int64 // unix nanoseconds
	lastRead  atomic.Int64
	busy      atomic.Bool // carrying a request, not idle in the pool
	closed    atomic.Bool
	w         *watchdog
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.lastWrite.Store(time.Now().UnixNano())
		c.written.Add(int64(n))
	}
	return n, err
}

func (c *trackedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.w.forget(c)
	}
	return c.Conn.Close()
}

// touch restarts the progress clocks: the connection starts a transfer.
func (c *trackedConn) touch() {
	now := time.Now().UnixNano()
	c.lastWrite.Store(now)
	c.lastRead.Store(now)
}

func unwrapConn(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// Attempt phases, as the watchdog sees them.
const (
	phaseConnecting int32 = iota
	phaseUploading
	phaseWaiting
	phaseReading
)

// attempt is one try of a request on one node.
type attempt struct {
	node   *node
	fresh  bool // on a new connection, not a pooled one
	hedge  bool
	size   int
	ctx    context.Context
	cancel context.CancelFunc

	conn    atomic.Pointer[trackedConn]
	base    int64 // the connection's bytes written before this attempt
	started time.Time
	phase   atomic.Int32
	reused  atomic.Bool
	idleFor atomic.Int64  // how long a reused connection had been idle
	wrote   chan struct{} // closed once the request is written
	wroteAt atomic.Int64
	stalled atomic.Pointer[string] // the layer that caught a stall

	res *http.Response
	err error
}

// sent is how many bytes the attempt wrote.
func (a *attempt) sent() int64 {
	if c := a.conn.Load(); c != nil {
		return c.written.Load() - a.base
	}
	return 0
}

func (a *attempt) elapsed() time.Duration { return time.Since(a.started) }

// answered is the time from the request written to the answer's first byte.
func (a *attempt) answered() time.Duration {
	if w := a.wroteAt.Load(); w != 0 {
		return time.Since(time.Unix(0, w))
	}
	return 0
}

// watchdog closes stalled connections and connections past their lifetime.
type watchdog struct {
	stall    time.Duration
	lifetime time.Duration
	onStall  func(a *attempt, layer string)

	mu       sync.Mutex
	attempts map[*attempt]struct{}
	conns    map[*trackedConn]struct{}
}

func (w *watchdog) watch(a *attempt) {
	w.mu.Lock()
	w.attempts[a] = struct{}{}
	w.mu.Unlock()
}

func (w *watchdog) done(a *attempt) {
	w.mu.Lock()
	delete(w.attempts, a)
	w.mu.Unlock()
}

func (w *watchdog) add(c *trackedConn) {
	w.mu.Lock()
	w.conns[c] = struct{}{}
	w.mu.Unlock()
}

func (w *watchdog) forget(c *trackedConn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

// run checks every attempt and connection until ctx ends.
func (w *watchdog) run(ctx context.Context) {
	t := time.NewTicker(min(max(w.stall/8, 20*time.Millisecond), 250*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.check(time.Now())
	}
}

func (w *watchdog) check(now time.Time) {
	type stalledOne struct {
		a     *attempt
		c     *trackedConn
		layer string
		since time.Duration
	}
	var stalled []stalledOne
	var expired []*trackedConn
	w.mu.Lock()
	for a := range w.attempts {
		c := a.conn.Load()
		if c == nil {
			continue
		}
		var last int64
		var layer string
		switch a.phase.Load() {
		case phaseUploading:
			last, layer = c.lastWrite.Load(), "upload"
		case phaseReading:
			last, layer = c.lastRead.Load(), "body"
		default:
			continue
		}
		if since := now.Sub(time.Unix(0, last)); since > w.stall {
			stalled = append(stalled, stalledOne{a, c, layer, since})
		}
	}
	for c := range w.conns {
		if c.busy.Load() {
			continue
		}
		idle := c.idleSince.Load()
		if now.Sub(c.created) > w.lifetime || (idle != 0 && now.Sub(time.Unix(0, idle)) > c.node.idleLimit()) {
			expired = append(expired, c)
		}
	}
	w.mu.Unlock()
	for _, s := range stalled {
		if s.a.stalled.CompareAndSwap(nil, &s.layer) {
			w.onStall(s.a, s.layer)
			s.c.Close()
		}
	}
	for _, c := range expired {
		c.Close() // the transport drops it from its idle list
	}
}

// poolTransport is the RoundTripper beneath go-elasticsearch.
type poolTransport struct {
	p    *pool
	w    *watchdog
	log  *slog.Logger
	auth *credentials // nil: no Authorization header
}

// newNodeTransports builds a node's two transports: pooled connections, and
// a new connection for every request. tlsCfg (nil for none) is the TLS of
// https:// nodes; http.Transport sets each node's server name from its URL
// unless tlsCfg names one.
func newNodeTransports(cfg Config, w *watchdog, tlsCfg *tls.Config) func(*node) (*http.Transport, *http.Transport) {
	userTimeout := 2 * cfg.StallTimeout
	d := &net.Dialer{
		Timeout: cfg.DialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: cfg.KeepAlive, Interval: max(cfg.KeepAlive/3, time.Second), Count: 3,
		},
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
			})
			return errors.Join(err, serr)
		},
	}
	return func(n *node) (*http.Transport, *http.Transport) {
		pooled := &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				tc := &trackedConn{Conn: c, node: n, created: time.Now(), w: w}
				tc.touch()
				w.add(tc)
				return tc, nil
			},
			TLSClientConfig:       tlsCfg,
			TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
			IdleConnTimeout:       cfg.IdleConnTimeout,
			MaxIdleConnsPerHost:   cfg.MaxInFlight,
			MaxConnsPerHost:       cfg.MaxInFlight + 1,
			ResponseHeaderTimeout: cfg.RequestTimeout,
			// One TCP connection carries one request at a time, so a
			// stalled connection stalls one bulk request, not all of them.
			ForceAttemptHTTP2: false,
		}
		fresh := pooled.Clone()
		fresh.DisableKeepAlives = true
		return pooled, fresh
	}
}

// RoundTrip sends the request to the node its URL names, hedging and
// re-routing as described above. An error names the node it came from.
func (t *poolTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	n := t.p.byHost[req.URL.Host]
	if n == nil {
		return nil, fmt.Errorf("%s is not a configured node", req.URL.Host)
	}
	t.p.counted()
	r := &race{t: t, req: req, primary: n, results: make(chan *attempt, maxAttempts)}
	return r.run()
}

// maxAttempts bounds the tries of one request: the first, a hedge on a
// fresh connection, a hedge on another node, and a re-route.
const maxAttempts = 4

// race runs the attempts of one request.
type race struct {
	t       *poolTransport
	req     *http.Request
	primary *node
	results chan *attempt

	mu       sync.Mutex
	decided  bool
	attempts []*attempt
}

func (r *race) run() (*http.Response, error) {
	ctx := r.req.Context()
	replayable := r.req.GetBody != nil || r.req.Body == nil || r.req.Body == http.NoBody
	first := r.start(r.primary, false, false)
	var soft <-chan time.Time
	armed := r.t.p.cfg.HedgeAfter == 0 // hedging off: the deadline is never armed
	stage := 0                         // 0: the first attempt alone; 1: hedged on a fresh connection; 2: hedged on another node
	rerouted := false
	running := 1
	var lastErr error
	for {
		wrote := first.wrote
		if armed {
			wrote = nil
		}
		select {
		case <-ctx.Done():
			r.finish(nil)
			return nil, ctx.Err()
		case <-wrote:
			armed = true
			soft = time.After(r.t.p.hedgeAfter(r.primary, first.size))
		case <-soft:
			soft = nil
			if !replayable || stage == 2 || len(r.attempts) >= maxAttempts {
				continue
			}
			other := r.t.p.pick(r.primary)
			switch {
			case stage == 0 && (first.reused.Load() || other == nil):
				// Suspect the connection before the node: a middlebox
				// may have dropped a pooled connection silently.
				if !r.t.p.hedgeAllowed() {
					continue
				}
				r.hedge(r.primary, "no answer on a pooled connection")
				stage = 1
				soft = time.After(r.t.p.hedgeAfter(r.primary, first.size))
				running++
			case other != nil && r.t.p.hedgeAllowed():
				r.hedge(other, "no answer from "+r.primary.String())
				stage = 2
				running++
			}
		case a := <-r.results:
			running--
			var reason string
			switch {
			case a.err == nil && !proxyDown(a.res):
				return r.win(a), nil
			case a.err == nil:
				// A proxy says the node behind it is gone: the node's
				// failure; another node may answer.
				reason = "proxy answered " + a.res.Status
				lastErr = fmt.Errorf("node %s: %s", a.node, reason)
			default:
				lastErr = fmt.Errorf("node %s: %w", a.node, a.err)
				if ctx.Err() != nil {
					r.finish(nil)
					return nil, ctx.Err()
				}
				reason = r.nodeFailure(a)
			}
			if reason != "" {
				r.t.p.failed(a.node, reason)
			}
			if running > 0 {
				r.discard(a)
				continue // another attempt may still answer
			}
			next := r.t.p.pick(a.node)
			if next == nil && !a.fresh {
				next = a.node // a fresh connection to the same node
			}
			if next == nil || rerouted || !replayable || len(r.attempts) >= maxAttempts {
				if a.err == nil {
					// The proxy's answer is the answer: the caller
					// retries it later.
					r.finish(a)
					a.res.Body = &watchedBody{ReadCloser: a.res.Body, a: a, w: r.t.w}
					return a.res, nil
				}
				r.discard(a)
				r.finish(nil)
				return nil, lastErr
			}
			r.discard(a)
			// Nothing is running: send it once more, to another live
			// node, or on a fresh connection to the same one.
			rerouted = true
			r.t.p.count(func(s *PoolStats) { s.Reroutes++ })
			r.t.log.Warn("bulk request failed on a node; sending it again at once", "from", a.node.String(), "to", next.String(), "err", lastErr)
			first = r.start(next, true, false)
			r.primary, armed, soft, stage = next, r.t.p.cfg.HedgeAfter == 0, nil, 0
			running++
		}
	}
}

// hedge starts a hedge of the request on node n.
func (r *race) hedge(n *node, why string) {
	n.mu.Lock()
	n.hedges++
	n.mu.Unlock()
	r.t.log.Info("hedging a bulk request", "node", n.String(), "why", why)
	r.start(n, true, true)
}

// start sends the request on node n in a goroutine of its own. The
// goroutine ends when the attempt has an answer or fails; the race cancels
// it when another attempt wins.
func (r *race) start(n *node, fresh, hedge bool) *attempt {
	ctx, cancel := context.WithCancel(r.req.Context())
	a := &attempt{node: n, fresh: fresh, hedge: hedge, size: int(r.req.ContentLength), ctx: ctx, cancel: cancel,
		wrote: make(chan struct{}), started: time.Now()}
	r.mu.Lock()
	r.attempts = append(r.attempts, a)
	r.mu.Unlock()
	req := r.req.Clone(httptrace.WithClientTrace(ctx, r.trace(a)))
	req.URL.Scheme, req.URL.Host, req.Host = n.url.Scheme, n.url.Host, ""
	// Each attempt carries the credentials as they are now: a hedge sent
	// after a secret file changed sends the new secret.
	r.t.auth.authorize(req.Header)
	if r.req.GetBody != nil {
		body, err := r.req.GetBody()
		if err != nil {
			a.err = err
			r.deliver(a)
			return a
		}
		req.Body = body
	}
	// Marked idempotent (the header is not sent): net/http replays it
	// once on a fresh connection when a reused one fails before any
	// answer. Bulk requests create documents under deterministic ids.
	req.Header["Idempotency-Key"] = nil
	rt := n.pooled
	if fresh {
		rt = n.fresh
	}
	n.inflight.Add(1)
	go func() {
		defer n.inflight.Add(-1)
		a.res, a.err = rt.RoundTrip(req)
		if a.err == nil {
			a.phase.Store(phaseReading)
		}
		r.deliver(a)
	}()
	return a
}

// deliver hands an attempt's outcome to the race, or, once the race is
// decided, cleans up after it.
func (r *race) deliver(a *attempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.decided {
		r.discard(a)
		return
	}
	r.results <- a // buffered for every attempt
}

// discard ends an attempt that lost or was abandoned.
func (r *race) discard(a *attempt) {
	if a.res != nil {
		a.res.Body.Close()
	}
	a.cancel()
	r.t.w.done(a)
}

// win returns the winner's answer, cancels the others and records what the
// race says about the nodes.
func (r *race) win(a *attempt) *http.Response {
	r.finish(a)
	r.t.p.succeeded(a.node, a.answered(), a.size)
	if a.res.StatusCode == http.StatusTooManyRequests {
		r.t.p.throttled()
	}
	if a.hedge {
		r.t.p.count(func(s *PoolStats) { s.HedgeWins++ })
		if a.node == r.primary {
			// A fresh connection answered where a pooled one did not:
			// something in between drops idle connections silently.
			r.mu.Lock()
			first := r.attempts[0]
			r.mu.Unlock()
			if first.node == a.node && first.reused.Load() {
				r.t.p.learnIdle(a.node, time.Duration(first.idleFor.Load()))
			}
		} else {
			// Another node answered while this one, on a fresh
			// connection too, did not: the node is the trouble.
			r.mu.Lock()
			suspect := false
			for _, b := range r.attempts {
				suspect = suspect || (b.node == r.primary && b.fresh) || (b.node == r.primary && !b.reused.Load())
			}
			r.mu.Unlock()
			if suspect {
				var silent time.Duration // since its first attempt was written
				r.mu.Lock()
				for _, b := range r.attempts {
					if b.node == r.primary {
						silent = max(silent, b.answered())
					}
				}
				r.mu.Unlock()
				r.t.p.failed(r.primary, fmt.Sprintf("no answer for %s, on a fresh connection too, while %s answered",
					silent.Round(time.Millisecond), a.node))
			}
		}
	}
	a.res.Body = &watchedBody{ReadCloser: a.res.Body, a: a, w: r.t.w}
	return a.res
}

// finish decides the race: every attempt but the winner (nil for none) is
// cancelled, now or when it reports.
func (r *race) finish(winner *attempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decided = true
	for {
		select {
		case a := <-r.results:
			if a != winner {
				r.discard(a)
			}
			continue
		default:
		}
		break
	}
	for _, a := range r.attempts {
		if a != winner {
			a.cancel()
		}
	}
}

// nodeFailure says why a failed attempt is the node's failure, or "" when
// it is not: the caller's deadline, or a pooled connection gone stale.
func (r *race) nodeFailure(a *attempt) string {
	if layer := a.stalled.Load(); layer != nil {
		return "stall (" + *layer + ")"
	}
	err := a.err
	var op *net.OpError
	switch {
	case errors.Is(err, context.Canceled) && a.ctx.Err() != nil:
		return "" // cancelled: another attempt won, or the caller gave up
	case strings.Contains(err.Error(), "timeout awaiting response headers"):
		r.t.w.onStall(a, "response")
		return "stall (response): no answer within request_timeout"
	case errors.As(err, &op) && op.Op == "dial":
		return "connect: " + op.Err.Error()
	}
	if problem, cert := tlsProblem(err); problem != "" {
		if cert {
			// A configuration problem, not an outage: said at error
			// level, once per death of the node (a dead node gets no
			// requests, and its probes log nothing).
			r.t.p.certFailed(a.node, problem)
			r.t.log.Error("elasticsearch TLS: "+problem, "node", a.node.String(), "err", err)
		}
		return "TLS: " + problem + ": " + err.Error()
	}
	if !a.reused.Load() {
		return "fresh connection failed: " + err.Error()
	}
	return ""
}

// trace follows an attempt through its connection's life.
func (r *race) trace(a *attempt) *httptrace.ClientTrace {
	var wroteOnce sync.Once
	return &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			c := unwrapConn(info.Conn)
			if c == nil {
				return
			}
			c.busy.Store(true)
			c.idleSince.Store(0)
			c.touch()
			a.base = c.written.Load()
			a.conn.Store(c)
			a.reused.Store(info.Reused)
			a.idleFor.Store(int64(info.IdleTime))
			a.phase.Store(phaseUploading)
			r.t.w.watch(a)
		},
		WroteRequest: func(httptrace.WroteRequestInfo) {
			if c := a.conn.Load(); c != nil {
				c.lastRead.Store(time.Now().UnixNano())
			}
			a.wroteAt.Store(time.Now().UnixNano())
			a.phase.Store(phaseWaiting)
			wroteOnce.Do(func() { close(a.wrote) })
		},
		GotFirstResponseByte: func() { a.phase.Store(phaseReading) },
		PutIdleConn: func(err error) {
			if c := a.conn.Load(); c != nil && err == nil {
				c.idleSince.Store(time.Now().UnixNano())
				c.busy.Store(false)
			}
		},
	}
}

// watchedBody ends the winning attempt when its answer is read and closed.
type watchedBody struct {
	io.ReadCloser
	a    *attempt
	w    *watchdog
	once sync.Once
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		b.w.done(b.a)
		if c := b.a.conn.Load(); c != nil && b.a.fresh {
			c.busy.Store(false)
		}
		b.a.cancel()
	})
	return err
}
