package elasticsearch

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
)

func TestParseIndexPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, err string // err: a part of the error, "" for valid
	}{
		{"shipper-logs", ""},
		{"logs-{topic}-{+yyyy.MM.dd}", ""},
		{"logs-{[kubernetes][namespace]}-{+yy.MM.dd.HH}", ""},
		{"{topic}", ""},
		{"Logs", "lower case"},
		{"_logs", "starts with"},
		{"logs/{topic}", "refuses"},
		{"logs {topic}", "refuses"},
		{"logs-{topic", "unclosed"},
		{"logs-%{topic}", "not %{topic}"},
		{"logs-topic}", "refuses"},
		{"logs-{partition}", "want topic"},
		{"logs-{+yyyy.ww}", "unsupported date token"},
		{"logs-{[a]b}", "[name]"},
		{"", "must be set"},
	} {
		_, err := parseIndexPattern(tc.pattern)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("parseIndexPattern(%q) = %v, want an error with %q", tc.pattern, err, tc.err)
		}
	}
}

// TestIndexRouting: names from topic, fields and the event's date (the
// document's @timestamp, else the Kafka timestamp, in UTC), lower-cased
// with refused characters replaced; records that cannot be routed say why.
func TestIndexRouting(t *testing.T) {
	beforeMidnight := time.Date(2026, 11, 29, 23, 59, 59, 999e6, time.UTC)
	afterMidnight := beforeMidnight.Add(2 * time.Millisecond)
	for _, tc := range []struct {
		pattern, topic, value string
		time                  time.Time
		want, err             string
	}{
		{"logs-{topic}-{+yyyy.MM.dd}", "app", `plain text`, beforeMidnight, "logs-app-2026.11.29", ""},
		{"logs-{topic}-{+yyyy.MM.dd}", "app", `plain text`, afterMidnight, "logs-app-2026.11.30", ""},
		// The Kafka timestamp in another zone is still the UTC day.
		{"logs-{+yyyy.MM.dd}", "app", `x`, afterMidnight.In(time.FixedZone("PST", -8*3600)), "logs-2026.11.30", ""},
		// The document's own @timestamp wins over the Kafka timestamp.
		{"logs-{+yyyy.MM.dd.HH}", "app", `{"@timestamp":"2026-01-02T03:04:05+02:00"}`, afterMidnight, "logs-2026.01.02.01", ""},
		{"logs-{+yyyy.MM.dd}", "app", `{"@timestamp":"not a date"}`, beforeMidnight, "logs-2026.11.29", ""},
		{"{topic}", "Orders.EU", `x`, beforeMidnight, "orders.eu", ""},
		{"{topic}-{[svc]}", "t", `{"svc":"Billing API"}`, beforeMidnight, "t-billing_api", ""},
		{"x-{[k8s][ns]}-{[n]}", "t", `{"k8s":{"ns":"prod","other":[1,2]},"n":42}`, beforeMidnight, "x-prod-42", ""},
		{"x-{[svc]}", "t", `{"other":1}`, beforeMidnight, "", "no string or number at {[svc]}"},
		{"x-{[svc]}", "t", `{"svc":{"a":1}}`, beforeMidnight, "", "no string or number"},
		{"x-{[svc]}", "t", `plain text`, beforeMidnight, "", "no string or number"},
		{"{[svc]}", "t", `{"svc":"_hidden"}`, beforeMidnight, "", "starts with"},
	} {
		p, err := parseIndexPattern(tc.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		r := &shipper.Record{Topic: tc.topic, Value: []byte(tc.value), Time: tc.time}
		got, err := p.index(r)
		var re *routingError
		if tc.err != "" {
			if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s on %s: %q, %v; want an error with %q", tc.pattern, tc.value, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s on %s at %v: %q, %v; want %q", tc.pattern, tc.value, tc.time, got, err, tc.want)
		}
	}
}
