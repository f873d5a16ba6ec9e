package slack

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

// fakeApprovals decides like the runtime: owner only, once, then tells the
// channel (the real Decide is still being written).
type fakeApprovals struct {
	ad     *Adapter
	prompt agent.ApprovalPrompt

	mu    sync.Mutex
	state agent.ApprovalState // guarded by mu
	calls int                 // guarded by mu
}

func (f *fakeApprovals) decide(ctx context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error) {
	f.mu.Lock()
	f.calls++
	if id != f.prompt.ID {
		f.mu.Unlock()
		return "", agent.ErrUnknownApproval
	}
	if by != f.prompt.Key.Principal {
		f.mu.Unlock()
		return f.state, agent.ErrNotOwner
	}
	if f.state != agent.ApprovalPending {
		f.mu.Unlock()
		return f.state, agent.ErrDecided
	}
	f.state = agent.ApprovalDenied
	if approve {
		f.state = agent.ApprovalApproved
	}
	st := f.state
	f.mu.Unlock()
	return st, f.ad.ApprovalDone(ctx, f.prompt, st, by)
}

func click(user, action, value, ts string) map[string]any {
	return map[string]any{
		"type": "block_actions", "team": map[string]any{"id": team}, "user": map[string]any{"id": user, "team_id": team},
		"channel":   map[string]any{"id": "C1"},
		"container": map[string]any{"type": "message", "channel_id": "C1", "message_ts": ts, "thread_ts": "9.000100"},
		"actions":   []map[string]any{{"action_id": action, "block_id": approvalBlockID + "U1", "value": value, "type": "button"}},
	}
}

func TestApprovals(t *testing.T) {
	fa := &fakeApprovals{state: agent.ApprovalPending}
	h := newHarness(t, ModeSocket, func(a *Adapter) { fa.ad = a })
	h.rt.decide = fa.decide
	owner := agent.Principal{Platform: Platform, Workspace: team, User: "U1"}
	fa.prompt = agent.ApprovalPrompt{
		ID: 42, Key: agent.SessionKey{Principal: owner, Conversation: agent.Conversation{Channel: "C1", Thread: "9.000100"}},
		ReplyTo: replyTo{Channel: "C1", Thread: "9.000100"}.encode(), Tool: "github",
		Description: "POST https://api.github.com/repos/o/r/issues <!here>",
	}
	msg, err := h.ad.AskApproval(h.ctx, fa.prompt)
	if err != nil {
		t.Fatal(err)
	}
	fa.mu.Lock()
	fa.prompt.Message = msg
	fa.mu.Unlock()
	asks := h.fs.messages("chat.postMessage")
	if len(asks) != 1 || asks[0].Thread != "9.000100" {
		t.Fatalf("approval prompt = %+v, want one post in the thread", asks)
	}
	for _, want := range []string{`"value":"42"`, `"action_id":"talon_approve"`, `"action_id":"talon_deny"`, `\u0026lt;!here\u0026gt;`} {
		if !strings.Contains(asks[0].Blocks, want) {
			t.Errorf("prompt blocks lack %s: %s", want, asks[0].Blocks)
		}
	}
	if !strings.Contains(asks[0].Text, "&lt;!here&gt;") || strings.Contains(asks[0].Blocks+asks[0].Text, "<!here>") {
		t.Errorf("prompt carries a live <!here>")
	}
	ts := asks[0].TS

	// Someone else clicks: refused, told who may decide.
	h.fs.send(interactiveEnvelope("i1", click("U2", actionApprove, "42", ts)))
	h.fs.waitAcks(t, "i1")
	eventually(t, "the refusal", func() bool { return len(h.fs.messages("chat.postEphemeral")) == 1 })
	eph := h.fs.messages("chat.postEphemeral")[0]
	if eph.User != "U2" || !strings.Contains(eph.Text, "Only <@U1> can decide") {
		t.Errorf("refusal = %+v", eph)
	}
	// The owner approves; a double click changes nothing.
	h.fs.send(interactiveEnvelope("i2", click("U1", actionApprove, "42", ts)))
	h.fs.waitAcks(t, "i2")
	h.fs.send(interactiveEnvelope("i3", click("U1", actionDeny, "42", ts)))
	h.fs.waitAcks(t, "i3")
	updates := h.fs.messages("chat.update")
	if len(updates) != 1 || updates[0].TS != ts || !strings.Contains(updates[0].Text, "Approved by <@U1>") || strings.Contains(updates[0].Blocks, "talon_approve") {
		t.Errorf("updates = %+v, want the buttons replaced by the approval once", updates)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if fa.state != agent.ApprovalApproved || fa.calls != 3 {
		t.Errorf("state %s after %d decisions, want approved after 3", fa.state, fa.calls)
	}
	if n := len(h.fs.messages("chat.postEphemeral")); n != 1 {
		t.Errorf("%d ephemeral messages, want only the refusal", n)
	}
}

func submission(name, value, hosts, injection, param string) map[string]any {
	input := func(v string) map[string]any {
		return map[string]any{inputAction: map[string]any{"type": "plain_text_input", "value": v}}
	}
	return map[string]any{
		"type": "view_submission", "team": map[string]any{"id": team}, "user": map[string]any{"id": "U1", "team_id": team},
		"view": map[string]any{
			"id": "V1", "callback_id": secretModalID, "private_metadata": `{"c":"D1"}`,
			"state": map[string]any{"values": map[string]any{
				blockName: input(name), blockValue: input(value), blockHosts: input(hosts), blockParam: input(param),
				blockInjection: map[string]any{inputAction: map[string]any{"type": "static_select", "selected_option": map[string]any{"value": injection}}},
			}},
		},
	}
}

func TestSecretModal(t *testing.T) {
	const secret = "ghp_s3cr3tV4lu3-never-anywhere-else"
	sec := &recordingSecrets{}
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Secrets = sec })

	// A normal conversation runs alongside, so the model is called.
	h.fs.send(eventsEnvelope("e0", "Ev0", dm("U1", "10.000100", "hello")))
	h.fs.send(slashEnvelope("s1", map[string]any{"team_id": team, "channel_id": "D1", "user_id": "U1", "command": "/talon", "text": "secret add", "trigger_id": "trig1"}))
	h.fs.waitAcks(t, "e0", "s1")
	h.fs.mu.Lock()
	views := append([]string(nil), h.fs.views...)
	h.fs.mu.Unlock()
	if len(views) != 1 || !strings.Contains(views[0], `"trigger_id":"trig1"`) || !strings.Contains(views[0], secretModalID) {
		t.Fatalf("views.open = %v", views)
	}

	// Invalid: no hosts, header without a name → errors back to the form.
	h.fs.send(interactiveEnvelope("v1", submission("GH_TOKEN", secret, " ", "header", "")))
	h.fs.waitAcks(t, "v1")
	ack, _ := h.fs.ack("v1")
	var resp struct {
		Action string            `json:"response_action"`
		Errors map[string]string `json:"errors"`
	}
	if err := json.Unmarshal(ack, &resp); err != nil || resp.Action != "errors" || resp.Errors[blockHosts] == "" || resp.Errors[blockParam] == "" {
		t.Errorf("invalid submission ack = %s", ack)
	}

	h.fs.send(interactiveEnvelope("v2", submission("GH_TOKEN", secret, "api.github.com, Uploads.GitHub.com", "header", "X-Api-Key")))
	h.fs.waitAcks(t, "v2")
	if ack, _ := h.fs.ack("v2"); len(ack) != 0 && string(ack) != "null" {
		t.Errorf("valid submission ack = %s, want empty (close)", ack)
	}
	eventually(t, "the confirmation", func() bool { return len(h.fs.messages("chat.postEphemeral")) == 1 })
	h.idle(t)

	sec.mu.Lock()
	got := sec.added
	sec.mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("AddSecret calls = %d, want 1", len(got))
	}
	wantP := agent.Principal{Platform: Platform, Workspace: team, User: "U1"}
	wantS := agent.NewSecret{Name: "GH_TOKEN", Value: []byte(secret), Hosts: []string{"api.github.com", "uploads.github.com"}, Injection: "header:X-Api-Key"}
	if diff := cmp.Diff(wantP, got[0].P); diff != "" {
		t.Errorf("principal (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantS, got[0].S); diff != "" {
		t.Errorf("secret (-want +got):\n%s", diff)
	}

	// The value went nowhere else.
	h.fs.mu.Lock()
	for _, b := range h.fs.bodies {
		if strings.Contains(string(b), secret) {
			t.Errorf("secret value sent to Slack's Web API: %.200s", b)
		}
	}
	h.fs.mu.Unlock()
	if strings.Contains(h.logs.String(), secret) {
		t.Error("secret value in the log")
	}
	if len(h.llm.Requests()) == 0 {
		t.Error("the model was never called; the leak check would prove nothing")
	}
	for _, r := range h.llm.Requests() {
		if strings.Contains(string(r.Raw), secret) {
			t.Error("secret value in a model request")
		}
	}
}

func TestSlashCommands(t *testing.T) {
	h := newHarness(t, ModeSocket, nil) // no vault
	cmd := func(env, text, trigger string) {
		h.fs.send(slashEnvelope(env, map[string]any{"team_id": team, "channel_id": "C1", "user_id": "U1", "command": "/talon", "text": text, "trigger_id": trigger}))
	}
	cmd("s1", "status", "t1")
	cmd("s2", "status", "t1") // a redelivery: one answer
	cmd("s3", "secret add", "t3")
	cmd("s4", "frobnicate", "t4")
	cmd("s5", "secret remove X hunter2", "t5")
	h.fs.waitAcks(t, "s1", "s2", "s3", "s4", "s5")
	h.idle(t)
	eph := h.fs.messages("chat.postEphemeral")
	if len(eph) != 1 || eph[0].User != "U1" || eph[0].Channel != "C1" {
		t.Errorf("answers = %+v, want one ephemeral status to U1 in C1", eph)
	}
	for env, want := range map[string]string{"s3": "not configured", "s4": "Usage", "s5": "secret add"} {
		ack, _ := h.fs.ack(env)
		if !strings.Contains(string(ack), want) {
			t.Errorf("ack of %s = %s, want it to mention %q", env, ack, want)
		}
	}
	for _, r := range h.llm.Requests() {
		if strings.Contains(string(r.Raw), "hunter2") {
			t.Error("text after `secret` reached the model")
		}
	}
}

// A prompt asked again (after a restart) is shown in its message; when
// that message is gone it is posted again, and when refreshing it fails
// otherwise it is kept (its buttons still decide) and nothing is posted.
func TestApprovalPromptAskedAgain(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	owner := agent.Principal{Platform: Platform, Workspace: team, User: "U1"}
	p := agent.ApprovalPrompt{ID: 43, Key: agent.SessionKey{Principal: owner, Conversation: agent.Conversation{Channel: "C1", Thread: "9.000100"}},
		ReplyTo: replyTo{Channel: "C1", Thread: "9.000100"}.encode(), Tool: "deploy", Detail: agent.ApprovalDetail{Args: `{"env":"prod"}`}}
	h.fs.mu.Lock()
	h.fs.updateFail = map[string]string{"5.000100": "message_not_found", "6.000100": "internal_error"}
	h.fs.mu.Unlock()

	for _, tc := range []struct {
		stored, want string
		posts        int
	}{
		{"C1/4.000100", "C1/4.000100", 0}, // refreshed in place
		{"C1/5.000100", "", 1},            // gone: posted again
		{"C1/6.000100", "C1/6.000100", 0}, // failed to refresh: kept
	} {
		before := len(h.fs.messages("chat.postMessage"))
		p.Message = tc.stored
		got, err := h.ad.AskApproval(h.ctx, p)
		if err != nil {
			t.Fatalf("%s: %v", tc.stored, err)
		}
		posts := h.fs.messages("chat.postMessage")[before:]
		if len(posts) != tc.posts {
			t.Errorf("%s: %d posts, want %d", tc.stored, len(posts), tc.posts)
		}
		if tc.want == "" && len(posts) == 1 {
			tc.want = "C1/" + posts[0].TS
		}
		if got != tc.want {
			t.Errorf("%s: message %q, want %q", tc.stored, got, tc.want)
		}
	}
	ups := h.fs.messages("chat.update")
	if len(ups) != 1 || ups[0].TS != "4.000100" || !strings.Contains(ups[0].Blocks, "talon_approve") || !strings.Contains(ups[0].Text, `{"env":"prod"}`) {
		t.Errorf("updates = %+v, want the prompt refreshed in 4.000100 with its buttons", ups)
	}
}

// /talon memory reaches the runtime as /memory; "memory rm" passes only
// an entry number on, never other text (a user may have typed a secret).
func TestSlashMemory(t *testing.T) {
	h := newHarness(t, ModeSocket, nil) // the runtime has no memory
	cmd := func(env, text, trigger string) {
		h.fs.send(slashEnvelope(env, map[string]any{"team_id": team, "channel_id": "C1", "user_id": "U1", "command": "/talon", "text": text, "trigger_id": trigger}))
	}
	cmd("m1", "memory", "t1")
	cmd("m2", "memory rm hunter2hunter2", "t2")
	cmd("m3", "memory frob", "t3")
	cmd("m4", "memory rm #12", "t4")
	h.fs.waitAcks(t, "m1", "m2", "m3", "m4")
	h.idle(t)
	for env, want := range map[string]string{"m2": "/talon memory rm ID", "m3": "/talon memory"} {
		ack, _ := h.fs.ack(env)
		if !strings.Contains(string(ack), want) {
			t.Errorf("ack of %s = %s, want it to mention %q", env, ack, want)
		}
	}
	var answers []string
	for _, m := range h.fs.messages("chat.postEphemeral") {
		answers = append(answers, m.Text)
	}
	if len(answers) != 2 || answers[0] != "Memory is not enabled on this gateway." || answers[1] != answers[0] {
		t.Errorf("ephemeral answers = %q, want two from the runtime", answers)
	}
	if len(h.llm.Requests()) != 0 {
		t.Error("a memory command reached the model")
	}
}
