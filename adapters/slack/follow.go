package slack

import (
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
)

// followKey names the thread followed for user: the session key of the
// conversation its turns belong to.
func (a *Adapter) followKey(cb callback, channel, thread, userTeam, user string) agent.SessionKey {
	return agent.SessionKey{
		Principal:    a.principalOf(cb.TeamID, cb.EnterpriseID, userTeam, user),
		Conversation: agent.Conversation{Channel: channel, Thread: thread},
	}
}
