package discord

import (
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
)

// followKey names the thread followed for user: the session key of the
// conversation its turns belong to (a thread is a channel).
func followKey(thread, user string) agent.SessionKey {
	return agent.SessionKey{
		Principal:    principal(user),
		Conversation: agent.Conversation{Channel: thread},
	}
}
