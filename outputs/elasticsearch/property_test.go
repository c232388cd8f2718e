package elasticsearch_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

var seedFlag = flag.Uint64("seed", 0, "seed of TestSendProperties; 0 takes one from the clock")

// TestSendProperties drives Send like the delivery loop does (send again
// whatever is not final) against a fake node failing at random, per request
// and per item, and checks on every Send that each record gets exactly one
// result, that each Delivered record is stored, and that no record stored
// is reported DeadLetter or Hold; and at the end that the documents stored
// are exactly those Delivered, and the dead letters exactly those that
// deserve it.
func TestSendProperties(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
	for round := range 12 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			propertyRound(t, rand.New(rand.NewPCG(seed, uint64(round))))
		})
	}
}

// kind is what a generated record is, and so what it deserves.
type kind int

const (
	plain     kind = iota
	poison         // breaks the bulk body: the whole request gets a 400
	mapping        // refused per item with 400 mapper_parsing_exception
	huge           // larger than the node's http.max_content_length
	tombstone      // empty value
	badUTF8        // not UTF-8
)

func propertyRound(t *testing.T, rng *rand.Rand) {
	srv := estest.New(t)
	maxContent := []int{0, 48 << 10, 200 << 10}[rng.IntN(3)]
	srv.MaxContentLength(maxContent)
	tombstones := []string{"skip", "dead_letter"}[rng.IntN(2)]
	invalidUTF8 := []string{"base64", "dead_letter"}[rng.IntN(2)]
	out := newOutput(t, srv, func(c *elasticsearch.Config) {
		c.MaxBulkBytes = shipper.ByteSize(64<<10 + rng.IntN(192<<10))
		c.Tombstones, c.InvalidUTF8 = tombstones, invalidUTF8
	})

	n := 1 + rng.IntN(400)
	recs := make([]*shipper.Record, n)
	kinds := map[string]kind{}
	for i := range recs {
		k := plain
		switch p := rng.IntN(100); {
		case p < 2:
			k = poison
		case p < 5:
			k = mapping
		case p < 6 && maxContent > 0:
			k = huge
		case p < 9:
			k = tombstone
		case p < 12:
			k = badUTF8
		}
		var v []byte
		switch k {
		case huge:
			v = []byte(strings.Repeat("h", maxContent))
		case tombstone:
		case badUTF8:
			v = []byte{'x', 0xff, byte(rng.IntN(256))}
		default:
			if rng.IntN(3) == 0 {
				v = fmt.Appendf(nil, `{"i":%d,"pad":%q}`, i, strings.Repeat("p", rng.IntN(3000)))
			} else {
				v = fmt.Appendf(nil, "line %d %s", i, strings.Repeat("t", rng.IntN(3000)))
			}
		}
		recs[i] = &shipper.Record{Topic: "p", Offset: int64(i), Value: v, Time: ts}
		kinds[recs[i].DocumentID()] = k
	}

	// The fake's hooks run one at a time under its lock: their own rng.
	frng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	var faulty atomic.Bool
	faulty.Store(true)
	srv.OnBulk(func(b estest.Bulk) (int, string) {
		for _, id := range b.IDs {
			if kinds[id] == poison {
				return 400, `{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line [1], expected START_OBJECT"},"status":400}`
			}
		}
		if !faulty.Load() {
			return 0, ""
		}
		switch p := frng.IntN(100); {
		case p < 3:
			return 429, `{"error":{"type":"es_rejected_execution_exception","reason":"queue full"},"status":429}`
		case p < 6:
			return []int{500, 502, 503, 504}[frng.IntN(4)], `{"error":{"type":"exception","reason":"boom"},"status":500}`
		case p < 8:
			return 401, `{"error":{"type":"security_exception","reason":"expired"},"status":401}`
		case p < 10:
			panic(http.ErrAbortHandler) // the connection drops, nothing is stored
		}
		return 0, ""
	})
	srv.OnItem(func(id string, _ []byte) (int, string) {
		if kinds[id] == mapping {
			return 400, "mapper_parsing_exception"
		}
		if !faulty.Load() {
			return 0, ""
		}
		switch p := frng.IntN(100); {
		case p < 3:
			return 429, "es_rejected_execution_exception"
		case p < 5:
			return 503, "unavailable_shards_exception"
		case p < 7:
			return 500, "exception"
		case p < 8:
			return 409, "other_conflict"
		case p < 9:
			return 403, "cluster_block_exception"
		}
		return 0, ""
	})
	srv.OnItemResponse(func(string) (string, bool) {
		if !faulty.Load() || frng.IntN(100) >= 3 {
			return "", false
		}
		return []string{`{}`, `{"create":{"status":302}}`, `{"create":{}}`}[frng.IntN(3)], true
	})

	final := map[string]elasticsearch.ItemResult{}
	pending := recs
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt == 20 {
			faulty.Store(false) // transient faults pass; what is left must converge
		}
		if attempt == 40 {
			t.Fatalf("%d records still not final after %d sends: delivery is wedged", len(pending), attempt)
		}
		before := srv.Docs("test")
		res, err := out.Send(context.Background(), pending)
		after := srv.Docs("test")
		if len(res) != len(pending) {
			t.Fatalf("%d results for %d records", len(res), len(pending))
		}
		var reqErr *elasticsearch.RequestError
		if err != nil && !errors.As(err, &reqErr) {
			t.Fatalf("error %v is not a RequestError", err)
		}
		var next []*shipper.Record
		for i, r := range res {
			id := pending[i].DocumentID()
			_, stored := after[id]
			_, storedBefore := before[id]
			switch r.Outcome {
			case elasticsearch.Delivered:
				if !stored {
					t.Fatalf("%s reported delivered but not stored: %+v", id, r)
				}
			case elasticsearch.DeadLetter, elasticsearch.Hold, elasticsearch.Skipped:
				if stored && !storedBefore {
					t.Fatalf("%s stored by this Send but reported %+v", id, r)
				}
			case elasticsearch.Pending:
				if reqErr == nil && r.Type != "bad_response" {
					t.Fatalf("%s pending without a failed request or a bad item: %+v", id, r)
				}
			case elasticsearch.Retry:
			default:
				t.Fatalf("%s: undefined outcome %+v", id, r)
			}
			switch r.Outcome {
			case elasticsearch.Delivered, elasticsearch.DeadLetter, elasticsearch.Skipped:
				final[id] = r
			default:
				next = append(next, pending[i])
			}
		}
		if reqErr != nil && !slices.ContainsFunc(res, func(r elasticsearch.ItemResult) bool {
			return r.Type == reqErr.Type && r.Status == reqErr.Status && (r.Outcome == elasticsearch.Retry || r.Outcome == elasticsearch.Hold)
		}) {
			t.Fatalf("Send returned %v but no document carries it", err)
		}
		pending = next
	}

	stored := srv.Docs("test")
	for _, r := range recs {
		id := r.DocumentID()
		res, k := final[id], kinds[id]
		_, isStored := stored[id]
		if isStored != (res.Outcome == elasticsearch.Delivered) {
			t.Fatalf("%s (kind %d): stored %v, final %+v", id, k, isStored, res)
		}
		deserved := k == poison || k == mapping || k == huge ||
			k == tombstone && tombstones == "dead_letter" || k == badUTF8 && invalidUTF8 == "dead_letter"
		if deserved != (res.Outcome == elasticsearch.DeadLetter) {
			t.Fatalf("%s (kind %d): final %+v", id, k, res)
		}
		if (k == tombstone && tombstones == "skip") != (res.Outcome == elasticsearch.Skipped) {
			t.Fatalf("%s (kind %d): final %+v", id, k, res)
		}
	}
}
