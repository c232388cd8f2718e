package bulksink_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/bench/internal/bulksink"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
)

// The agent's own output must take the sink for an 8.x node and read its
// answers: created once, a duplicate after, with and without gzip.
func TestTheOutputDeliversToTheSink(t *testing.T) {
	for _, compression := range []string{"none", "gzip"} {
		t.Run(compression, func(t *testing.T) {
			const n = 5
			sink, err := bulksink.Start(n)
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			cfg := elasticsearch.DefaultConfig()
			cfg.URLs, cfg.Compression, cfg.MaxBulkBytes = []string{sink.URL()}, compression, 64<<10
			out, err := elasticsearch.New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			info, err := out.Check(ctx)
			if err != nil || info.Version != bulksink.Version {
				t.Fatalf("Check: %+v, %v", info, err)
			}
			var recs []*shipper.Record
			for i := range n {
				recs = append(recs, &shipper.Record{Topic: "t", TopicID: "abcdefgh", Partition: int32(i % 2), Offset: int64(i),
					Value: fmt.Appendf(nil, `{"@timestamp":"2026-12-01T00:00:00Z","msg":"event %d %s"}`, i, strings.Repeat("x", 30<<10))})
			}
			for pass, wantDup := range []bool{false, true} {
				res, err := out.Send(ctx, recs)
				if err != nil {
					t.Fatalf("pass %d: Send: %v", pass, err)
				}
				for i, r := range res {
					if r.Outcome != elasticsearch.Delivered || r.Duplicate != wantDup {
						t.Errorf("pass %d, record %d: %+v, want delivered, duplicate %v", pass, i, r, wantDup)
					}
				}
			}
			select {
			case <-sink.Done():
			default:
				t.Fatal("Done not closed after every document was answered")
			}
			st := sink.Stats()
			if st.Created != n || st.Repeated != n || st.Requests < 4 {
				t.Errorf("stats %+v: want %d created, %d repeated, several requests (30 KiB documents, max_bulk_bytes 64KiB)", st, n, n)
			}
			if compression == "gzip" && st.Gzipped != st.Requests {
				t.Errorf("%d of %d requests gzipped", st.Gzipped, st.Requests)
			}
		})
	}
}

func TestSinkRefusesAMalformedBody(t *testing.T) {
	sink, err := bulksink.Start(1)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for _, body := range []string{
		`{"create":{"_index":"i","_id":"a"}}` + "\n",         // no source
		`{"frobnicate":{"_index":"i","_id":"a"}}` + "\n{}\n", // no such action
		"not json\n{}\n",
	} {
		res, err := http.Post(sink.URL()+"/_bulk", "application/x-ndjson", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("X-Elastic-Product") != "Elasticsearch" {
			t.Errorf("%q: %s, product %q; want 400 from Elasticsearch", body, res.Status, res.Header.Get("X-Elastic-Product"))
		}
	}
	if st := sink.Stats(); st.Created != 0 || st.Requests != 0 {
		t.Errorf("stats %+v after malformed bodies only", st)
	}
}
