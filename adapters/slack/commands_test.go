package slack

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/talonhq/talon/agent"
)

// slash sends /talon text from user U1 in channel, with a response_url.
func (h *harness) slash(t *testing.T, env, channel, text, responseID string) {
	t.Helper()
	p := map[string]any{"team_id": team, "channel_id": channel, "user_id": "U1", "command": "/talon", "text": text, "trigger_id": "trig-" + env}
	if responseID != "" {
		p["response_url"] = h.fs.responseURL(responseID)
	}
	h.fs.send(slashEnvelope(env, p))
	h.fs.waitAcks(t, env)
}

// checkSlackHints fails when text names a command the way Slack does not
// take it ("/new", "/secret add"), or does not name /talon's forms.
func checkSlackHints(t *testing.T, what, text string) {
	t.Helper()
	for _, want := range []string{"/talon new", "/talon status", "/talon secrets", "/talon secret add", "/talon secret rm NAME", "/talon help"} {
		if !strings.Contains(text, want) {
			t.Errorf("%s does not name %q:\n%s", what, want, text)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "/") && !strings.HasPrefix(l, "/talon ") {
			t.Errorf("%s names a command Slack does not take: %q", what, l)
		}
	}
}

// TestSlackCommandHints: /talon help, answered through its response_url,
// and "help" typed alone in a DM both name only /talon forms; "new",
// "status" and "help" alone in a DM are answered without the model, but
// not in a channel or within a sentence.
func TestSlackCommandHints(t *testing.T) {
	sec := &recordingSecrets{}
	h := newHarness(t, ModeSocket, func(a *Adapter) {
		a.Secrets = sec
		a.Runtime.(*testRuntime).Secrets = sec // the runtime answers /secret
	})
	h.slash(t, "s1", "C1", "help", "r1")
	h.slash(t, "s2", "C1", "secret rm GH_TOKEN", "r2")
	h.slash(t, "s3", "C1", "secrets", "r3")
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "30.000100", "HELP")))
	h.fs.send(eventsEnvelope("e2", "Ev2", dm("U1", "30.000200", " Status ")))
	h.fs.waitAcks(t, "e1", "e2")
	h.idle(t)
	if n := len(h.llm.Requests()); n != 0 {
		t.Errorf("the model was called %d times for commands", n)
	}
	byURL := map[string]string{}
	for _, m := range h.fs.messages("response_url") {
		byURL[m.Channel] = decodeText(m.Text, botUser, nil)
		if m.ResponseType != "ephemeral" {
			t.Errorf("response_url post %s has response_type %q, want ephemeral", m.Channel, m.ResponseType)
		}
	}
	checkSlackHints(t, "/talon help", byURL["r1"])
	if byURL["r2"] != "Removed GH_TOKEN." {
		t.Errorf("/talon secret rm answered %q", byURL["r2"])
	}
	if !strings.Contains(byURL["r3"], "/talon secret add") {
		t.Errorf("/talon secrets answered %q, want it to name /talon secret add", byURL["r3"])
	}
	sec.mu.Lock()
	if diff := cmp.Diff([]string{"GH_TOKEN"}, sec.removed); diff != "" {
		t.Errorf("secrets removed (-want +got):\n%s", diff)
	}
	sec.mu.Unlock()
	var dms []string
	for _, p := range replies(h.fs) {
		dms = append(dms, decodeText(p.Text, botUser, nil))
	}
	if len(dms) != 2 {
		t.Fatalf("DM answers = %q, want help and status", dms)
	}
	for _, d := range dms {
		if strings.HasPrefix(d, "Talon answers") {
			checkSlackHints(t, "help in a DM", d)
		} else if !strings.HasPrefix(d, "Session ") {
			t.Errorf("DM answer %q is neither help nor status", d)
		}
	}

	// Not a command: a sentence in a DM, a word in a channel.
	h.fs.send(eventsEnvelope("e3", "Ev3", dm("U1", "30.000300", "help me")))
	h.fs.send(eventsEnvelope("e4", "Ev4", channelMsg("app_mention", "U1", "30.000400", "", "<@UBOT> new")))
	h.fs.waitAcks(t, "e3", "e4")
	h.idle(t)
	if diff := cmp.Diff([]string{"help me", "new"}, modelTexts(h.llm), sortStrings); diff != "" {
		t.Errorf("messages for the model (-want +got):\n%s", diff)
	}
}

// TestSlashAnswersThroughResponseURL: /talon answers reach the user where
// the bot is not a member (chat.postEphemeral fails there) through the
// command's response_url; when the response_url fails the answer goes by
// chat.postEphemeral; the response_url is never logged.
func TestSlashAnswersThroughResponseURL(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	h.fs.mu.Lock()
	h.fs.notMember = map[string]bool{"GPRIV": true, "DOTHER": true}
	h.fs.mu.Unlock()
	h.slash(t, "s1", "GPRIV", "status", "priv")
	h.slash(t, "s2", "DOTHER", "help", "other")
	h.idle(t)
	got := map[string]string{}
	for _, m := range h.fs.messages("response_url") {
		got[m.Channel] = m.Text
	}
	if !strings.HasPrefix(got["priv"], "Session ") || !strings.HasPrefix(got["other"], "Talon answers") || len(got) != 2 {
		t.Errorf("response_url answers = %q, want status and help", got)
	}
	if n := len(h.fs.messages("chat.postEphemeral")); n != 0 {
		t.Errorf("%d ephemeral messages where the bot is not a member", n)
	}

	h.fs.mu.Lock()
	h.fs.respondFail = true
	h.fs.mu.Unlock()
	h.slash(t, "s3", "C1", "status", "broken")
	h.idle(t)
	if eph := h.fs.messages("chat.postEphemeral"); len(eph) != 1 || eph[0].Channel != "C1" || eph[0].User != "U1" || !strings.HasPrefix(eph[0].Text, "Session ") {
		t.Errorf("fallback = %+v, want the status as an ephemeral message to U1 in C1", eph)
	}
	for _, l := range []string{h.logs.String(), h.adLogs.String()} {
		if strings.Contains(l, "/respond/") {
			t.Error("a response_url is in the log")
		}
	}
}

// TestExpiredResponseURLIsNotUsed: after its 30 minutes a response_url is
// not tried; the answer goes by chat.postEphemeral.
func TestExpiredResponseURLIsNotUsed(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	rt := replyTo{Channel: "C1", Ephemeral: "U1", ResponseURL: h.fs.responseURL("old"), Until: time.Now().Add(-time.Second).Unix()}
	if _, err := h.ad.Deliver(h.ctx, agent.Reply{ID: 1, Text: "late answer", ReplyTo: rt.encode()}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.fs.messages("response_url")); n != 0 {
		t.Errorf("%d posts to an expired response_url", n)
	}
	if eph := h.fs.messages("chat.postEphemeral"); len(eph) != 1 || eph[0].Text != "late answer" {
		t.Errorf("ephemeral = %+v, want the late answer", eph)
	}
}

// TestResponseURLSurvivesRestart: the response_url is persisted with the
// command, so an answer that could not be delivered before a restart is
// delivered through it after.
func TestResponseURLSurvivesRestart(t *testing.T) {
	fs := newFakeSlack(t)
	fs.notMember = map[string]bool{"GPRIV": true}
	fs.respondHang = true
	dbPath := t.TempDir() + "/t.db"
	h := startHarness(t, harnessOptions{mode: ModeSocket, fs: fs, dbPath: dbPath, tweak: func(a *Adapter) {
		// Stop without waiting long for the hanging delivery.
		a.Runtime.(*testRuntime).Limits.ShutdownGrace = 50 * time.Millisecond
	}})
	h.slash(t, "s1", "GPRIV", "status", "kept")
	// The answer is on its way to the hanging response_url when the
	// gateway stops.
	eventually(t, "the answer to be in flight", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.respondHung == 1
	})
	h.stop()
	fs.mu.Lock()
	fs.respondHang = false
	fs.mu.Unlock()
	h = startHarness(t, harnessOptions{mode: ModeSocket, fs: fs, dbPath: dbPath})
	eventually(t, "the answer after the restart", func() bool { return len(fs.messages("response_url")) == 1 })
	if m := fs.messages("response_url")[0]; m.Channel != "kept" || !strings.HasPrefix(m.Text, "Session ") {
		t.Errorf("answer = %+v, want the status through the stored response_url", m)
	}
}

// TestEventsModeSlashUsesResponseURL: over the HTTP Events API too, a
// /talon command's response_url carries the answer.
func TestEventsModeSlashUsesResponseURL(t *testing.T) {
	h := newHarness(t, ModeEvents, nil)
	if err := h.ad.setup(); err != nil {
		t.Fatal(err)
	}
	if err := h.ad.waitReady(h.ctx); err != nil {
		t.Fatal(err)
	}
	h.fs.mu.Lock()
	h.fs.notMember = map[string]bool{"GPRIV": true}
	h.fs.mu.Unlock()
	form := url.Values{"team_id": {team}, "channel_id": {"GPRIV"}, "user_id": {"U1"}, "command": {"/talon"}, "text": {"status"},
		"trigger_id": {"tr1"}, "response_url": {h.fs.responseURL("http1")}}
	req := signedRequest(t, "signing-secret", time.Now(), form.Encode())
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ad.EventsHandler().ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	h.idle(t)
	if got := h.fs.messages("response_url"); len(got) != 1 || got[0].Channel != "http1" || !strings.HasPrefix(got[0].Text, "Session ") {
		t.Errorf("response_url posts = %+v, want the status", got)
	}
}

func TestValidResponseURL(t *testing.T) {
	a := &Adapter{Config: DefaultConfig()}
	a.Config.BotToken, a.Config.AppToken, a.Config.AllowedTeams = "xoxb-x", "xapp-x", []string{team}
	a.Config.APIURL = "http://127.0.0.1:4000/api/"
	if err := a.setup(); err != nil {
		t.Fatal(err)
	}
	for u, want := range map[string]bool{
		"https://hooks.slack.com/commands/T1/1/abc": true,
		"https://hooks.slack-gov.com/commands/x":    true,
		"http://127.0.0.1:4000/respond/1":           true, // the configured API host (tests, GovSlack)
		"http://hooks.slack.com/commands/x":         false,
		"https://hooks.slack.com.evil.io/x":         false,
		"https://evilslack.com/x":                   false,
		"https://user@hooks.slack.com/x":            false,
		"http://127.0.0.1:4001/x":                   false,
		"http://169.254.169.254/latest/meta-data":   false,
		"":   false,
		"::": false,
	} {
		if got := a.validResponseURL(u); got != want {
			t.Errorf("validResponseURL(%q) = %v, want %v", u, got, want)
		}
	}
}

// TestSecretStoredWhereTheBotIsNotAMember: "/talon secret add" typed where
// the bot is not a member (a private channel, a DM between two people)
// confirms the stored secret through the command's response_url, which
// reaches the user there; chat.postEphemeral would not.
func TestSecretStoredWhereTheBotIsNotAMember(t *testing.T) {
	const secret = "ghp_s3cr3tV4lu3-for-a-private-channel"
	sec := &recordingSecrets{}
	h := newHarness(t, ModeSocket, func(a *Adapter) { a.Secrets = sec })
	h.fs.mu.Lock()
	h.fs.notMember = map[string]bool{"GPRIV": true}
	h.fs.mu.Unlock()
	h.slash(t, "s1", "GPRIV", "secret add", "priv")

	// The form is submitted as Slack sends it back: with the metadata the
	// adapter gave it.
	h.fs.mu.Lock()
	views := append([]string(nil), h.fs.views...)
	h.fs.mu.Unlock()
	if len(views) != 1 {
		t.Fatalf("views.open calls = %d, want 1", len(views))
	}
	var open struct {
		View struct {
			Meta string `json:"private_metadata"`
		} `json:"view"`
	}
	if err := json.Unmarshal([]byte(views[0]), &open); err != nil {
		t.Fatalf("views.open: %v", err)
	}
	sub := submission("GH_TOKEN", secret, "api.github.com", "bearer", "")
	sub["view"].(map[string]any)["private_metadata"] = open.View.Meta
	h.fs.send(interactiveEnvelope("v1", sub))
	h.fs.waitAcks(t, "v1")
	h.stop() // waits for the confirmation's background post

	got := h.fs.messages("response_url")
	if len(got) != 1 || got[0].Channel != "priv" || got[0].ResponseType != "ephemeral" || !strings.Contains(got[0].Text, "Stored the secret `GH_TOKEN` for api.github.com") {
		t.Errorf("response_url posts = %+v, want the confirmation, ephemeral", got)
	}
	for _, m := range h.fs.messages("") {
		if strings.Contains(m.Text, secret) {
			t.Errorf("the value reached Slack in %s", m.Method)
		}
	}
	for _, l := range []string{h.logs.String(), h.adLogs.String()} {
		if strings.Contains(l, "/respond/") || strings.Contains(l, secret) {
			t.Error("a response_url or the value is in the log")
		}
	}
}

// TestSecretAddTypedAsAMessage: "/secret add …" sent as a message (Slack
// lets a message start with "/" after a space, and a mention may precede
// it) cannot collect a value on Slack; the answer names the form that
// can, /talon secret add, not a command on the gateway's host.
func TestSecretAddTypedAsAMessage(t *testing.T) {
	sec := &recordingSecrets{}
	h := newHarness(t, ModeSocket, func(a *Adapter) {
		a.Secrets = sec
		a.Runtime.(*testRuntime).Secrets = sec
	})
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "34.000100", " /secret add GH_TOKEN --host api.github.com")))
	h.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("app_mention", "U1", "34.000200", "", "<@UBOT> /secret add GH_TOKEN --host api.github.com")))
	h.fs.waitAcks(t, "e1", "e2")
	h.idle(t)
	// In the channel the answer is shown to the user only (see
	// TestSecretCommandInAChannelIsShownToItsOwnerOnly).
	got := append(replies(h.fs), h.fs.messages("chat.postEphemeral")...)
	if len(got) != 2 {
		t.Fatalf("answers = %+v, want two", got)
	}
	for _, p := range got {
		if text := decodeText(p.Text, botUser, nil); !strings.Contains(text, "/talon secret add") || strings.Contains(text, "vault set") {
			t.Errorf("answer in %s = %q, want it to name /talon secret add", p.Channel, text)
		}
	}
}

// listedSecrets is a vault holding one entry, PROD_DB_TOKEN.
type listedSecrets struct{ recordingSecrets }

func (*listedSecrets) ListSecrets(context.Context, agent.Principal) ([]agent.SecretInfo, error) {
	return []agent.SecretInfo{{Name: "PROD_DB_TOKEN", Hosts: []string{"db.internal.example"}, Injection: "bearer"}}, nil
}

// TestSecretCommandInAChannelIsShownToItsOwnerOnly: "@talon /secret" (or
// /secret rm) typed in a channel is answered as /talon secrets is: visible
// only to the person who asked, in the thread; the names and hosts of
// their credentials are not posted for the channel to read.
func TestSecretCommandInAChannelIsShownToItsOwnerOnly(t *testing.T) {
	sec := &listedSecrets{}
	h := newHarness(t, ModeSocket, func(a *Adapter) {
		a.Secrets = sec
		a.Runtime.(*testRuntime).Secrets = sec
	})
	h.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "35.000100", "", "<@UBOT> /secret")))
	h.fs.send(eventsEnvelope("e2", "Ev2", channelMsg("app_mention", "U1", "35.000200", "", "<@UBOT> /SECRET rm OLD_TOKEN")))
	h.fs.send(eventsEnvelope("e3", "Ev3", channelMsg("app_mention", "U1", "35.000300", "", "<@UBOT> /secretary is a word")))
	h.fs.waitAcks(t, "e1", "e2", "e3")
	h.idle(t)
	for _, m := range h.fs.messages("chat.postMessage") {
		if strings.Contains(m.Text, "PROD_DB_TOKEN") || strings.Contains(m.Text, "OLD_TOKEN") {
			t.Errorf("posted for the channel to read: %q", m.Text)
		}
	}
	type note struct{ Channel, Thread, User string }
	var got []note
	var texts []string
	for _, m := range h.fs.messages("chat.postEphemeral") {
		got = append(got, note{m.Channel, m.Thread, m.User})
		texts = append(texts, m.Text)
	}
	want := []note{{"C1", "35.000100", "U1"}, {"C1", "35.000200", "U1"}}
	if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b note) bool { return a.Thread < b.Thread })); diff != "" {
		t.Errorf("ephemeral answers (-want +got):\n%s", diff)
	}
	if len(texts) != 2 || !strings.Contains(strings.Join(texts, "\n"), "PROD_DB_TOKEN") || !strings.Contains(strings.Join(texts, "\n"), "Removed OLD_TOKEN.") {
		t.Errorf("ephemeral answers = %q, want the list and the removal", texts)
	}
	if diff := cmp.Diff([]string{"/secretary is a word"}, modelTexts(h.llm)); diff != "" {
		t.Errorf("messages for the model (-want +got):\n%s", diff)
	}
}
