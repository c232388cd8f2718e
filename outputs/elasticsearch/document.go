package elasticsearch

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/shipper-agent/shipper"
)

const timestampField = "@timestamp"

// appendDocument appends the _source of a record's document to dst.
//
// A record whose value is a JSON object is indexed as its own source; any
// other value (plain text, a JSON array or scalar, invalid JSON) is wrapped
// as {"message": "..."}. Every document gets @timestamp: the record's own
// if its object has one, else the Kafka timestamp.
func appendDocument(dst []byte, r *shipper.Record) []byte {
	v := bytes.TrimSpace(r.Value)
	if len(v) > 0 && v[0] == '{' && json.Valid(v) {
		if bytes.ContainsAny(v, "\r\n") {
			// A bulk body is newline-delimited: a pretty-printed object
			// would split into several lines.
			var c bytes.Buffer
			if json.Compact(&c, v) == nil {
				v = c.Bytes()
			}
		}
		if hasTopLevelKey(v, timestampField) {
			return append(dst, v...)
		}
		dst = append(dst, `{"@timestamp":`...)
		dst = appendTimestamp(dst, r.Time)
		body := bytes.TrimSpace(v[1:])
		if len(body) > 0 && body[0] != '}' {
			dst = append(dst, ',')
		}
		return append(dst, body...)
	}
	dst = append(dst, `{"@timestamp":`...)
	dst = appendTimestamp(dst, r.Time)
	dst = append(dst, `,"message":`...)
	msg, _ := json.Marshal(string(r.Value)) // a string always marshals
	dst = append(dst, msg...)
	return append(dst, '}')
}

func appendTimestamp(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	return append(dst, '"')
}

// hasTopLevelKey reports whether the JSON object obj has the key at its top
// level. obj must be valid JSON. Most records lack the key's text entirely,
// so the full parse runs only when the bytes contain it somewhere.
func hasTopLevelKey(obj []byte, key string) bool {
	if !bytes.Contains(obj, []byte(`"`+key+`"`)) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil { // '{'
		return false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if k, _ := t.(string); k == key {
			return true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}
