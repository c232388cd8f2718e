package elasticsearch_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strings"
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

// TestMetadataField: with metadata_field set, every document shape (text,
// an object, an object with its own @timestamp, an empty object) carries
// the record's topic, partition, offset, timestamp, key (with key_base64
// when it is not UTF-8) and the selected headers (the last of repeated
// keys); a document that has the field keeps its own.
func TestMetadataField(t *testing.T) {
	srv := estest.New(t)
	out := newOutput(t, srv, func(c *elasticsearch.Config) {
		c.MetadataField, c.MetadataHeaders = "kafka", []string{"trace", "absent"}
	})
	recs := records("plain line", `{"a":1}`, `{"@timestamp":"2020-01-01T00:00:00Z","b":2}`, `{}`, `{"kafka":"mine"}`)
	recs[0].Key = []byte("k0")
	recs[1].Key = []byte{0xff, 'x'}
	recs[0].Headers = []shipper.Header{{Key: "trace", Value: []byte("t1")}, {Key: "other", Value: []byte("o")}, {Key: "trace", Value: []byte("t2")}}
	res, err := out.Send(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	docs := srv.Docs("test")
	type meta struct {
		Topic     string            `json:"topic"`
		Partition int32             `json:"partition"`
		Offset    int64             `json:"offset"`
		Timestamp string            `json:"timestamp"`
		Key       *string           `json:"key"`
		KeyBase64 string            `json:"key_base64"`
		Headers   map[string]string `json:"headers"`
	}
	for i, r := range recs {
		if res[i].Outcome != elasticsearch.Delivered {
			t.Fatalf("item %d: %+v", i, res[i])
		}
		raw := docs[r.DocumentID()]
		if i == 4 {
			if !strings.Contains(string(raw), `"kafka":"mine"`) || strings.Count(string(raw), `"kafka"`) != 1 {
				t.Fatalf("doc with its own field: %s", raw)
			}
			continue
		}
		var doc struct {
			Kafka meta `json:"kafka"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("doc %d: %v: %s", i, err, raw)
		}
		m := doc.Kafka
		if m.Topic != "app-logs" || m.Partition != 2 || m.Offset != r.Offset || m.Timestamp != "2026-11-21T06:30:00.123Z" {
			t.Fatalf("doc %d metadata: %+v in %s", i, m, raw)
		}
		switch i {
		case 0:
			if m.Key == nil || *m.Key != "k0" || m.KeyBase64 != "" || len(m.Headers) != 1 || m.Headers["trace"] != "t2" {
				t.Fatalf("doc 0 metadata: %+v", m)
			}
		case 1:
			if m.KeyBase64 != base64.StdEncoding.EncodeToString(recs[1].Key) || m.Headers != nil {
				t.Fatalf("doc 1 metadata: %+v", m)
			}
		default:
			if m.Key != nil || m.Headers != nil {
				t.Fatalf("doc %d metadata: %+v, want no key and no headers", i, m)
			}
		}
	}
	if !strings.Contains(string(docs[recs[2].DocumentID()]), `"@timestamp":"2020-01-01T00:00:00Z"`) {
		t.Fatalf("own @timestamp lost: %s", docs[recs[2].DocumentID()])
	}
}

// TestKeyDocuments: with document_id = "key" each key has one document,
// holding its latest record whatever the order the records arrive in;
// a tombstone deletes it (tombstones = "delete"), and deleting a key never
// indexed is done too. Records without a key keep offset ids; keys that
// are not short plain text are hashed.
func TestKeyDocuments(t *testing.T) {
	srv := estest.New(t)
	out := newOutput(t, srv, func(c *elasticsearch.Config) { c.DocumentID, c.Tombstones = "key", "delete" })
	rec := func(key string, offset int64, value string) *shipper.Record {
		r := &shipper.Record{Topic: "app", TopicID: "pcg823lr", Offset: offset, Time: ts}
		if key != "" {
			r.Key = []byte(key)
		}
		if value != "-" {
			r.Value = []byte(value)
		}
		return r
	}
	send := func(recs ...*shipper.Record) []elasticsearch.ItemResult {
		t.Helper()
		res, err := out.Send(context.Background(), recs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := send(rec("a", 100, `{"v":1}`), rec("a", 102, `{"v":2}`), rec("b", 101, `{"v":3}`), rec("", 103, `{"v":4}`),
		rec("tab\tkey", 105, `{"v":5}`))
	for i, r := range res {
		if r.Outcome != elasticsearch.Delivered || r.Duplicate {
			t.Fatalf("item %d: %+v", i, r)
		}
	}
	// A replay of the older record of a: superseded, not applied.
	if res := send(rec("a", 100, `{"v":1}`)); res[0].Outcome != elasticsearch.Delivered || !res[0].Duplicate {
		t.Fatalf("older record of a key: %+v, want delivered as a duplicate", res[0])
	}
	// Tombstones: of b (deleted), of a key never indexed, of no key (skipped).
	res = send(rec("b", 104, "-"), rec("never", 106, "-"), rec("", 107, "-"))
	if res[0].Outcome != elasticsearch.Delivered || res[1].Outcome != elasticsearch.Delivered || res[2].Outcome != elasticsearch.Skipped {
		t.Fatalf("tombstones: %+v", res)
	}
	docs := srv.Docs("test")
	if got := string(docs["app-pcg823lr-a"]); !strings.Contains(got, `"v":2`) {
		t.Fatalf("document of key a: %s, want the record at offset 102", got)
	}
	if _, ok := docs["app-pcg823lr-b"]; ok {
		t.Fatalf("document of key b survived its tombstone")
	}
	if got := string(docs["app-pcg823lr-0-103"]); !strings.Contains(got, `"v":4`) {
		t.Fatalf("record without a key: %q, want an offset id", got)
	}
	hashed := 0
	for id := range docs {
		if strings.HasPrefix(id, "app-pcg823lr-#") && len(id) == len("app-pcg823lr-#")+64 {
			hashed++
		}
	}
	if len(docs) != 3 || hashed != 1 {
		t.Fatalf("documents %v: want a, the keyless record and the hashed key", slices.Sorted(maps.Keys(docs)))
	}
}
