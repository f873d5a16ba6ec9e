package follow

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
)

// Store remembers the threads followed across restarts; *store.DB
// implements it. A thread is named by the session key of its conversation.
type Store interface {
	// FollowThread records that key's user was active in key's thread at
	// at.
	FollowThread(ctx context.Context, key agent.SessionKey, at time.Time) error
	// FollowingThread reports whether key's thread is followed for its user
	// with activity at or after since.
	FollowingThread(ctx context.Context, key agent.SessionKey, since time.Time) (bool, error)
	// ForgetThreads forgets platform's threads quiet since before, then all
	// but the keep most recently active, and returns how many it forgot.
	ForgetThreads(ctx context.Context, platform string, before time.Time, keep int) (int, error)
}

// PruneEvery is how often the Store is pruned (on a write).
const PruneEvery = time.Hour

// Set is the threads followed by one adapter. Set the fields before the
// first use; it is safe for concurrent use.
type Set struct {
	// Store, when not nil, keeps the threads across restarts.
	Store Store
	// Platform names the adapter's threads in the Store.
	Platform string
	// Quiet is how long a quiet thread stays followed.
	Quiet time.Duration
	// Max bounds the threads kept in the Store, and the threads kept in
	// memory (followed, and known not to be) before some are dropped.
	Max int
	// Now is the clock.
	Now func() time.Time
	// Log receives failures of the Store: the adapter's logger, which
	// names the platform (lines say "Platform: …" and the channel under
	// channel_id).
	Log zerolog.Logger

	mu          sync.Mutex
	followed    map[agent.SessionKey]time.Time // last activity; guarded by mu
	notFollowed map[agent.SessionKey]struct{}  // absent from the Store; guarded by mu
	pruned      time.Time                      // last prune of the Store; guarded by mu
}

// Following reports whether key's thread is followed. The memory answers
// first; a key it does not hold is read from the Store (when set), and one
// the Store does not hold either is remembered as such. A failed read
// counts as not followed: the message then needs a mention.
func (s *Set) Following(ctx context.Context, key agent.SessionKey) bool {
	now := s.Now()
	s.mu.Lock()
	at, ok := s.followed[key]
	if ok && now.Sub(at) > s.Quiet {
		delete(s.followed, key)
		ok = false
	}
	_, known := s.notFollowed[key]
	s.mu.Unlock()
	if ok {
		return true
	}
	if s.Store == nil || known {
		return false
	}
	ok, err := s.Store.FollowingThread(ctx, key, now.Add(-s.Quiet))
	if err != nil {
		s.Log.Warn().Err(err).Str("channel_id", key.Conversation.Channel).Msg(s.Platform + ": could not read the threads followed; a follow-up there needs a mention")
		return false
	}
	if !ok {
		s.mu.Lock()
		if s.notFollowed == nil || len(s.notFollowed) >= s.Max {
			s.notFollowed = make(map[agent.SessionKey]struct{})
		}
		s.notFollowed[key] = struct{}{}
		s.mu.Unlock()
	}
	// A thread found only in the Store is not cached: the follow-up it lets
	// through calls Follow, which caches it with its time.
	return ok
}

// Follow records activity of key's user in key's thread: it is followed (or
// stays followed) from now on. A failure to write it to the Store is
// logged: this process still follows the thread.
func (s *Set) Follow(ctx context.Context, key agent.SessionKey) {
	now := s.Now()
	s.mu.Lock()
	if s.followed == nil {
		s.followed = make(map[agent.SessionKey]time.Time)
	}
	s.followed[key] = now
	delete(s.notFollowed, key)
	if len(s.followed) > s.Max {
		// Forget quiet threads rather than grow without bound; if that is
		// not enough, forget others down to nine tenths of Max (the Store,
		// when set, still holds them).
		cutoff := now.Add(-s.Quiet)
		for k, t := range s.followed {
			if t.Before(cutoff) {
				delete(s.followed, k)
			}
		}
		for k := range s.followed {
			if len(s.followed) <= s.Max*9/10 {
				break
			}
			if k != key {
				delete(s.followed, k)
			}
		}
	}
	prune := s.Store != nil && now.Sub(s.pruned) >= PruneEvery
	if prune {
		s.pruned = now
	}
	s.mu.Unlock()
	if s.Store == nil {
		return
	}
	if err := s.Store.FollowThread(ctx, key, now); err != nil {
		s.Log.Warn().Err(err).Str("channel_id", key.Conversation.Channel).Msg(s.Platform + ": could not remember a thread followed; after a restart a follow-up there needs a mention")
	}
	if !prune {
		return
	}
	n, err := s.Store.ForgetThreads(ctx, s.Platform, now.Add(-s.Quiet), s.Max)
	if err != nil {
		s.Log.Warn().Err(err).Msg(s.Platform + ": could not forget quiet threads")
		return
	}
	if n > 0 {
		s.Log.Debug().Int("threads", n).Msg(s.Platform + ": forgot quiet threads")
	}
}
