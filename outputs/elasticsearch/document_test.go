package elasticsearch_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// TestTombstones proves that a record with a nil or empty value is never
// sent: Skipped by default, DeadLetter on request (an empty value is
// always skipped), and decided even when
// the Send's request fails.
func TestTombstones(t *testing.T) {
	cases := []struct {
		setting string
		want    elasticsearch.Outcome
	}{
		{"skip", elasticsearch.Skipped},
		{"dead_letter", elasticsearch.DeadLetter},
	}
	for _, tc := range cases {
		t.Run(tc.setting, func(t *testing.T) {
			srv := estest.New(t)
			out := newOutput(t, srv, func(c *elasticsearch.Config) { c.Tombstones = tc.setting })
			// A null value (a tombstone), an empty one, a line.
			recs := records("", "", "a")
			recs[0].Value, recs[1].Value = nil, []byte{}
			res, err := out.Send(context.Background(), recs[:2])
			if err != nil {
				t.Fatal(err)
			}
			if srv.Requests() != 0 {
				t.Fatalf("%d requests for a tombstone and an empty value", srv.Requests())
			}
			if r := res[0]; r.Outcome != tc.want || r.Type != "tombstone" || r.Reason == "" {
				t.Fatalf("tombstone: %+v, want %s", r, tc.want)
			}
			if r := res[1]; r.Outcome != elasticsearch.Skipped || r.Type != "empty" {
				t.Fatalf("empty value: %+v, want skipped whatever the setting", r)
			}
			srv.OnRequest(func(int) (int, string) { return 503, "" })
			res, err = out.Send(context.Background(), recs)
			if err == nil || res[0].Outcome != tc.want || res[1].Outcome != elasticsearch.Skipped || res[2].Outcome != elasticsearch.Retry {
				t.Fatalf("with a failed request: %+v, %v", res, err)
			}
		})
	}
}

// TestInvalidUTF8 proves that a value that is not UTF-8 is never indexed as
// JSON: with "base64" its exact bytes round-trip through message_base64;
// with "dead_letter" it is not sent.
func TestInvalidUTF8(t *testing.T) {
	values := [][]byte{
		{'a', 0xff, 'b', 0xc3},     // text with invalid bytes, one a truncated sequence
		[]byte("{\"a\":\"\xfe\"}"), // an object that would pass json.Valid
	}
	t.Run("base64", func(t *testing.T) {
		srv := estest.New(t)
		out := newOutput(t, srv, nil)
		recs := records("", "")
		for i, v := range values {
			recs[i].Value = v
		}
		res, err := out.Send(context.Background(), recs)
		if err != nil {
			t.Fatal(err)
		}
		docs := srv.Docs("test")
		for i, r := range recs {
			if res[i].Outcome != elasticsearch.Delivered {
				t.Fatalf("item %d: %+v", i, res[i])
			}
			var doc struct {
				Timestamp string `json:"@timestamp"`
				Message   string `json:"message"`
				Base64    string `json:"message_base64"`
			}
			if err := json.Unmarshal(docs[r.DocumentID()], &doc); err != nil {
				t.Fatalf("doc %d: %v: %s", i, err, docs[r.DocumentID()])
			}
			orig, err := base64.StdEncoding.DecodeString(doc.Base64)
			if err != nil || string(orig) != string(r.Value) {
				t.Fatalf("doc %d: message_base64 decodes to %q, %v; want %q", i, orig, err, r.Value)
			}
			if doc.Timestamp != "2026-11-21T06:30:00.123Z" || doc.Message == "" {
				t.Fatalf("doc %d: %+v", i, doc)
			}
		}
		if msg := string(docs[recs[0].DocumentID()]); !json.Valid([]byte(msg)) {
			t.Fatalf("invalid JSON indexed: %s", msg)
		}
	})
	t.Run("dead_letter", func(t *testing.T) {
		srv := estest.New(t)
		out := newOutput(t, srv, func(c *elasticsearch.Config) { c.InvalidUTF8 = "dead_letter" })
		recs := []*shipper.Record{{Topic: "t", Value: values[0]}, {Topic: "t", Offset: 1, Value: values[1]}, {Topic: "t", Offset: 2, Value: []byte("ok é")}}
		res, err := out.Send(context.Background(), recs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res[:2] {
			if r.Outcome != elasticsearch.DeadLetter || r.Type != "invalid_utf8" || r.Reason != `value is not valid UTF-8 (invalid_utf8 = "dead_letter")` {
				t.Fatalf("item %d: %+v", i, r)
			}
		}
		if res[2].Outcome != elasticsearch.Delivered || len(srv.Docs("test")) != 1 {
			t.Fatalf("valid record: %+v, %d stored", res[2], len(srv.Docs("test")))
		}
	})
}
