package chat

import (
	"container/list"
	"sync"
	"time"
)

// Seen is a bounded set of keys, each forgotten TTL after it was last
// added and, when the set is full, the one added longest ago first. It is
// safe for concurrent use. Create it with NewSeen.
type Seen struct {
	max int
	ttl time.Duration

	mu    sync.Mutex
	order *list.List               // least recently added first; guarded by mu
	index map[string]*list.Element // guarded by mu
}

type seenEntry struct {
	key string
	at  time.Time
}

// NewSeen returns a set of at most n keys (at least 1), each kept for
// ttl.
func NewSeen(n int, ttl time.Duration) *Seen {
	return &Seen{max: max(n, 1), ttl: ttl, order: list.New(), index: make(map[string]*list.Element)}
}

// Has reports whether key was added within TTL before now.
func (s *Seen) Has(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[key]
	if !ok {
		return false
	}
	if s.stale(e, now) {
		s.remove(e)
		return false
	}
	return true
}

// Add records key at now and reports whether it was new (absent, or added
// longer than TTL ago). When the set is full, the key added longest ago is
// forgotten.
func (s *Seen) Add(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := s.touch(key, now)
	for s.order.Len() > s.max {
		s.remove(s.order.Front())
	}
	return !fresh
}

// AddIfRoom is Add for a limit: it records key and reports true only when
// key is new and there is room for it, forgetting expired keys to make
// room but never a key still within its TTL. A full set of fresh keys
// refuses every new one until the oldest expires.
func (s *Seen) AddIfRoom(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.index[key]; ok && !s.stale(e, now) {
		return false
	}
	s.prune(now)
	if _, ok := s.index[key]; !ok && s.order.Len() >= s.max {
		return false
	}
	s.touch(key, now)
	return true
}

// Forget removes key.
func (s *Seen) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.index[key]; ok {
		s.remove(e)
	}
}

// Len is the number of keys held, expired ones not yet forgotten
// included.
func (s *Seen) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len()
}

// touch records key at now and reports whether it was there and fresh.
// Its caller holds s.mu.
func (s *Seen) touch(key string, now time.Time) bool {
	if e, ok := s.index[key]; ok {
		fresh := !s.stale(e, now)
		e.Value.(*seenEntry).at = now
		s.order.MoveToBack(e)
		return fresh
	}
	s.index[key] = s.order.PushBack(&seenEntry{key: key, at: now})
	return false
}

// prune forgets the expired keys at the front. Its caller holds s.mu.
func (s *Seen) prune(now time.Time) {
	for e := s.order.Front(); e != nil && s.stale(e, now); e = s.order.Front() {
		s.remove(e)
	}
}

func (s *Seen) stale(e *list.Element, now time.Time) bool {
	return now.Sub(e.Value.(*seenEntry).at) > s.ttl
}

// remove forgets e. Its caller holds s.mu.
func (s *Seen) remove(e *list.Element) {
	s.order.Remove(e)
	delete(s.index, e.Value.(*seenEntry).key)
}
