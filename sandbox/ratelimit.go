package sandbox

import (
	"sync"
	"time"

	"github.com/talonhq/talon/agent"
)

// rateLimiter is a token bucket per (tool, user): per_minute calls a
// minute, refilled continuously, with a burst of per_minute.
type rateLimiter struct {
	now func() time.Time

	mu      sync.Mutex
	buckets map[rateKey]*bucket // guarded by mu
}

type rateKey struct {
	tool string
	user agent.Principal
}

type bucket struct {
	tokens float64
	burst  float64
	last   time.Time
}

// maxBuckets bounds the map; beyond it, full buckets (which carry no
// information) are dropped.
const maxBuckets = 10000

func newRateLimiter(now func() time.Time) *rateLimiter {
	return &rateLimiter{now: now, buckets: map[rateKey]*bucket{}}
}

// allow takes one token for (tool, p) if there is one.
func (l *rateLimiter) allow(tool string, p agent.Principal, perMinute int) bool {
	now := l.now()
	rate := float64(perMinute) / float64(time.Minute)
	l.mu.Lock()
	defer l.mu.Unlock()
	k := rateKey{tool, p}
	b, ok := l.buckets[k]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.prune(now)
		}
		b = &bucket{tokens: float64(perMinute), burst: float64(perMinute), last: now}
		l.buckets[k] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(perMinute), b.tokens+float64(d)*rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune drops buckets that have refilled. Callers hold mu.
func (l *rateLimiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.last))*b.burst/float64(time.Minute) >= b.burst {
			delete(l.buckets, k)
		}
	}
}
