package slack

import (
	"strings"

	"github.com/talonhq/talon/agent"
)

// Principal is the Principal of Slack user user of workspace team (of
// Enterprise Grid org enterprise, or ""), as messages from them are named;
// "Sign in with Slack" names the console's admins by it.
func Principal(team, enterprise, user string) agent.Principal {
	return principal(team, enterprise, user)
}

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

// principalOf is the Principal of user, who wrote or clicked in an event
// or interaction of workspace team (of Enterprise Grid org enterprise),
// and whose own workspace is userTeam (an event's user_team, an
// interaction's user.team_id; "" when not given). A Slack Connect guest
// (userTeam neither served nor the event's workspace nor org), served
// under Config.AllowExternalUsers, is named by their own workspace: it is
// the same in every payload, while the workspace a payload is delivered
// for may name the host in one and the guest's in another. So a guest's
// clicks decide their own approvals, and a secret stored through the form
// is theirs in their messages.
func (a *Adapter) principalOf(team, enterprise, userTeam, user string) agent.Principal {
	if a.cfg.AllowExternalUsers && userTeam != "" && userTeam != team && userTeam != enterprise &&
		!a.pol.teamAllowed(userTeam, "") && (enterprise == "" || !a.pol.teamAllowed("", enterprise)) {
		return principal(userTeam, "", user)
	}
	return principal(team, enterprise, user)
}
