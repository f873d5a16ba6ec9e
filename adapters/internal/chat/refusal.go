package chat

import (
	"sync"
	"time"
)

// RefusalLimits bound a Refusals. Zero fields take the defaults named.
type RefusalLimits struct {
	// People is how many (person, reason) pairs are remembered as told
	// (default 10,000); past it the pair told longest ago is forgotten, and
	// that person may be told once more.
	People int
	// Remember is how long a person is remembered as told (default a
	// year).
	Remember time.Duration
	// Every is the least time between two notices in one channel; zero
	// means no limit per channel.
	Every time.Duration
	// Channels is how many channels are remembered for Every (default
	// 1,000). When that many had a notice within Every, a notice in
	// another channel is dropped rather than one of them forgotten, so the
	// notices stay bounded however many channels a flood spans.
	Channels int
}

// Refusals remembers whom a channel adapter told why it refused them, so
// that a person is told once per reason rather than at every message, and
// limits the notices per channel. Its memory is bounded (RefusalLimits)
// whatever the number of people or channels. It is safe for concurrent
// use. Create it with NewRefusals.
type Refusals struct {
	mu       sync.Mutex // makes Tell one step
	told     *Seen      // person + reason
	channels *Seen      // channels with a notice within every; nil without a limit
}

// NewRefusals returns a Refusals bounded by l.
func NewRefusals(l RefusalLimits) *Refusals {
	if l.People <= 0 {
		l.People = 10000
	}
	if l.Remember <= 0 {
		l.Remember = 365 * 24 * time.Hour
	}
	if l.Channels <= 0 {
		l.Channels = 1000
	}
	r := &Refusals{told: NewSeen(l.People, l.Remember)}
	if l.Every > 0 {
		r.channels = NewSeen(l.Channels, l.Every)
	}
	return r
}

// Tell reports whether person should be told reason now, in channel, and
// if so remembers that they were: not when they were told it already, nor
// when the limit of notices in channel (or of channels) is reached. A
// notice that then cannot be sent is taken back with Untold.
func (r *Refusals) Tell(person, reason, channel string, now time.Time) bool {
	key := person + "\x00" + reason
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.told.Has(key, now) {
		return false
	}
	if r.channels != nil && !r.channels.AddIfRoom(channel, now) {
		return false
	}
	r.told.Add(key, now)
	return true
}

// Untold forgets that person was told reason (the notice was not sent), so
// that their next refusal tells them. The channel's notice still counts.
func (r *Refusals) Untold(person, reason string) {
	r.told.Forget(person + "\x00" + reason)
}

// Len is how many (person, reason) pairs and channels are remembered.
func (r *Refusals) Len() (people, channels int) {
	if r.channels != nil {
		channels = r.channels.Len()
	}
	return r.told.Len(), channels
}
