package slack

import (
	"strings"

	"github.com/talonhq/talon/agent"
)

// principal is the Principal of a Slack user. A user id is scoped to its
// workspace (or Enterprise Grid organisation, workspaceOf), except Enterprise
// Grid user ids, which start with W and are the same in every workspace:
// such a principal names no workspace ("slack::W…"), so the person's
// sessions and vault entries are the same wherever they write.
func principal(team, enterprise, user string) agent.Principal {
	if strings.HasPrefix(user, "W") {
		return agent.Principal{Platform: Platform, User: user}
	}
	return agent.Principal{Platform: Platform, Workspace: workspaceOf(team, enterprise), User: user}
}
