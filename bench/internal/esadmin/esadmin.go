// Package esadmin makes the benchmarks' calls around their runs, straight
// to the Elasticsearch node: create an index with the settings every
// contender gets, count it after a refresh, delete it, describe the node.
package esadmin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// IndexSettings are every index's settings, for every contender alike: one
// shard, no replica (a single node), and the refresh interval written out,
// so that no index goes search-idle differently from another.
const IndexSettings = `{"settings":{"index":{"number_of_shards":1,"number_of_replicas":0,"refresh_interval":"1s"}}}`

// Admin calls the node at URL.
type Admin struct {
	URL    string
	Client *http.Client
}

// Do sends one request and returns the status and up to 1 MiB of the answer.
func (e Admin) Do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, b, err
}

// Create creates the index with IndexSettings and waits for its shard.
func (e Admin) Create(ctx context.Context, index string) error {
	st, b, err := e.Do(ctx, http.MethodPut, "/"+index+"?wait_for_active_shards=1", []byte(IndexSettings))
	if err != nil {
		return fmt.Errorf("create index %s: %w", index, err)
	}
	if st != http.StatusOK {
		return fmt.Errorf("create index %s: %d %.300s", index, st, b)
	}
	return nil
}

// Delete deletes the index; a failure is only reported, on stderr.
func (e Admin) Delete(index string) {
	st, b, err := e.Do(context.Background(), http.MethodDelete, "/"+index+"?ignore_unavailable=true", nil)
	if err != nil || st != http.StatusOK {
		fmt.Fprintf(os.Stderr, "%s: delete index %s: %d %v %.200s\n", filepath.Base(os.Args[0]), index, st, err, b)
	}
}

// RefreshedCount refreshes the index and returns its _count.
func (e Admin) RefreshedCount(ctx context.Context, index string) (int64, error) {
	if st, b, err := e.Do(ctx, http.MethodPost, "/"+index+"/_refresh", nil); err != nil || st != http.StatusOK {
		return 0, fmt.Errorf("refresh %s: %d %v %.200s", index, st, err, b)
	}
	st, b, err := e.Do(ctx, http.MethodGet, "/"+index+"/_count", nil)
	if err != nil || st != http.StatusOK {
		return 0, fmt.Errorf("count %s: %d %v %.200s", index, st, err, b)
	}
	var c struct {
		Count int64 `json:"count"`
	}
	err = json.Unmarshal(b, &c)
	return c.Count, err
}

// Node is what Describe and the root answer of a node need to know.
type Node struct {
	Name, Version, ClusterName, ClusterUUID string
	HeapMax                                 int64
	Processors                              int
	WritePool, WriteQueue                   int
}

// Node reads the local node's version, heap, processors and write thread
// pool from /_nodes/_local, and the cluster's UUID from /_cluster/state.
func (e Admin) Node(ctx context.Context) (Node, error) {
	st, b, err := e.Do(ctx, http.MethodGet, "/_nodes/_local?filter_path=cluster_name,nodes.*.name,nodes.*.version,nodes.*.jvm.mem.heap_max_in_bytes,"+
		"nodes.*.os.allocated_processors,nodes.*.thread_pool.write", nil)
	if err != nil || st != http.StatusOK {
		return Node{}, fmt.Errorf("/_nodes/_local: %d %v %.200s", st, err, b)
	}
	var n struct {
		ClusterName string `json:"cluster_name"`
		Nodes       map[string]struct {
			Name    string `json:"name"`
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
		return Node{}, fmt.Errorf("/_nodes/_local: %w", err)
	}
	var node Node
	for _, nd := range n.Nodes {
		node = Node{Name: nd.Name, Version: nd.Version, ClusterName: n.ClusterName, HeapMax: nd.JVM.Mem.HeapMax,
			Processors: nd.OS.Processors, WritePool: nd.ThreadPool.Write.Size, WriteQueue: nd.ThreadPool.Write.QueueSize}
	}
	if node.Version == "" {
		return Node{}, fmt.Errorf("/_nodes/_local: no node in %.200s", b)
	}
	if st, b, err := e.Do(ctx, http.MethodGet, "/_cluster/state/metadata?filter_path=metadata.cluster_uuid", nil); err == nil && st == http.StatusOK {
		var c struct {
			Metadata struct {
				UUID string `json:"cluster_uuid"`
			} `json:"metadata"`
		}
		if json.Unmarshal(b, &c) == nil {
			node.ClusterUUID = c.Metadata.UUID
		}
	}
	return node, nil
}

// Describe says what the node is: version, heap, processors and the write
// thread pool.
func (e Admin) Describe(ctx context.Context) string {
	nd, err := e.Node(ctx)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return fmt.Sprintf("Elasticsearch %s, heap %d MiB, %d allocated processors, write thread pool %d threads, queue %d",
		nd.Version, nd.HeapMax>>20, nd.Processors, nd.WritePool, nd.WriteQueue)
}

// Sample returns the source of one document of the index, or why not.
func (e Admin) Sample(ctx context.Context, index string) string {
	st, b, err := e.Do(ctx, http.MethodGet, "/"+index+"/_search?size=1&filter_path=hits.hits._id,hits.hits._source", nil)
	if err != nil || st != http.StatusOK {
		return fmt.Sprintf("unknown (%d %v)", st, err)
	}
	return strings.TrimSpace(string(b))
}
