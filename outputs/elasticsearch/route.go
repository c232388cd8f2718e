package elasticsearch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shipper-agent/shipper"
)

// Index routing. The index setting is a pattern over the record:
//
//	logs-{topic}-{+yyyy.MM.dd}
//
// Placeholders (Logstash writes them %{...}, but in HCL "%{" starts a
// template directive, so shipper takes them without the '%'):
//
//	{topic}           the Kafka topic
//	{[field]}         a top-level string or number field of the document;
//	{[a][b]}          a nested one
//	{+yyyy.MM.dd}     the event's date, UTC: the document's own @timestamp
//	                  when it has one Elasticsearch would read (RFC 3339),
//	                  else the Kafka timestamp. Tokens: yyyy, yy, MM, dd,
//	                  HH; any other character but a letter is kept.
//
// The rendered name is lower-cased and every character Elasticsearch
// refuses in an index name (\ / * ? " < > | , # : and space) becomes '_',
// so a topic such as "Orders.EU" routes to "orders.eu". A record whose name
// is still invalid (empty, ".", "..", starting with '-', '_' or '+',
// longer than 255 bytes) or whose field is missing or not a string or a
// number is dead-lettered with type "index_routing": a replay after the
// pattern is fixed routes it again.

type partKind int

const (
	partLiteral partKind = iota
	partTopic
	partField
	partDate
)

type patternPart struct {
	kind   partKind
	text   string   // literal text, or the date's Go layout
	field  []string // field path
	source string   // the placeholder as written, for errors
}

// indexPattern is a parsed index setting.
type indexPattern struct {
	parts []patternPart
	// static is the name when the pattern has no placeholder.
	static string
	dated  bool
	fields bool
}

// invalidIndexChars are the characters Elasticsearch refuses in an index
// name (MetadataCreateIndexService), ':' included since 7.0.
const invalidIndexChars = `\/*?"<>|,#: `

// parseIndexPattern parses and validates an index pattern.
func parseIndexPattern(s string) (indexPattern, error) {
	var p indexPattern
	rest := s
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			p.parts = append(p.parts, patternPart{kind: partLiteral, text: rest})
			break
		}
		if i > 0 && rest[i-1] == '%' {
			return p, fmt.Errorf("%q: write placeholders {topic}, not %%{topic}", s)
		}
		if i > 0 {
			p.parts = append(p.parts, patternPart{kind: partLiteral, text: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return p, fmt.Errorf("%q: unclosed { at byte %d", s, len(s)-len(rest)+i)
		}
		ph := rest[i+1 : i+j]
		part, err := parsePlaceholder(ph)
		if err != nil {
			return p, fmt.Errorf("%q: {%s}: %w", s, ph, err)
		}
		part.source = "{" + ph + "}"
		p.parts = append(p.parts, part)
		p.dated = p.dated || part.kind == partDate
		p.fields = p.fields || part.kind == partField
		rest = rest[i+j+1:]
	}
	for _, part := range p.parts {
		if part.kind == partLiteral && strings.ContainsAny(part.text, invalidIndexChars+"}") {
			return p, fmt.Errorf("%q: the text %q holds a character Elasticsearch refuses in index names (%s and space)", s, part.text, strings.TrimSpace(invalidIndexChars))
		}
	}
	if len(p.parts) == 0 {
		return p, errors.New("must be set")
	}
	if len(p.parts) == 1 && p.parts[0].kind == partLiteral {
		name := p.parts[0].text
		if name != strings.ToLower(name) {
			return p, fmt.Errorf("%q: index names are lower case", s)
		}
		if err := checkIndexName(name); err != nil {
			return p, fmt.Errorf("%q: %w", s, err)
		}
		p.static = name
	}
	return p, nil
}

func parsePlaceholder(ph string) (patternPart, error) {
	switch {
	case ph == "topic":
		return patternPart{kind: partTopic}, nil
	case strings.HasPrefix(ph, "+"):
		layout, err := dateLayout(ph[1:])
		return patternPart{kind: partDate, text: layout}, err
	case strings.HasPrefix(ph, "["):
		var path []string
		for rest := ph; rest != ""; {
			if rest[0] != '[' {
				return patternPart{}, errors.New("a field is written [name] or [a][b]")
			}
			k := strings.IndexByte(rest, ']')
			if k <= 1 {
				return patternPart{}, errors.New("a field is written [name] or [a][b]")
			}
			path = append(path, rest[1:k])
			rest = rest[k+1:]
		}
		return patternPart{kind: partField, field: path}, nil
	}
	return patternPart{}, errors.New("want topic, [field] or +date (e.g. +yyyy.MM.dd)")
}

// dateTokens maps the date tokens of an index pattern to Go layout
// elements, longest first.
var dateTokens = []struct{ token, layout string }{
	{"yyyy", "2006"}, {"yy", "06"}, {"MM", "01"}, {"dd", "02"}, {"HH", "15"},
}

// dateLayout turns yyyy.MM.dd-style tokens into a Go time layout.
func dateLayout(f string) (string, error) {
	if f == "" {
		return "", errors.New("an empty date format")
	}
	var b strings.Builder
next:
	for i := 0; i < len(f); {
		for _, d := range dateTokens {
			if strings.HasPrefix(f[i:], d.token) {
				b.WriteString(d.layout)
				i += len(d.token)
				continue next
			}
		}
		if c := f[i]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			return "", fmt.Errorf("unsupported date token at %q: use yyyy, yy, MM, dd, HH", f[i:])
		}
		b.WriteByte(f[i])
		i++
	}
	return b.String(), nil
}

// checkIndexName reports why Elasticsearch would refuse a (lower-case)
// index name.
func checkIndexName(name string) error {
	switch {
	case name == "":
		return errors.New("an empty index name")
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a valid index name", name)
	case strings.IndexAny(name[:1], "-_+") == 0:
		return fmt.Errorf("index name %q starts with '-', '_' or '+'", name)
	case len(name) > 255:
		return fmt.Errorf("index name of %d bytes, more than 255", len(name))
	case strings.ContainsAny(name, invalidIndexChars):
		return fmt.Errorf("index name %q holds one of %s or a space", name, strings.TrimSpace(invalidIndexChars))
	}
	return nil
}

// routingError is why a record cannot be routed.
type routingError struct{ reason string }

func (e *routingError) Error() string { return e.reason }

// index renders the record's index name.
func (p *indexPattern) index(r *shipper.Record) (string, error) {
	if p.static != "" {
		return p.static, nil
	}
	var obj []byte // the value, when it is a JSON object
	if p.dated || p.fields {
		if v := bytes.TrimSpace(r.Value); len(v) > 0 && v[0] == '{' && utf8.Valid(v) {
			obj = v
		}
	}
	var b strings.Builder
	for _, part := range p.parts {
		switch part.kind {
		case partLiteral:
			b.WriteString(part.text)
		case partTopic:
			b.WriteString(r.Topic)
		case partDate:
			b.WriteString(eventTime(obj, r.Time).Format(part.text))
		case partField:
			v, ok := fieldValue(obj, part.field)
			if !ok {
				return "", &routingError{fmt.Sprintf("index %s: the document has no string or number at %s", p.source(), part.source)}
			}
			b.WriteString(v)
		}
	}
	name := strings.Map(func(c rune) rune {
		if strings.ContainsRune(invalidIndexChars, c) {
			return '_'
		}
		return c
	}, strings.ToLower(b.String()))
	if err := checkIndexName(name); err != nil {
		return "", &routingError{fmt.Sprintf("index %s: %v", p.source(), err)}
	}
	return name, nil
}

// source returns the pattern as written.
func (p *indexPattern) source() string {
	var b strings.Builder
	for _, part := range p.parts {
		if part.kind == partLiteral {
			b.WriteString(part.text)
		} else {
			b.WriteString(part.source)
		}
	}
	return b.String()
}

// eventTime is the document's own @timestamp when it has one that parses
// as RFC 3339, else the Kafka timestamp; UTC.
func eventTime(obj []byte, kafka time.Time) time.Time {
	if obj != nil && bytes.Contains(obj, []byte(`"`+timestampField+`"`)) {
		if v, ok := fieldValue(obj, []string{timestampField}); ok {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return t.UTC()
			}
		}
	}
	return kafka.UTC()
}

// fieldValue returns the string or number at path in the JSON object obj.
// Only the path's objects are decoded; other values are skipped as raw
// bytes.
func fieldValue(obj []byte, path []string) (string, bool) {
	raw := json.RawMessage(obj)
	for _, key := range path {
		v, ok := member(raw, key)
		if !ok {
			return "", false
		}
		raw = v
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String(), true
	}
	return "", false
}

// member returns the value of key in the JSON object obj.
func member(obj []byte, key string) (json.RawMessage, bool) {
	if len(obj) == 0 || !bytes.Contains(obj, []byte(`"`+key+`"`)) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if k, _ := t.(string); k == key {
			return v, true
		}
	}
	return nil, false
}
