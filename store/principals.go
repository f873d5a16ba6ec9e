package store

import (
	"strings"

	"github.com/talonhq/talon/agent"
)

// GlobalPrincipal returns p without its workspace when p's user id is the
// same in every workspace of its platform: every Discord user id, and Slack
// Enterprise Grid user ids (those starting with W). ok reports whether p
// changed. The channel adapters build principals this way; migration 0005
// applied the same rule to the rows stored before, and the vault re-seals
// its entries with it (vault.Vault.RenameUsers).
func GlobalPrincipal(p agent.Principal) (agent.Principal, bool) {
	if p.Workspace == "" {
		return p, false
	}
	if p.Platform == "discord" || p.Platform == "slack" && strings.HasPrefix(p.User, "W") {
		p.Workspace = ""
		return p, true
	}
	return p, false
}

// GlobalUser is GlobalPrincipal on a principal's "platform:workspace:user"
// form, the vault's user; a string that is not one is left alone.
func GlobalUser(user string) (string, bool) {
	p, err := agent.ParsePrincipal(user)
	if err != nil {
		return user, false
	}
	g, ok := GlobalPrincipal(p)
	return g.String(), ok
}
