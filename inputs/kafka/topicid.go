package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shipper-agent/shipper"
)

// Topic ids. A topic deleted and created again under the same name starts
// its offsets at 0 again; without something that tells the two apart, its
// records would get the document ids of the old topic's records and pass
// for duplicates. Kafka 2.8+ gives each topic a random id in Metadata v10,
// but kafka-go's protocol package stops at v8. The requests below ride a
// connection of kafka-go's Transport (so TLS and SASL are done as for any
// other request) as raw exchanges, encoded and decoded with franz-go's
// kmsg, which knows every version of the protocol.

// minMetadataWithIDs is the first Metadata version with topic ids.
const minMetadataWithIDs = 10

// rawCorrelationID marks raw exchanges; kafka-go runs one request at a
// time on a connection, so any value is unambiguous.
const rawCorrelationID = 0x5ea1

// maxRawResponse bounds a raw response read into memory, unless the
// request sets its own bound.
const maxRawResponse = 16 << 20

// rawRequest sends a kmsg request over a kafka-go connection.
type rawRequest struct {
	req kmsg.Request
	// maxResponse bounds the response's size; 0 means maxRawResponse.
	maxResponse int
}

// rawFetch is a fetch request for the partitions one broker leads; the
// transport sends it to that broker.
type rawFetch struct {
	rawRequest
	leader int32
}

// Broker routes the request to the partitions' leader, as the session
// read it from the same metadata the transport holds.
func (r *rawFetch) Broker(c protocol.Cluster) (protocol.Broker, error) {
	b, ok := c.Brokers[r.leader]
	if !ok {
		return protocol.Broker{ID: -1}, fmt.Errorf("broker %d is not in the cluster's metadata", r.leader)
	}
	return b, nil
}

// rawResponse carries its answer back through kafka-go's Transport.
type rawResponse struct{ res kmsg.Response }

func (r *rawRequest) ApiKey() protocol.ApiKey  { return protocol.ApiKey(r.req.Key()) }
func (r *rawResponse) ApiKey() protocol.ApiKey { return protocol.ApiKey(r.res.Key()) }

// Required makes kafka-go hand the connection to RawExchange whatever
// version it negotiated.
func (r *rawRequest) Required(map[protocol.ApiKey]int16) bool { return true }

// RawExchange writes the request and reads its response on the broker
// connection rw.
func (r *rawRequest) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	if _, err := rw.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("shipper")).AppendRequest(nil, r.req, rawCorrelationID)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(rw, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	limit := uint32(maxRawResponse)
	if r.maxResponse > 0 {
		limit = uint32(r.maxResponse)
	}
	if n < 4 || n > limit {
		return nil, fmt.Errorf("raw %s response of %d bytes", kmsg.NameForKey(r.req.Key()), n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rw, body); err != nil {
		return nil, err
	}
	if id := int32(binary.BigEndian.Uint32(body)); id != rawCorrelationID {
		return nil, fmt.Errorf("raw %s response with correlation id %d", kmsg.NameForKey(r.req.Key()), id)
	}
	body = body[4:]
	// A flexible response header ends with tagged fields; ApiVersions'
	// never has them.
	if r.req.IsFlexible() && r.req.Key() != int16(protocol.ApiVersions) {
		b := kbinReader(body)
		kmsg.SkipTags(b)
		if b.err != nil {
			return nil, b.err
		}
		body = b.src
	}
	res := r.req.ResponseKind()
	res.SetVersion(r.req.GetVersion())
	if err := res.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode raw %s response: %w", kmsg.NameForKey(r.req.Key()), err)
	}
	return &rawResponse{res: res}, nil
}

// tagReader reads the uvarints of a tagged-fields section (kmsg.TagReader).
type tagReader struct {
	src []byte
	err error
}

func kbinReader(b []byte) *tagReader { return &tagReader{src: b} }

func (t *tagReader) Uvarint() uint32 {
	v, n := binary.Uvarint(t.src)
	if n <= 0 || v > 1<<32-1 {
		t.err = errors.New("bad tagged fields in a response header")
		t.src = nil
		return 0
	}
	t.src = t.src[n:]
	return uint32(v)
}

func (t *tagReader) Span(n int) []byte {
	if n < 0 || n > len(t.src) {
		t.err = errors.New("bad tagged field in a response header")
		t.src = nil
		return nil
	}
	s := t.src[:n]
	t.src = t.src[n:]
	return s
}

// raw sends req to any broker of the cluster and returns its response.
func (in *Input) raw(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	m, err := in.transport.RoundTrip(ctx, in.addr, &rawRequest{req: req})
	if err != nil {
		return nil, err
	}
	r, ok := m.(*rawResponse)
	if !ok {
		return nil, fmt.Errorf("unexpected response %T", m)
	}
	return r.res, nil
}

// topicIDs returns the short topic id (shipper.TopicIDOf) of each topic,
// or "" for every topic when the brokers predate topic ids. Whether they
// do is asked every time, not assumed from an error: the same records must
// always get the same ids.
func (in *Input) topicIDs(ctx context.Context, topics []string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.DialTimeout)
	defer cancel()
	out := make(map[string]string, len(topics))
	av := kmsg.NewPtrApiVersionsRequest()
	av.Version = 0
	res, err := in.raw(ctx, av)
	if err != nil {
		return nil, fmt.Errorf("api versions: %w", err)
	}
	versions := res.(*kmsg.ApiVersionsResponse)
	if err := kerr.ErrorForCode(versions.ErrorCode); err != nil {
		return nil, fmt.Errorf("api versions: %w", err)
	}
	supported := false
	for _, k := range versions.ApiKeys {
		if k.ApiKey == int16(protocol.Metadata) && k.MaxVersion >= minMetadataWithIDs {
			supported = true
		}
	}
	if !supported {
		for _, t := range topics {
			out[t] = ""
		}
		return out, nil
	}
	req := kmsg.NewPtrMetadataRequest()
	req.Version = minMetadataWithIDs
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	res, err = in.raw(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("metadata v%d: %w", minMetadataWithIDs, err)
	}
	for _, t := range res.(*kmsg.MetadataResponse).Topics {
		if t.Topic == nil {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return nil, fmt.Errorf("topic %s: %w", *t.Topic, err)
		}
		out[*t.Topic] = shipper.TopicIDOf(t.TopicID)
	}
	for _, t := range topics {
		if _, ok := out[t]; !ok {
			return nil, fmt.Errorf("topic %s: no id in the metadata answer", t)
		}
	}
	return out, nil
}
