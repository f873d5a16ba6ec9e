package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

// guestMention is a mention in shared channel C1 by user, whose own
// workspace is userTeam.
func guestMention(user, userTeam, ts, text string) map[string]any {
	ev := channelMsg("app_mention", user, ts, "", "<@UBOT> "+text)
	ev["user_team"] = userTeam
	ev["source_team"] = userTeam
	return ev
}

// TestSlackConnectGuests: a user whose own workspace is not served (a
// Slack Connect guest in a shared channel) is refused once, politely, at
// every entry point (messages, approval buttons, the secret form), unless
// allow_external_users is on.
func TestSlackConnectGuests(t *testing.T) {
	sec := &recordingSecrets{}
	var decided atomic.Int32
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Secrets = sec })
	h.rt.decide = func(_ context.Context, _ agent.ApprovalID, _ agent.Principal, _ bool) (agent.ApprovalState, error) {
		decided.Add(1)
		return agent.ApprovalApproved, nil
	}
	h.fs.send(eventsEnvelope("e1", "Ev1", guestMention("UG1", "TEXT", "50.000100", "hello")))
	h.fs.send(eventsEnvelope("e2", "Ev2", guestMention("UG1", "TEXT", "50.000200", "hello again")))
	h.fs.send(eventsEnvelope("e3", "Ev3", guestMention("U1", team, "50.000300", "I am a member")))
	click := click("UG2", actionApprove, "42", "50.000900")
	click["user"] = map[string]any{"id": "UG2", "team_id": "TEXT"}
	h.fs.send(interactiveEnvelope("i1", click))
	form := submission("GH_TOKEN", "ghp_value-of-a-guest-0123456789", "api.github.com", "bearer", "")
	form["user"] = map[string]any{"id": "UG3", "team_id": "TEXT"}
	h.fs.send(interactiveEnvelope("v1", form))
	h.fs.waitAcks(t, "e1", "e2", "e3", "i1", "v1")
	eventually(t, "two refusals", func() bool { return len(h.fs.messages("chat.postEphemeral")) == 2 })
	h.idle(t)

	if diff := cmp.Diff([]string{"I am a member"}, modelTexts(h.llm)); diff != "" {
		t.Errorf("messages for the model (-want +got):\n%s", diff)
	}
	var refused []string
	for _, m := range h.fs.messages("chat.postEphemeral") {
		refused = append(refused, m.User+": "+m.Text)
	}
	want := []string{"UG1: Sorry, " + reasonExternal, "UG2: Sorry, " + reasonExternal}
	if diff := cmp.Diff(want, refused, sortStrings); diff != "" {
		t.Errorf("refusals (-want +got):\n%s", diff)
	}
	ack, _ := h.fs.ack("v1")
	var resp struct {
		Action string            `json:"response_action"`
		Errors map[string]string `json:"errors"`
	}
	if err := json.Unmarshal(ack, &resp); err != nil || resp.Action != "errors" || !strings.Contains(resp.Errors[blockName], reasonExternal) {
		t.Errorf("the guest's form was answered %s, want an error naming the reason", ack)
	}
	sec.mu.Lock()
	if len(sec.added) != 0 {
		t.Errorf("a guest stored a secret")
	}
	sec.mu.Unlock()
	if decided.Load() != 0 {
		t.Errorf("a guest's click was decided")
	}

	// A slash command from the guest's own workspace is not served either.
	h.fs.send(slashEnvelope("s1", map[string]any{"team_id": "TEXT", "channel_id": "C1", "user_id": "UG1", "command": "/talon", "text": "status", "trigger_id": "tg"}))
	h.fs.waitAcks(t, "s1")
	if ack, _ := h.fs.ack("s1"); !strings.Contains(string(ack), "not served") {
		t.Errorf("the guest's /talon was answered %s", ack)
	}
}

func TestSlackConnectGuestsAllowed(t *testing.T) {
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Config.AllowExternalUsers = true })
	h.fs.send(eventsEnvelope("e1", "Ev1", guestMention("UG1", "TEXT", "51.000100", "hello")))
	h.fs.waitAcks(t, "e1")
	h.idle(t)
	if diff := cmp.Diff([]string{"hello"}, modelTexts(h.llm)); diff != "" {
		t.Errorf("messages for the model (-want +got):\n%s", diff)
	}
}

// TestGridMembersAreNotGuests: with an Enterprise Grid org served, a user
// of another workspace of the org is a member (users.info says which org a
// user belongs to); a user of another org is a guest.
func TestGridMembersAreNotGuests(t *testing.T) {
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Config.AllowedTeams = []string{"E1"} })
	h.fs.mu.Lock()
	h.fs.users = map[string]slackUser{"U7": {name: "Sibling", team: "T2", enterprise: "E1"}, "U6": {name: "Stranger", team: "T6", enterprise: "E6"}}
	h.fs.mu.Unlock()
	grid := func(env string, ev map[string]any) []byte {
		var m map[string]any
		_ = json.Unmarshal(eventsEnvelope(env, "Ev"+env, ev), &m)
		m["payload"].(map[string]any)["enterprise_id"] = "E1"
		b, _ := json.Marshal(m)
		return b
	}
	h.fs.send(grid("e1", guestMention("U7", "T2", "52.000100", "from a sibling workspace")))
	h.fs.send(grid("e2", guestMention("U6", "T6", "52.000200", "from another org")))
	h.fs.waitAcks(t, "e1", "e2")
	eventually(t, "the refusal", func() bool { return len(h.fs.messages("chat.postEphemeral")) == 1 })
	h.idle(t)
	if diff := cmp.Diff([]string{"from a sibling workspace"}, modelTexts(h.llm)); diff != "" {
		t.Errorf("messages for the model (-want +got):\n%s", diff)
	}
	if eph := h.fs.messages("chat.postEphemeral"); eph[0].User != "U6" {
		t.Errorf("refused %s, want U6", eph[0].User)
	}
}

// TestLogKeys: the adapter's JSON log uses one key for one meaning:
// channel_id for a channel, never "channel"; "message" is only the log
// line's own text; and no line carries what a user wrote.
func TestLogKeys(t *testing.T) {
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Config.DeniedUsers = []string{"UBAD"} })
	texts := []string{"private words one", "private words two", "private words three", "private words four"}
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "60.000100", texts[0])))
	h.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("app_mention", "U1", "60.000200", "", "<@UBOT> "+texts[1])))
	h.fs.send(eventsEnvelope("e3", "Ev3", dm("UBAD", "60.000300", texts[2])))
	h.fs.send(eventsEnvelope("e4", "Ev4", guestMention("UG", "TEXT", "60.000400", texts[3])))
	h.fs.send([]byte(`{"type":"events_api","envelope_id":"bad1","payload":"not an event"}`))
	h.fs.waitAcks(t, "e1", "e2", "e3", "e4", "bad1")
	eventually(t, "the refusals", func() bool { return len(h.fs.messages("chat.postEphemeral")) == 2 })
	h.idle(t)
	h.stop()

	lines := strings.Split(strings.TrimSpace(h.adLogs.String()), "\n")
	withChannelID := 0
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %s", line)
		}
		if _, ok := m["channel"]; ok {
			t.Errorf("a line has a channel key: %s", line)
		}
		if msg, ok := m["message"].(string); ok && !strings.HasPrefix(msg, "slack: ") {
			t.Errorf("a line's message is not its text: %s", line)
		}
		if _, ok := m["channel_id"]; ok {
			withChannelID++
		}
		for _, text := range texts {
			if strings.Contains(line, text) || strings.Contains(line, "private words") {
				t.Errorf("a line carries a message's text: %s", line)
			}
		}
	}
	if withChannelID == 0 {
		t.Errorf("no line names a channel_id; the check saw nothing:\n%s", h.adLogs.String())
	}
}

// failingFollows is a FollowStore whose disk has failed.
type failingFollows struct{}

var errFollowsDisk = errors.New("disk I/O error")

func (failingFollows) FollowThread(context.Context, agent.SessionKey, time.Time) error {
	return errFollowsDisk
}

func (failingFollows) FollowingThread(context.Context, agent.SessionKey, time.Time) (bool, error) {
	return false, errFollowsDisk
}

func (failingFollows) ForgetThreads(context.Context, string, time.Time, int) (int, error) {
	return 0, errFollowsDisk
}

// TestLogKeysOfFollowedThreads: when the threads followed cannot be read
// or written, the lines that say so keep the adapter's keys: the platform
// once (the gateway's logger carries it), the channel as channel_id, and
// a message that names Slack.
func TestLogKeysOfFollowedThreads(t *testing.T) {
	h := newHarness(t, ModeSocket, func(a *Adapter) {
		a.Follows = failingFollows{}
		a.Log = a.Log.With().Str("platform", Platform).Logger() // as talon run builds it
	})
	h.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "61.000100", "", "<@UBOT> start a thread")))
	h.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("message", "U2", "61.000200", "61.000100", "a follow-up")))
	h.fs.waitAcks(t, "e1", "e2")
	h.idle(t)
	h.stop()
	var seen []string
	for _, line := range strings.Split(strings.TrimSpace(h.adLogs.String()), "\n") {
		if !strings.Contains(line, "thread") || !strings.Contains(line, errFollowsDisk.Error()) {
			continue
		}
		seen = append(seen, line)
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %s", line)
		}
		if n := strings.Count(line, `"platform":`); n != 1 {
			t.Errorf("the platform appears %d times: %s", n, line)
		}
		if _, ok := m["conversation"]; ok || (strings.Contains(line, "a follow-up there") && m["channel_id"] != "C1") {
			t.Errorf("the channel is not under channel_id: %s", line)
		}
		if msg, _ := m["message"].(string); !strings.HasPrefix(msg, "slack: ") {
			t.Errorf("the line's message does not name Slack: %s", line)
		}
	}
	if len(seen) < 2 {
		t.Errorf("%d lines about the threads followed, want the failed write and the failed read:\n%s", len(seen), h.adLogs.String())
	}
}

// TestGuestIsOnePersonEverywhere: a Slack Connect guest served under
// allow_external_users is the same principal in their messages and in
// their clicks, whichever workspace a click's payload names as its team
// (the host's, where the channel lives, or the guest's own): otherwise
// they could not decide their own approvals, and a secret stored through
// the form would not be theirs in their messages.
func TestGuestIsOnePersonEverywhere(t *testing.T) {
	var mu sync.Mutex
	var clickers []agent.Principal
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Config.AllowExternalUsers = true })
	h.rt.decide = func(_ context.Context, _ agent.ApprovalID, by agent.Principal, _ bool) (agent.ApprovalState, error) {
		mu.Lock()
		defer mu.Unlock()
		clickers = append(clickers, by)
		return agent.ApprovalPending, nil
	}
	h.fs.send(eventsEnvelope("e1", "Ev1", guestMention("UG1", "TEXT", "53.000100", "hello")))
	h.fs.waitAcks(t, "e1")
	h.idle(t)
	for i, clickTeam := range []string{team, "TEXT"} {
		c := click("UG1", actionApprove, "42", "53.000200")
		c["team"] = map[string]any{"id": clickTeam}
		c["user"] = map[string]any{"id": "UG1", "team_id": "TEXT"}
		env := fmt.Sprintf("i%d", i)
		h.fs.send(interactiveEnvelope(env, c))
		h.fs.waitAcks(t, env)
	}
	h.rt.mu.Lock()
	keys := append([]agent.SessionKey(nil), h.rt.keys...)
	h.rt.mu.Unlock()
	if len(keys) != 1 {
		t.Fatalf("accepted %d inbounds, want the guest's message", len(keys))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(clickers) != 2 {
		t.Fatalf("%d clicks reached the runtime, want 2", len(clickers))
	}
	for i, by := range clickers {
		if by != keys[0].Principal {
			t.Errorf("click %d came from %s, the message from %s: one guest, two identities", i, by, keys[0].Principal)
		}
	}
}
