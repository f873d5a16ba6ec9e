package discord

import "github.com/talonhq/talon/agent"

// principal is the Principal of a Discord user. Discord user ids are
// global, so it names no guild ("discord::USER"): the same person is one
// principal in every server and in DMs, and their sessions' owner and their
// vault entries are the same wherever they write.
func principal(user string) agent.Principal {
	return agent.Principal{Platform: Platform, User: user}
}
