// Package logtopic fills a new Kafka topic with JSON log events for the
// benchmarks that read Kafka (consumebench, outputbench), before any timing.
package logtopic

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/shipper-agent/shipper/test/e2e/loggen"
)

// Spec says what to produce.
type Spec struct {
	Records    int // events 0 .. Records-1
	ValueBytes int // each event's JSON value, exactly (at least its fixed fields)
	Partitions int // of the new topic
	Producers  int // concurrent producing goroutines, each a contiguous range
	// Varied selects VariedValue instead of Value.
	Varied bool
}

// Filled describes the topic's data.
type Filled struct {
	Bytes int64 // keys + values
	Took  time.Duration
}

// Value returns event i: a compact JSON log line of exactly size bytes (at
// least its fixed fields) with its own @timestamp, its message padded with
// text that varies from event to event.
func Value(i, size int) []byte {
	v := fmt.Appendf(make([]byte, 0, size), `{"@timestamp":"%s","level":"info","service":"checkout","seq":%d,"msg":"`,
		time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), i)
	const words = "request handled cart items price total user session latency cache hit miss upstream "
	for k := i * 7; len(v) < size-2; k++ {
		v = append(v, words[k%len(words)])
	}
	return append(v, '"', '}')
}

// VariedValue returns event i: a compact JSON log line of exactly size
// bytes (at least its fixed fields) with its own @timestamp, whose fields
// and message vary as a service's logs do: a level, service, path and
// status from short lists, a random trace id, user id and latency, and a
// message of words drawn at random from a vocabulary of a few hundred. Its
// bulk bodies gzip about as well as real logs' do, where Value's, one
// phrase repeated, gzip tens of times smaller.
func VariedValue(i, size int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 0x5eed))
	v := fmt.Appendf(make([]byte, 0, size+16),
		`{"@timestamp":"%s","level":%q,"service":%q,"seq":%d,"trace_id":"%016x","user_id":%d,"http":{"method":%q,"path":%q,"status":%d},"latency_ms":%d,"msg":"`,
		time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano),
		levels[weighted(rng)], services[rng.IntN(len(services))], i, rng.Uint64(), rng.IntN(5_000_000),
		methods[rng.IntN(len(methods))], paths[rng.IntN(len(paths))], statuses[weighted(rng)], rng.IntN(2000))
	fixed := len(v)
	for len(v) < size-2 {
		if v[len(v)-1] != '"' {
			v = append(v, ' ')
		}
		v = append(v, vocabulary[rng.IntN(len(vocabulary))]...)
	}
	v = v[:max(size-2, fixed)]
	if v[len(v)-1] == ' ' {
		v[len(v)-1] = '.'
	}
	return append(v, '"', '}')
}

// weighted picks 0 most often, then 1, 2, 3: the share of info, warn,
// error, debug lines, or of 200, 404, 500, 302 answers.
func weighted(rng *rand.Rand) int {
	switch n := rng.IntN(100); {
	case n < 80:
		return 0
	case n < 92:
		return 1
	case n < 97:
		return 2
	default:
		return 3
	}
}

var (
	levels   = []string{"info", "warn", "error", "debug"}
	statuses = []int{200, 404, 500, 302}
	methods  = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	services = []string{"checkout", "cart", "catalog", "payments", "search", "auth", "shipping", "recommendations"}
	paths    = []string{"/api/v1/cart", "/api/v1/cart/items", "/api/v1/checkout", "/api/v1/orders", "/api/v1/orders/{id}",
		"/api/v1/products", "/api/v1/products/{id}", "/api/v1/search", "/api/v1/users/{id}", "/api/v1/login",
		"/api/v1/payments", "/api/v1/shipping/quote", "/health", "/metrics", "/api/v2/recommendations", "/api/v2/reviews"}
	vocabulary = strings.Fields(`request handled cart items price total user session latency cache hit miss upstream
		timeout retry connection pool database query slow fast response status order payment card declined accepted
		token expired refresh login logout password reset email sent queue message consumer producer partition offset
		commit rollback transaction lock wait deadlock index shard replica node cluster health green yellow red disk
		memory heap garbage collection pause thread worker goroutine panic recovered error warning failed succeeded
		started stopped restarted scheduled job cron batch import export file upload download bytes kilobytes megabytes
		header body json parse invalid valid schema field missing required optional default value config loaded
		reloaded feature flag enabled disabled experiment variant control customer account profile address shipping
		billing invoice tax discount coupon applied removed inventory stock reserved released warehouse region zone
		availability latency p99 p95 throughput rate limit exceeded quota throttled backoff jitter circuit breaker open
		closed half service mesh sidecar proxy gateway route matched not found redirect forbidden unauthorized the a an
		of to for with from in on at by after before during while because and or not no yes ok done pending queued
		received processed dropped skipped duplicate checksum mismatch version upgrade migration schema table column
		row rows affected inserted updated deleted selected scanned returned elapsed ms seconds minutes attempt
		first second third last next previous current new old stale fresh warm cold hot key lookup store fetch put`)
)

// Fill creates the topic and writes the events, key strconv.Itoa(i), with
// loggen's writer (round-robin over partitions), and returns once the
// broker acknowledged all of them.
func Fill(ctx context.Context, brokers, topic string, s Spec) (Filled, error) {
	if err := loggen.CreateTopic(ctx, brokers, topic, s.Partitions); err != nil {
		return Filled{}, err
	}
	start := time.Now()
	var mu sync.Mutex
	var f Filled
	errs := make(chan error, s.Producers)
	per := (s.Records + s.Producers - 1) / s.Producers
	for g := range s.Producers {
		go func() {
			w := loggen.Writer(brokers, topic)
			defer w.Close()
			var n int64
			msgs := make([]kafkago.Message, 0, 1000)
			for i := g * per; i < min((g+1)*per, s.Records); i++ {
				m := kafkago.Message{Key: []byte(strconv.Itoa(i)), Value: Value(i, s.ValueBytes)}
				if s.Varied {
					m.Value = VariedValue(i, s.ValueBytes)
				}
				n += int64(len(m.Key) + len(m.Value))
				if msgs = append(msgs, m); len(msgs) == cap(msgs) {
					if err := loggen.Write(ctx, w, msgs); err != nil {
						errs <- err
						return
					}
					msgs = msgs[:0]
				}
			}
			if len(msgs) > 0 {
				if err := loggen.Write(ctx, w, msgs); err != nil {
					errs <- err
					return
				}
			}
			mu.Lock()
			f.Bytes += n
			mu.Unlock()
			errs <- nil
		}()
	}
	var first error
	for range s.Producers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	f.Took = time.Since(start)
	return f, first
}

// Delete removes a benchmark's topic when the program ends (a deferred
// call), within a minute of its own, the program's context being done by
// then; logf says whether it went, and asks for removal by hand if not.
func Delete(brokers, topic string, logf func(format string, args ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := loggen.DeleteTopic(ctx, brokers, topic); err != nil {
		logf("delete topic %s: %v (delete it by hand)", topic, err)
		return
	}
	logf("deleted topic %s", topic)
}
