package slack

import (
	"context"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent"
)

// A routine posts at the top level of its channel, or in its owner's DM;
// its approval prompts go to the owner's DM either way; a channel the
// configuration denies is refused; a channel or owner that is gone is
// reported before a run; the owner's time zone is their profile's.
func TestRoutineTargetCheckAndZone(t *testing.T) {
	h := newHarness(t, "events", func(a *Adapter) { a.Config.DeniedChannels = []string{"C9"} })
	ctx := context.Background()
	h.fs.mu.Lock()
	h.fs.users = map[string]slackUser{"U1": {name: "Ana", team: team, tz: "Europe/Paris"}, "U2": {name: "Bo", team: team, deleted: true}}
	h.fs.channels = map[string]string{"C1": "general", "DU1": ""}
	h.fs.mu.Unlock()

	ch, rt, err := h.ad.RoutineTarget(ctx, "U1", "C1", false)
	if err != nil {
		t.Fatal(err)
	}
	to, err := decodeReplyTo(rt)
	if err != nil || ch != "C1" || to != (replyTo{Channel: "C1", Approvals: "DU1"}) {
		t.Fatalf("RoutineTarget(C1) = %s, %+v, %v; want C1's top level with approvals in DU1", ch, to, err)
	}
	if ch, dm, err := h.ad.RoutineTarget(ctx, "U1", "C1", true); err != nil || ch != "DU1" || dm != (replyTo{Channel: "DU1"}).encode() {
		t.Errorf("RoutineTarget(dm) = %s, %s, %v; want DU1", ch, dm, err)
	}
	if _, _, err := h.ad.RoutineTarget(ctx, "U1", "C9", false); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("RoutineTarget(denied C9) = %v, want refused", err)
	}

	p := agent.ApprovalPrompt{ID: 3, Key: agent.SessionKey{Principal: agent.Principal{Platform: Platform, Workspace: team, User: "U1"},
		Conversation: agent.Conversation{Channel: "C1", Thread: "routine-1"}}, ReplyTo: rt, Tool: "deploy", Description: "run tool deploy"}
	msg, err := h.ad.AskApproval(ctx, p)
	if err != nil || !strings.HasPrefix(msg, "DU1/") {
		t.Fatalf("AskApproval = %q, %v; want the prompt in DU1", msg, err)
	}
	for _, m := range h.fs.messages("chat.postMessage") {
		if m.Channel == "C1" {
			t.Errorf("an approval prompt was posted in the channel: %+v", m)
		}
	}

	for _, tc := range []struct{ user, channel, want string }{
		{"U1", "C1", ""},
		{"U1", "C404", "its channel is gone"},
		{"U2", "C1", "deactivated"},
		{"U3", "C1", "account is gone"},
		{"U1", "C9", "does not answer"},
	} {
		err := h.ad.RoutineCheck(ctx, tc.user, tc.channel)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("RoutineCheck(%s, %s) = %v, want %q", tc.user, tc.channel, err, tc.want)
		}
	}
	if tz, err := h.ad.UserZone(ctx, "U1"); err != nil || tz != "Europe/Paris" {
		t.Errorf("UserZone(U1) = %q, %v", tz, err)
	}
}
