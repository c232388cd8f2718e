package main

import (
	"fmt"
	"runtime"
	"time"
)

// runResult is one run of one contender.
type runResult struct {
	Contender string `json:"contender"`
	Round     int    `json:"-"` // 0: the loader's search or warm-up
	Load      string `json:"-"` // the machine's load averages when the run started
	Settings  string `json:"settings,omitempty"`

	// Docs is the documents delivered (records read, for plain); Bytes
	// their sources (keys + values, for plain).
	Docs  int64 `json:"docs"`
	Bytes int64 `json:"bytes"`
	// From the contender's start (the agent's exec, the loader's first
	// request, the plain reader's NewReader) to its first and its last
	// document, and to 10 % and 90 % of the documents where known (0 if
	// not).
	First time.Duration `json:"first"`
	Last  time.Duration `json:"last"`
	P10   time.Duration `json:"p10"`
	P90   time.Duration `json:"p90"`
	// CPU of the contender's process from its start to its last document.
	User time.Duration `json:"user"`
	Sys  time.Duration `json:"sys"`
	// WholeCPU is the agent's CPU over its whole life, the shutdown
	// included (rusage after it exited); 0 for the others.
	WholeCPU time.Duration `json:"whole_cpu"`
	MaxRSS   int64         `json:"max_rss"`

	// The loader.
	Requests int64 `json:"requests"`
	Retried  int64 `json:"retried"` // documents sent again after a 429

	// The agent.
	Agent agentFigures `json:"-"`
	// The sink (agent→sink).
	Sink sinkFigures `json:"-"`

	// What else ran meanwhile, from the contender's start until it was
	// stopped: Elasticsearch's and Kafka's processes, this program (the
	// sink lives here), and the whole machine (all cores).
	ESCPU, KafkaCPU, ParentCPU time.Duration `json:"-"`
	MachineBusy, MachineTotal  time.Duration `json:"-"`
	// Counted is the index's _count after a refresh (agent→es, loader).
	Counted int64 `json:"-"`
}

type agentFigures struct {
	Indexed, Duplicates, Retries, DeadLettered int64
	Hedges, Stalls                             int64
	Window                                     windowFigures
	MeanInFlight, MeanLimit                    float64 // over the status samples while delivering
	BulkLimit                                  int64
	Exit                                       string
	Problems                                   map[string]int // warnings and errors logged: "LEVEL msg" → count
}

type windowFigures struct {
	Limit   float64          `json:"limit"`
	Max     int              `json:"max"`
	Cuts    map[string]int64 `json:"cuts"`
	Growths int64            `json:"growths"`
}

type sinkFigures struct {
	Requests, Gzipped, WireBytes, BodyBytes, SourceBytes, Repeated int64
}

func (r runResult) cpu() time.Duration { return r.User + r.Sys }

// docsPerSec is the documents over the time from the start to the last.
func (r runResult) docsPerSec() float64 { return float64(r.Docs) / r.Last.Seconds() }

// steadyPerSec is the rate between 10 % and 90 % of the documents: without
// the start and the tail. 0 when unknown.
func (r runResult) steadyPerSec() float64 {
	if r.P90 <= r.P10 || r.P10 == 0 {
		return 0
	}
	return 0.8 * float64(r.Docs) / (r.P90 - r.P10).Seconds()
}

func (r runResult) cpuPerMillion() float64 { return r.cpu().Seconds() / float64(r.Docs) * 1e6 }

func (r runResult) esCPUPerMillion() float64 { return r.ESCPU.Seconds() / float64(r.Docs) * 1e6 }

// others is the average number of cores that processes other than the
// contender, the stack's servers and this program kept busy during the
// run: the shared machine's noise.
func (r runResult) others() float64 {
	if r.MachineTotal == 0 {
		return 0
	}
	own := r.cpu()
	if r.WholeCPU > own {
		own = r.WholeCPU
	}
	o := r.MachineBusy - own - r.ESCPU - r.KafkaCPU - r.ParentCPU
	wall := r.MachineTotal / time.Duration(runtime.NumCPU())
	return max(0, o.Seconds()/wall.Seconds())
}

func (r runResult) summary() string {
	s := fmt.Sprintf("%.0f docs/s, %.2f s to the last, %.2f CPU s per M", r.docsPerSec(), r.Last.Seconds(), r.cpuPerMillion())
	if v := r.steadyPerSec(); v > 0 {
		s += fmt.Sprintf(", %.0f docs/s from 10%% to 90%%", v)
	}
	if r.ESCPU > 0 {
		s += fmt.Sprintf(", Elasticsearch %.1f CPU s per M", r.esCPUPerMillion())
	}
	if o := r.others(); o > 0.05 {
		s += fmt.Sprintf(", others kept %.2f cores busy", o)
	}
	return s
}
