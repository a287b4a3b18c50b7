package loadtest

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Latencies summarises one latency: how many calls were timed and their
// percentiles (nearest rank).
type Latencies struct {
	N             int
	P50, P99, Max time.Duration
}

func summarise(samples []time.Duration) Latencies {
	if len(samples) == 0 {
		return Latencies{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return Latencies{N: len(s), P50: percentile(s, 50), P99: percentile(s, 99), Max: s[len(s)-1]}
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func (l Latencies) String() string {
	if l.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%s / %s", ms(l.P50), ms(l.P99))
}

// ms formats a latency in milliseconds with the precision it deserves.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

// sampler collects latencies from many goroutines; take empties it.
type sampler struct {
	mu      sync.Mutex
	samples []time.Duration
}

func (s *sampler) add(d time.Duration) {
	s.mu.Lock()
	s.samples = append(s.samples, d)
	s.mu.Unlock()
}

func (s *sampler) take() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.samples
	s.samples = nil
	return out
}
