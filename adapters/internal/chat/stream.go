package chat

import (
	"strconv"
	"sync"
	"time"

	"github.com/talonhq/talon/agent"
)

// Defaults of Streams.
const (
	// DefaultMaxStreams bounds the answers streamed at once.
	DefaultMaxStreams = 1000
	// DefaultStreamStale is how long a stream may go without a delta or a
	// preview write before it counts as abandoned. A turn streams for at
	// most its timeout (5 minutes by default) plus an approval's wait.
	DefaultStreamStale = 30 * time.Minute
)

// Streams keeps the answers an adapter shows while they are generated,
// each with the adapter's state S, by the inbound message they answer, and
// paces the preview's writes (at most one per Interval). It is bounded
// without ever dropping a live stream: when Max streams are kept, the
// finished ones and those stale for Stale are dropped, and if all are
// live a new answer is simply not previewed. Set the fields before the
// first use; it is safe for concurrent use (S guards its own fields).
type Streams[S any] struct {
	// Max bounds the streams kept; 0 means DefaultMaxStreams.
	Max int
	// Stale is how long a stream may go without activity before it may be
	// dropped; 0 means DefaultStreamStale.
	Stale time.Duration
	// Interval spaces the writes of one preview (its post, then its
	// edits); 0 paces nothing.
	Interval time.Duration

	once sync.Once
	pace Pacer

	mu sync.Mutex
	m  map[agent.InboundID]*streamEntry[S] // guarded by mu
}

type streamEntry[S any] struct {
	state    *S
	active   time.Time // the latest delta or write
	finished bool      // its reply is being delivered: no more previews
}

func (s *Streams[S]) init() {
	s.once.Do(func() {
		s.pace.Interval = s.Interval
		s.m = make(map[agent.InboundID]*streamEntry[S])
	})
}

// Open returns the live stream of inbound id, starting it (with a zero S)
// when there is none, and notes now as its latest activity. ok is false
// when the answer is not to be previewed: its stream was finished, or Max
// live streams are kept.
func (s *Streams[S]) Open(id agent.InboundID, now time.Time) (st *S, ok bool) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[id]; e != nil {
		if e.finished {
			return nil, false
		}
		e.active = now
		return e.state, true
	}
	if len(s.m) >= s.max() {
		s.evictLocked(now)
		if len(s.m) >= s.max() {
			return nil, false
		}
	}
	e := &streamEntry[S]{state: new(S), active: now}
	s.m[id] = e
	return e.state, true
}

// evictLocked drops the finished streams and the stale ones.
func (s *Streams[S]) evictLocked(now time.Time) {
	stale := s.Stale
	if stale <= 0 {
		stale = DefaultStreamStale
	}
	for id, e := range s.m {
		if e.finished || now.Sub(e.active) > stale {
			delete(s.m, id)
			s.pace.Forget(paceKey(id))
		}
	}
}

// Due reports whether a write of id's preview may be made at now, without
// booking it: see Reserve.
func (s *Streams[S]) Due(id agent.InboundID, now time.Time) bool {
	return s.Wait(id, now) == 0
}

// Wait returns how long after now the next write of id's preview may be
// made, booking nothing.
func (s *Streams[S]) Wait(id agent.InboundID, now time.Time) time.Duration {
	s.init()
	wait, _ := s.pace.peek(paceKey(id), now)
	return wait
}

// Reserve reports whether a write of id's preview may be made at now (at
// most one per Interval, and none before a Defer's time), and books it.
// It also counts as activity.
func (s *Streams[S]) Reserve(id agent.InboundID, now time.Time) bool {
	s.init()
	s.mu.Lock()
	if e := s.m[id]; e != nil {
		e.active = now
	}
	s.mu.Unlock()
	_, ok := s.pace.Reserve(paceKey(id), now, true)
	return ok
}

// Defer holds id's next preview write until until (a Retry-After).
func (s *Streams[S]) Defer(id agent.InboundID, until time.Time) {
	s.init()
	s.pace.Defer(paceKey(id), until)
}

// Finish ends id's stream: Open no longer returns it (a late delta shows
// nothing), and it may be dropped to make room. It returns the stream's
// state for the delivery of its reply, if there is a stream.
func (s *Streams[S]) Finish(id agent.InboundID) (*S, bool) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[id]
	if e == nil {
		return nil, false
	}
	e.finished = true
	return e.state, true
}

// Drop forgets id's stream: its reply was delivered.
func (s *Streams[S]) Drop(id agent.InboundID) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
	s.pace.Forget(paceKey(id))
}

// Len is how many streams are kept.
func (s *Streams[S]) Len() int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *Streams[S]) max() int {
	if s.Max <= 0 {
		return DefaultMaxStreams
	}
	return s.Max
}

func paceKey(id agent.InboundID) string { return strconv.FormatInt(int64(id), 10) }
