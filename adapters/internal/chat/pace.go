package chat

import (
	"sync"
	"time"
)

// maxPaceKeys is how many places a Pacer remembers before it forgets those
// whose slots are all free again (which is the same as forgetting nothing).
const maxPaceKeys = 10000

// Pacer spaces what is sent to one place (a channel, a streamed message): at
// most Burst at once, then one per Interval, by a generic cell rate
// algorithm per key. Pacing before a call keeps a long reply from running
// into the platform's rate limit part-way; Defer covers what pacing cannot
// see (a 429's Retry-After: other apps, workspace-wide limits). Set the
// fields before the first use; it is safe for concurrent use. A zero
// Interval paces nothing.
type Pacer struct {
	// Interval is the steady spacing of messages to one key.
	Interval time.Duration
	// Burst is how many may go at once before the spacing starts; 0 means
	// 1.
	Burst int

	mu  sync.Mutex
	tat map[string]time.Time // key → theoretical arrival time of its next message; guarded by mu
}

// Reserve books the next slot for key and returns how long to wait for it.
// With onlyNow it books nothing unless the slot is free now, and reports
// false with the wait that would be needed.
func (p *Pacer) Reserve(key string, now time.Time, onlyNow bool) (time.Duration, bool) {
	if p.Interval <= 0 {
		return 0, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	tat := p.tat[key]
	if tat.Before(now) {
		tat = now
	}
	wait := max(tat.Sub(now)-time.Duration(p.burst()-1)*p.Interval, 0)
	if onlyNow && wait > 0 {
		return wait, false
	}
	if p.tat == nil {
		p.tat = make(map[string]time.Time)
	}
	if len(p.tat) >= maxPaceKeys {
		for k, t := range p.tat {
			if !t.After(now) {
				delete(p.tat, k)
			}
		}
	}
	p.tat[key] = tat.Add(p.Interval)
	return wait, true
}

// peek returns how long a message to key would wait at now, booking
// nothing.
func (p *Pacer) peek(key string, now time.Time) (time.Duration, bool) {
	if p.Interval <= 0 {
		return 0, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	wait := max(p.tat[key].Sub(now)-time.Duration(p.burst()-1)*p.Interval, 0)
	return wait, wait == 0
}

// Defer makes the next slot of key no earlier than until (a platform's
// Retry-After).
func (p *Pacer) Defer(key string, until time.Time) {
	if p.Interval <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tat == nil {
		p.tat = make(map[string]time.Time)
	}
	if t := until.Add(time.Duration(p.burst()-1) * p.Interval); t.After(p.tat[key]) {
		p.tat[key] = t
	}
}

// Forget drops what the pacer knows of key: its next message may go at
// once.
func (p *Pacer) Forget(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.tat, key)
}

// keys is how many keys the pacer remembers.
func (p *Pacer) keys() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tat)
}

func (p *Pacer) burst() int { return max(p.Burst, 1) }
