package slack

import (
	"sync"
	"time"
)

// postBurst is how many messages a channel may receive back to back before
// pacing starts. Slack allows about one chat.postMessage per second per
// channel, with short bursts over that.
const postBurst = 3

// pacer spaces chat.postMessage calls per channel: at most postBurst at
// once, then one per interval (a generic cell rate algorithm). Pacing before
// the call keeps a long reply from running into 429s part-way; Retry-After
// still covers what pacing cannot see (other apps' limits, Slack's own
// workspace-wide limits). It is safe for concurrent use.
type pacer struct {
	interval time.Duration

	mu  sync.Mutex
	tat map[string]time.Time // channel → theoretical arrival time of its next message; guarded by mu
}

func newPacer(interval time.Duration) *pacer {
	return &pacer{interval: interval, tat: make(map[string]time.Time)}
}

// reserve books the next slot for a message to channel and returns how long
// to wait for it. With onlyNow it books nothing unless the slot is free now,
// and reports false with the wait that would be needed.
func (p *pacer) reserve(channel string, now time.Time, onlyNow bool) (time.Duration, bool) {
	if p.interval <= 0 {
		return 0, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	tat := p.tat[channel]
	if tat.Before(now) {
		tat = now
	}
	wait := max(tat.Sub(now)-time.Duration(postBurst-1)*p.interval, 0)
	if onlyNow && wait > 0 {
		return wait, false
	}
	if len(p.tat) >= 10000 {
		// Forget channels whose slots are all free again.
		for ch, t := range p.tat {
			if !t.After(now) {
				delete(p.tat, ch)
			}
		}
	}
	p.tat[channel] = tat.Add(p.interval)
	return wait, true
}
