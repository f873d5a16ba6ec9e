package discord

import (
	"context"
	"time"

	"github.com/talonhq/talon/agent"
)

// A thread where a user mentioned the bot (or the thread the bot started to
// answer them) is followed for that user: their follow-ups there start
// turns without a new mention, until the thread has been quiet (no message
// of theirs reaching the bot) for followQuiet. The set lives in memory;
// with Adapter.Follows it is also written there, which is the truth after a
// restart, and the memory is a cache in front of it.

const (
	// followQuiet is how long a quiet thread stays followed: a day, as
	// long as a quiet thread the bot started stays unarchived
	// (threadArchiveMinutes).
	followQuiet = 24 * time.Hour
	// maxFollowed bounds the threads followed kept in Follows, and the
	// threads kept in memory before quiet ones (and those known not to be
	// followed) are dropped.
	maxFollowed = 10000
	// followPruneEvery is how often Follows is pruned (on a write).
	followPruneEvery = time.Hour
)

// followKey names the thread followed for user: the session key of the
// conversation its turns belong to (a thread is a channel).
func followKey(guild, thread, user string) agent.SessionKey {
	return agent.SessionKey{
		Principal:    agent.Principal{Platform: Platform, Workspace: guild, User: user},
		Conversation: agent.Conversation{Channel: thread},
	}
}

// following reports whether key's thread is followed. The memory answers
// first; a key it does not hold is read from Follows (when set), and one
// Follows does not hold either is remembered as such. A failed read counts
// as not followed: the message then needs a mention.
func (a *Adapter) following(ctx context.Context, key agent.SessionKey) bool {
	now := a.Now()
	a.mu.Lock()
	at, ok := a.followed[key]
	if ok && now.Sub(at) > followQuiet {
		delete(a.followed, key)
		ok = false
	}
	_, known := a.notFollowed[key]
	a.mu.Unlock()
	if ok {
		return true
	}
	if a.Follows == nil || known {
		return false
	}
	ok, err := a.Follows.FollowingThread(ctx, key, now.Add(-followQuiet))
	if err != nil {
		a.Log.Warn().Err(err).Str("channel", key.Conversation.Channel).Msg("discord: could not read the threads followed; a follow-up there needs a mention")
		return false
	}
	if !ok {
		a.mu.Lock()
		if len(a.notFollowed) >= maxFollowed {
			clear(a.notFollowed)
		}
		a.notFollowed[key] = struct{}{}
		a.mu.Unlock()
	}
	// A thread found only in Follows is not cached: the follow-up it lets
	// through calls follow, which caches it with its time.
	return ok
}

// follow records activity of key's user in key's thread: it is followed (or
// stays followed) from now on. A failure to write it to Follows is logged:
// this process still follows the thread.
func (a *Adapter) follow(ctx context.Context, key agent.SessionKey) {
	now := a.Now()
	a.mu.Lock()
	a.followed[key] = now
	delete(a.notFollowed, key)
	if len(a.followed) > maxFollowed {
		// Forget quiet threads rather than grow without bound.
		cutoff := now.Add(-followQuiet)
		for k, t := range a.followed {
			if t.Before(cutoff) {
				delete(a.followed, k)
			}
		}
	}
	prune := a.Follows != nil && now.Sub(a.followPruned) >= followPruneEvery
	if prune {
		a.followPruned = now
	}
	a.mu.Unlock()
	if a.Follows == nil {
		return
	}
	if err := a.Follows.FollowThread(ctx, key, now); err != nil {
		a.Log.Warn().Err(err).Str("channel", key.Conversation.Channel).Msg("discord: could not remember a thread followed; after a restart a follow-up there needs a mention")
	}
	if !prune {
		return
	}
	n, err := a.Follows.ForgetThreads(ctx, Platform, now.Add(-followQuiet), maxFollowed)
	if err != nil {
		a.Log.Warn().Err(err).Msg("discord: could not forget quiet threads")
		return
	}
	if n > 0 {
		a.Log.Debug().Int("threads", n).Msg("discord: forgot quiet threads")
	}
}
