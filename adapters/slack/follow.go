package slack

import (
	"context"
	"time"

	"github.com/talonhq/talon/agent"
)

// A thread where a user mentioned the bot is followed for that user: their
// follow-ups there start turns without a new mention, until the thread has
// been quiet (no message of theirs reaching the bot) for followQuiet. The
// set lives in memory; with Adapter.Follows it is also written there, which
// is the truth after a restart, and the memory is a cache in front of it.

const (
	// followQuiet is how long a quiet thread stays followed.
	followQuiet = 7 * 24 * time.Hour
	// maxFollowed bounds the threads followed (and the threads known not to
	// be) kept in memory, and the threads kept in Follows.
	maxFollowed = 50000
	// followPruneEvery is how often Follows is pruned (on a write).
	followPruneEvery = time.Hour
)

// followKey names the thread followed for user: the session key of the
// conversation its turns belong to.
func followKey(cb callback, channel, thread, user string) agent.SessionKey {
	return agent.SessionKey{
		Principal:    agent.Principal{Platform: Platform, Workspace: workspaceOf(cb.TeamID, cb.EnterpriseID), User: user},
		Conversation: agent.Conversation{Channel: channel, Thread: thread},
	}
}

// following reports whether key's thread is followed. The memory answers
// first; a key it does not hold is read from Follows (when set), and one
// Follows does not hold either is remembered as such. A failed read counts
// as not followed: the message then needs a mention.
func (a *Adapter) following(ctx context.Context, key agent.SessionKey) bool {
	now := a.now()
	k := key.String()
	if a.threads.has(k, now) {
		return true
	}
	if a.Follows == nil || a.notFollowed.has(k, now) {
		return false
	}
	ok, err := a.Follows.FollowingThread(ctx, key, now.Add(-followQuiet))
	if err != nil {
		a.Log.Warn().Err(err).Str("channel", key.Conversation.Channel).Msg("slack: could not read the threads followed; a follow-up there needs a mention")
		return false
	}
	if !ok {
		a.notFollowed.add(k, now)
	}
	// A thread found only in Follows is not cached: the follow-up it lets
	// through calls follow, which caches it with its time.
	return ok
}

// follow records activity of key's user in key's thread: it is followed (or
// stays followed) from now on. A failure to write it to Follows is logged:
// this process still follows the thread.
func (a *Adapter) follow(ctx context.Context, key agent.SessionKey) {
	now := a.now()
	k := key.String()
	a.threads.add(k, now)
	if a.Follows == nil {
		return
	}
	a.notFollowed.forget(k)
	if err := a.Follows.FollowThread(ctx, key, now); err != nil {
		a.Log.Warn().Err(err).Str("channel", key.Conversation.Channel).Msg("slack: could not remember a thread followed; after a restart a follow-up there needs a mention")
	}
	a.mu.Lock()
	due := now.Sub(a.pruned) >= followPruneEvery
	if due {
		a.pruned = now
	}
	a.mu.Unlock()
	if !due {
		return
	}
	n, err := a.Follows.ForgetThreads(ctx, Platform, now.Add(-followQuiet), maxFollowed)
	if err != nil {
		a.Log.Warn().Err(err).Msg("slack: could not forget quiet threads")
		return
	}
	if n > 0 {
		a.Log.Debug().Int("threads", n).Msg("slack: forgot quiet threads")
	}
}
