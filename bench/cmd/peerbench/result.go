package main

import (
	"fmt"
	"runtime"
	"time"
)

// runResult is one run of one contender.
type runResult struct {
	Contender string
	Round     int
	Load      string // the machine's load averages when the run started
	Settings  string
	Err       string // why the run failed; "" when it delivered everything

	Docs    int64 // documents created, counted by the proxy from the bulk answers
	Counted int64 // the index's _count after a _refresh
	// From the contender's exec to the first document created, the 10 %th,
	// the 90 %th and the last (as the proxy saw the answers).
	First, P10, P90, Last time.Duration
	// The contender's CPU from its exec to the last document
	// (/proc/<pid>/stat), and over its whole life (rusage once it exited).
	User, Sys time.Duration
	WholeCPU  time.Duration
	// Memory: the peak resident set (rusage's ru_maxrss) and the peaks of
	// VmRSS and RssAnon sampled every 100 ms from /proc/<pid>/status.
	MaxRSS, PeakRSS, PeakAnon int64
	Samples                   int

	Proxy      proxyCounts
	Exit       string // how the process ended after SIGTERM
	LogLines   int
	FirstError string // the first error line in its log
	Detail     string

	// What else ran meanwhile, from the contender's exec until it stopped:
	// Elasticsearch's and Kafka's processes, peerbench (the proxy), and the
	// whole machine (all cores).
	ESCPU, KafkaCPU, ProxyCPU time.Duration
	MachineBusy, MachineTotal time.Duration
}

func (r runResult) ok() bool { return r.Err == "" }

func (r runResult) cpu() time.Duration { return r.User + r.Sys }

// docsPerSec is the documents over the time from the exec to the last.
func (r runResult) docsPerSec() float64 { return float64(r.Docs) / r.Last.Seconds() }

// steadyPerSec is the rate between 10 % and 90 % of the documents: without
// the start and the tail. 0 when unknown.
func (r runResult) steadyPerSec() float64 {
	if r.P90 <= r.P10 || r.P10 == 0 {
		return 0
	}
	return 0.8 * float64(r.Docs) / (r.P90 - r.P10).Seconds()
}

func (r runResult) perMillion(d time.Duration) float64 { return d.Seconds() / float64(r.Docs) * 1e6 }

func (r runResult) cpuPerMillion() float64 { return r.perMillion(r.cpu()) }

// docsPerRequest is the mean number of documents per bulk request.
func (r runResult) docsPerRequest() float64 {
	if r.Proxy.Bulks == 0 {
		return 0
	}
	return float64(r.Proxy.Created+r.Proxy.Updated+r.Proxy.Conflicts+r.Proxy.Rejected+r.Proxy.Others) / float64(r.Proxy.Bulks)
}

// others is the average number of cores that processes other than the
// contender, the stack's servers and peerbench kept busy during the run:
// the shared machine's noise.
func (r runResult) others() float64 {
	if r.MachineTotal == 0 {
		return 0
	}
	own := max(r.cpu(), r.WholeCPU)
	o := r.MachineBusy - own - r.ESCPU - r.KafkaCPU - r.ProxyCPU
	wall := r.MachineTotal / time.Duration(runtime.NumCPU())
	return max(0, o.Seconds()/wall.Seconds())
}

func (r runResult) summary() string {
	s := fmt.Sprintf("%.0f docs/s, %.2f s to the last, %.2f CPU s per M, peak RSS %s, RssAnon %s", r.docsPerSec(), r.Last.Seconds(),
		r.cpuPerMillion(), mib(r.MaxRSS), mib(r.PeakAnon))
	if v := r.steadyPerSec(); v > 0 {
		s += fmt.Sprintf(", %.0f docs/s from 10%% to 90%%", v)
	}
	if r.ESCPU > 0 {
		s += fmt.Sprintf(", Elasticsearch %.1f CPU s per M", r.perMillion(r.ESCPU))
	}
	s += fmt.Sprintf(", %d bulk requests of %.0f docs", r.Proxy.Bulks, r.docsPerRequest())
	if o := r.others(); o > 0.05 {
		s += fmt.Sprintf(", others kept %.2f cores busy", o)
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
