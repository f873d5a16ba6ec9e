package slack

import (
	"container/list"
	"sync"
	"time"
)

// seenSet is a bounded set of keys that forgets a key after ttl or when it
// is the oldest and the set is full. It is safe for concurrent use.
type seenSet struct {
	max int
	ttl time.Duration

	mu    sync.Mutex
	order *list.List               // oldest first; guarded by mu
	index map[string]*list.Element // guarded by mu
}

type seenEntry struct {
	key string
	at  time.Time
}

func newSeenSet(max int, ttl time.Duration) *seenSet {
	return &seenSet{max: max, ttl: ttl, order: list.New(), index: make(map[string]*list.Element)}
}

// has reports whether key was added within ttl before now.
func (s *seenSet) has(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[key]
	if !ok {
		return false
	}
	if now.Sub(e.Value.(*seenEntry).at) > s.ttl {
		s.order.Remove(e)
		delete(s.index, key)
		return false
	}
	return true
}

// add records key at now and reports whether it was new.
func (s *seenSet) add(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.index[key]; ok {
		fresh := now.Sub(e.Value.(*seenEntry).at) <= s.ttl
		e.Value.(*seenEntry).at = now
		s.order.MoveToBack(e)
		return !fresh
	}
	s.index[key] = s.order.PushBack(&seenEntry{key: key, at: now})
	for s.order.Len() > s.max {
		old := s.order.Front()
		s.order.Remove(old)
		delete(s.index, old.Value.(*seenEntry).key)
	}
	return true
}
