package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// value is one measured duration; capped says the measurement stopped at
// a bound before the event happened, so the true value is larger.
type value struct {
	d      time.Duration
	capped bool
}

func (v value) key() float64 {
	if v.capped {
		return math.Inf(1)
	}
	return v.d.Seconds()
}

func (v value) String() string {
	if v.capped {
		return "> " + secs(v.d)
	}
	return secs(v.d)
}

// spread is the median [min–max] of values; a median or maximum that is a
// capped value prints as "> cap".
func spread(vs []value) string {
	if len(vs) == 0 {
		return "–"
	}
	s := slices.Clone(vs)
	slices.SortFunc(s, func(a, b value) int {
		switch {
		case a.key() < b.key():
			return -1
		case a.key() > b.key():
			return 1
		}
		return 0
	})
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		lo, hi := s[len(s)/2-1], s[len(s)/2]
		med = value{d: (lo.d + hi.d) / 2, capped: lo.capped || hi.capped}
		if hi.capped && !lo.capped {
			med = value{d: lo.d, capped: true} // somewhere above the lower middle
		}
	}
	return fmt.Sprintf("%s [%s–%s]", med, s[0], s[len(s)-1])
}

// medianMax returns the median and the maximum of values, for verdicts.
func medianMax(vs []value) (med, mx value) {
	s := slices.Clone(vs)
	slices.SortFunc(s, func(a, b value) int {
		switch {
		case a.key() < b.key():
			return -1
		case a.key() > b.key():
			return 1
		}
		return 0
	})
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		lo, hi := s[len(s)/2-1], s[len(s)/2]
		med = value{d: (lo.d + hi.d) / 2, capped: hi.capped}
	}
	return med, s[len(s)-1]
}

func secs(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

func values(ds []time.Duration) []value {
	out := make([]value, len(ds))
	for i, d := range ds {
		out[i] = value{d: d}
	}
	return out
}

func yesNo(ok bool) string {
	if ok {
		return "MET"
	}
	return "NOT MET"
}
