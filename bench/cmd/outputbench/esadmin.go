package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// indexSettings are every index's settings, for the agent and the loader
// alike: one shard, no replica (a single node), and the refresh interval
// written out, so that no index goes search-idle differently from another.
const indexSettings = `{"settings":{"index":{"number_of_shards":1,"number_of_replicas":0,"refresh_interval":"1s"}}}`

// esAdmin makes the calls around the runs, straight to the node.
type esAdmin struct {
	url    string
	client *http.Client
}

func (e esAdmin) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, b, err
}

// create creates the index with indexSettings and waits for its shard.
func (e esAdmin) create(ctx context.Context, index string) error {
	st, b, err := e.do(ctx, http.MethodPut, "/"+index+"?wait_for_active_shards=1", []byte(indexSettings))
	if err != nil {
		return fmt.Errorf("create index %s: %w", index, err)
	}
	if st != http.StatusOK {
		return fmt.Errorf("create index %s: %d %.300s", index, st, b)
	}
	return nil
}

// delete deletes the index; a failure is only reported.
func (e esAdmin) delete(index string) {
	st, b, err := e.do(context.Background(), http.MethodDelete, "/"+index+"?ignore_unavailable=true", nil)
	if err != nil || st != http.StatusOK {
		fmt.Fprintf(os.Stderr, "outputbench: delete index %s: %d %v %.200s\n", index, st, err, b)
	}
}

// refreshedCount refreshes the index and returns its _count.
func (e esAdmin) refreshedCount(ctx context.Context, index string) (int64, error) {
	if st, b, err := e.do(ctx, http.MethodPost, "/"+index+"/_refresh", nil); err != nil || st != http.StatusOK {
		return 0, fmt.Errorf("refresh %s: %d %v %.200s", index, st, err, b)
	}
	st, b, err := e.do(ctx, http.MethodGet, "/"+index+"/_count", nil)
	if err != nil || st != http.StatusOK {
		return 0, fmt.Errorf("count %s: %d %v %.200s", index, st, err, b)
	}
	var c struct {
		Count int64 `json:"count"`
	}
	err = json.Unmarshal(b, &c)
	return c.Count, err
}

// describe says what the node is: version, heap, processors, the write
// thread pool and indexing pressure's limit.
func (e esAdmin) describe(ctx context.Context) string {
	st, b, err := e.do(ctx, http.MethodGet, "/_nodes/_local?filter_path=nodes.*.version,nodes.*.jvm.mem.heap_max_in_bytes,"+
		"nodes.*.os.allocated_processors,nodes.*.thread_pool.write,nodes.*.settings.indexing_pressure", nil)
	if err != nil || st != http.StatusOK {
		return fmt.Sprintf("unknown (%d %v)", st, err)
	}
	var n struct {
		Nodes map[string]struct {
			Version string `json:"version"`
			JVM     struct {
				Mem struct {
					HeapMax int64 `json:"heap_max_in_bytes"`
				} `json:"mem"`
			} `json:"jvm"`
			OS struct {
				Processors int `json:"allocated_processors"`
			} `json:"os"`
			ThreadPool struct {
				Write struct {
					Size      int `json:"size"`
					QueueSize int `json:"queue_size"`
				} `json:"write"`
			} `json:"thread_pool"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(b, &n); err != nil {
		return "unknown: " + err.Error()
	}
	var parts []string
	for _, nd := range n.Nodes {
		parts = append(parts, fmt.Sprintf("Elasticsearch %s, heap %d MiB, %d allocated processors, write thread pool %d threads, queue %d",
			nd.Version, nd.JVM.Mem.HeapMax>>20, nd.OS.Processors, nd.ThreadPool.Write.Size, nd.ThreadPool.Write.QueueSize))
	}
	return strings.Join(parts, "; ")
}
