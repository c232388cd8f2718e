package elasticsearch

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/shipper-agent/shipper"
	"github.com/tidwall/gjson"
)

const timestampField = "@timestamp"

// precheck decides the records that are never sent: tombstones, and values
// that are not UTF-8 when invalid_utf8 = "dead_letter". It returns Pending
// for a record to send.
func (o *Output) precheck(r *shipper.Record) ItemResult {
	switch {
	case r.Value == nil && o.cfg.Tombstones == "delete" && r.Key != nil:
		return ItemResult{} // sent as a delete of the key's document
	case r.Value == nil && o.cfg.Tombstones == "dead_letter":
		return ItemResult{Outcome: DeadLetter, Type: "tombstone",
			Reason: `value is null: a tombstone (tombstones = "dead_letter")`}
	case r.Value == nil:
		return ItemResult{Outcome: Skipped, Type: "tombstone",
			Reason: fmt.Sprintf(`value is null: a tombstone (tombstones = %q)`, o.cfg.Tombstones)}
	case len(r.Value) == 0:
		return ItemResult{Outcome: Skipped, Type: "empty", Reason: "value is empty: nothing to index"}
	case o.cfg.InvalidUTF8 == "dead_letter" && !utf8.Valid(r.Value):
		return ItemResult{Outcome: DeadLetter, Type: "invalid_utf8",
			Reason: `value is not valid UTF-8 (invalid_utf8 = "dead_letter")`}
	}
	return ItemResult{}
}

// appendDocument appends the _source of a record's document to dst.
//
// A record whose value is a JSON object is indexed as its own source; any
// other value (plain text, a JSON array or scalar, invalid JSON) is wrapped
// as {"message": "..."}. Every document gets @timestamp: the record's own
// if its object has one, else the Kafka timestamp.
//
// A value that is not valid UTF-8 is never indexed as JSON (Elasticsearch
// rejects such JSON, and json.Valid does not check it): it is wrapped with
// its invalid bytes replaced by U+FFFD in message, and its exact bytes in
// message_base64 (standard encoding), so nothing is lost.
func appendDocument(dst []byte, r *shipper.Record) []byte {
	valid := utf8.Valid(r.Value)
	v := bytes.TrimSpace(r.Value)
	if valid && len(v) > 0 && v[0] == '{' && validJSON(v) {
		if bytes.IndexByte(v, '\n') >= 0 || bytes.IndexByte(v, '\r') >= 0 { // IndexByte is vectorised; ContainsAny is not
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
	msg, _ := json.Marshal(string(r.Value)) // a string always marshals; invalid bytes become U+FFFD
	dst = append(dst, msg...)
	if !valid {
		dst = append(dst, `,"message_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, r.Value)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// maxNesting is encoding/json's nesting limit: json.Valid refuses deeper
// values.
const maxNesting = 10000

// validJSON reports whether v, valid UTF-8, is valid JSON, exactly as
// json.Valid does (FuzzValidJSON compares them). gjson's validator takes
// about a third of json.Valid's time on a log event (BenchmarkValidJSON),
// and json.Valid was the largest single cost of building a bulk body. gjson
// recurses once per level of nesting, without a limit: a value that could
// nest deeper than json.Valid's limit goes to json.Valid instead, so a
// record of a million '[' cannot exhaust the stack.
func validJSON(v []byte) bool {
	if bytes.Count(v, []byte{'['})+bytes.Count(v, []byte{'{'}) > maxNesting {
		return json.Valid(v)
	}
	return gjson.ValidBytes(v)
}

func appendTimestamp(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	return append(dst, '"')
}

// hasTopLevelKey reports whether the JSON object obj has the key at its top
// level. obj must be valid JSON (the caller checked it). Most records lack
// the key's text entirely, so the scan runs only when the bytes contain its
// tail somewhere (the tail: a key may escape its first character, as
// "\u0040timestamp"). The scan walks the object once, skipping strings and
// nested values, and compares each top-level key, unescaping only a key
// that has escapes (Elasticsearch reads "\u0040timestamp" as @timestamp).
func hasTopLevelKey(obj []byte, key string) bool {
	if !bytes.Contains(obj, []byte(key[min(1, len(key)-1):])) {
		return false
	}
	depth := 0
	expectKey := false // at depth 1, the next string is a key
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; c {
		case '"':
			end, escaped := stringEnd(obj, i)
			if depth == 1 && expectKey {
				raw := obj[i+1 : end]
				if !escaped && string(raw) == key {
					return true
				}
				if escaped {
					var k string
					if json.Unmarshal(obj[i:end+1], &k) == nil && k == key {
						return true
					}
				}
				expectKey = false
			}
			i = end
		case '{':
			depth++
			expectKey = depth == 1
		case '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			expectKey = depth == 1
		}
	}
	return false
}

// stringEnd returns the index of the quote closing the JSON string that
// opens at obj[start], and whether the string has escapes.
func stringEnd(obj []byte, start int) (end int, escaped bool) {
	for i := start + 1; i < len(obj); i++ {
		switch obj[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i, escaped
		}
	}
	return len(obj) - 1, escaped
}

// metadata adds a record's Kafka metadata to its document
// (Config.MetadataField); the zero value adds nothing.
type metadata struct {
	field   string
	headers []string
}

// add inserts the metadata object into the document dst[start:], a JSON
// object, before its closing brace, unless the field is off or the
// document has it already.
func (m metadata) add(dst []byte, start int, r *shipper.Record) []byte {
	if m.field == "" || dst[len(dst)-1] != '}' || hasTopLevelKey(dst[start:], m.field) {
		return dst
	}
	dst = dst[:len(dst)-1]
	if len(bytes.TrimSpace(dst[start+1:])) > 0 {
		dst = append(dst, ',')
	}
	dst = appendJSONString(dst, m.field)
	dst = append(dst, `:{"topic":`...)
	dst = appendJSONString(dst, r.Topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(r.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, r.Offset, 10)
	dst = append(dst, `,"timestamp":`...)
	dst = appendTimestamp(dst, r.Time)
	if r.Key != nil {
		dst = append(dst, `,"key":`...)
		dst = appendJSONString(dst, string(r.Key))
		if !utf8.Valid(r.Key) {
			dst = append(dst, `,"key_base64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, r.Key)
			dst = append(dst, '"')
		}
	}
	if len(m.headers) > 0 {
		var hs []shipper.Header
		for _, name := range m.headers {
			for i := len(r.Headers) - 1; i >= 0; i-- {
				if r.Headers[i].Key == name {
					hs = append(hs, r.Headers[i])
					break
				}
			}
		}
		if len(hs) > 0 {
			dst = append(dst, `,"headers":{`...)
			for i, h := range hs {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendJSONString(dst, h.Key)
				dst = append(dst, ':')
				dst = appendJSONString(dst, string(h.Value))
			}
			dst = append(dst, '}')
		}
	}
	return append(dst, "}}"...)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
// Index names, document ids and topics are printable ASCII without quotes
// or backslashes nearly always: those are copied as they are, without
// encoding/json's reflection and allocation.
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(string(s)) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// maxKeyInID bounds a key used as it is in a document id; Elasticsearch
// allows 512 bytes for the whole id.
const maxKeyInID = 256

// keyDocumentID is the id of a key's document (document_id = "key"):
// "<topic>-<topic id>-<key>", the key as it is when it is short UTF-8 text
// without control characters and not starting with '#', else '#' and its
// SHA-256 in hex.
func keyDocumentID(r *shipper.Record) string {
	b := make([]byte, 0, len(r.Topic)+len(r.TopicID)+len(r.Key)+3)
	b = append(b, r.Topic...)
	b = append(b, '-')
	if r.TopicID != "" {
		b = append(b, r.TopicID...)
		b = append(b, '-')
	}
	if plainKey(r.Key) {
		return string(append(b, r.Key...))
	}
	sum := sha256.Sum256(r.Key)
	b = append(b, '#')
	return string(hex.AppendEncode(b, sum[:]))
}

func plainKey(k []byte) bool {
	if len(k) == 0 || len(k) > maxKeyInID || k[0] == '#' || !utf8.Valid(k) {
		return false
	}
	for _, c := range string(k) {
		if unicode.IsControl(c) {
			return false
		}
	}
	return true
}
