package slack

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

// TestGridUsersAreGlobal submits the secret form as an Enterprise Grid user
// (W…) through two workspaces of the organisation, and as a workspace user:
// the Grid user is one principal without a workspace, so their secrets are
// theirs wherever they write; the other keeps the workspace.
func TestGridUsersAreGlobal(t *testing.T) {
	sec := &recordingSecrets{}
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Secrets = sec })
	as := func(env, user, teamID, enterprise string) {
		p := submission("GH_TOKEN", "a-long-enough-value", "api.github.com", "bearer", "")
		p["user"] = map[string]any{"id": user, "team_id": teamID}
		p["team"] = map[string]any{"id": teamID}
		if enterprise != "" {
			p["enterprise"] = map[string]any{"id": enterprise}
		}
		h.fs.send(interactiveEnvelope(env, p))
		h.fs.waitAcks(t, env)
	}
	as("v1", "W123", team, "")
	as("v2", "W123", "T2", team) // another workspace of the organisation, allowed through it
	as("v3", "U1", team, "")
	sec.mu.Lock()
	var got []agent.Principal
	for _, a := range sec.added {
		got = append(got, a.P)
	}
	sec.mu.Unlock()
	want := []agent.Principal{
		{Platform: Platform, User: "W123"},
		{Platform: Platform, User: "W123"},
		{Platform: Platform, Workspace: team, User: "U1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("owners of the stored secrets (-want +got):\n%s", diff)
	}
}
