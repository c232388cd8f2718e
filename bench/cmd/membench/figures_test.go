package main

import (
	"testing"
	"time"
)

// Downsampling bounds the points and keeps the peak.
func TestDownsampleKeepsThePeak(t *testing.T) {
	var samples []sample
	for i := range 1001 {
		samples = append(samples, sample{at: time.Duration(i) * 100 * time.Millisecond, rssAnon: int64(i%7) << 20})
	}
	samples[555].rssAnon = 99 << 20
	pts := downsample(samples, func(s sample) int64 { return s.rssAnon }, 400)
	if len(pts) > 400 || len(pts) < 300 {
		t.Fatalf("%d points, want at most 400 and not far fewer", len(pts))
	}
	var peak float64
	for i, p := range pts {
		peak = max(peak, p.Y)
		if i > 0 && p.X <= pts[i-1].X {
			t.Fatalf("x not increasing at %d: %v after %v", i, p.X, pts[i-1].X)
		}
	}
	if peak != 99 {
		t.Fatalf("peak %v MiB, want 99", peak)
	}
	if got := downsample(nil, func(s sample) int64 { return s.rssAnon }, 400); len(got) != 0 {
		t.Fatalf("no samples gave %d points", len(got))
	}
}
