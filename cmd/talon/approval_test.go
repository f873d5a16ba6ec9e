package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// The approval prompts through talon run: the real sandbox asks for a call
// of html_text (made to need approval), with arguments a hostile model
// wrote: a megabyte long, with backticks and a fence that would close a
// code block, mentions that would ping a channel or everyone, a link, and
// a token. The prompt on the platform's wire shows them bounded,
// neutralised and redacted. Then talon run restarts on the same database
// with the approval pending: the prompt is not posted again, its message
// is refreshed, a click on it decides, and the outcome replaces its
// buttons.

const approvalToken = "ghp_Zq8Lw2Nx5Rt7Yv1Bm4Kc6Hd9Fs3Gj0Pa2WeX" // github-classic shape

// hostileHTML is the html argument: everything a prompt must survive.
var hostileHTML = "<p>`x` ``` <!channel> <!everyone> <@U999> @everyone @here <https://evil.example|click me> " +
	approvalToken + " ```</p>" + strings.Repeat("x", 1<<20)

// approvalModel calls html_text with the hostile arguments, then reports
// the tool's result.
func approvalModel(t *testing.T) *llmtest.Server {
	args, _ := json.Marshal(map[string]string{"html": hostileHTML})
	return llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		if strings.HasPrefix(req.System, "You maintain the") {
			return llmtest.Response{Text: "a summary"}
		}
		last := req.Messages[len(req.Messages)-1]
		if last.Role == llm.RoleTool {
			return llmtest.Response{Text: "result: " + last.Content}
		}
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "html_text", Arguments: string(args)}}}
	})
}

// approvalConfig is baseConfig listening on addr, with a tools directory
// where html_text needs approval and a history budget the megabyte call
// fits in.
func approvalConfig(t *testing.T, dir, addr, modelURL string) string {
	t.Helper()
	toolsDir := filepath.Join(dir, "tools")
	if err := os.MkdirAll(toolsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	builtin, err := os.ReadFile("../../sandbox/tools/html_text.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(builtin), "\napproval: never\n") {
		t.Fatal("the built-in html_text manifest has no line \"approval: never\"")
	}
	manifest := strings.Replace(string(builtin), "\napproval: never\n", "\napproval: always\n", 1)
	if err := os.WriteFile(filepath.Join(toolsDir, "html_text.yaml"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	base := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", modelURL), `listen: ""`, "listen: "+addr, 1)
	return strings.Replace(base, "agent:\n", "agent:\n  history_token_budget: 1000000\n", 1) + "sandbox:\n  tools_dir: " + toolsDir + "\n"
}

// checkPromptText fails the test unless text, a prompt as a platform
// shows it, names the tool and the start of the arguments, within limit
// (in runes), with exactly one code block, none of the arguments'
// backticks, mentions or link live, no token, and a note of what was cut.
func checkPromptText(t *testing.T, what, text string, limit int, live *regexp.Regexp) {
	t.Helper()
	if n := utf8.RuneCountInString(text); n > limit {
		t.Errorf("%s: %d characters, over %d", what, n, limit)
	}
	if !strings.Contains(text, "html_text") || !strings.Contains(text, `{"html":"`) {
		t.Errorf("%s does not show the tool and its arguments:\n%.400s", what, text)
	}
	if n := strings.Count(text, "```"); n != 2 {
		t.Errorf("%s: %d fences, want the one code block's 2:\n%.600s", what, n, text)
	}
	if m := live.FindString(text); m != "" {
		t.Errorf("%s carries a live %q:\n%.600s", what, m, text)
	}
	if strings.Contains(text, approvalToken) {
		t.Errorf("%s carries the token", what)
	}
	if !regexp.MustCompile(`… \([0-9,]+ more bytes\)`).MatchString(text) {
		t.Errorf("%s does not say how much of the arguments was left out:\n%.600s", what, text)
	}
}

// signedForm posts an interactivity payload to the events endpoint, signed.
func signedForm(t *testing.T, endpoint, payload string) int {
	t.Helper()
	body := url.Values{"payload": {payload}}.Encode()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", signSlack(testSigningSecret, ts, []byte(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// sectionText is the text of the first section block of a Slack blocks
// form field.
func sectionText(t *testing.T, blocks string) string {
	t.Helper()
	var bs []struct {
		Type string `json:"type"`
		Text struct {
			Text string `json:"text"`
		} `json:"text"`
	}
	if err := json.Unmarshal([]byte(blocks), &bs); err != nil {
		t.Fatalf("blocks: %v", err)
	}
	for _, b := range bs {
		if b.Type == "section" {
			return b.Text.Text
		}
	}
	t.Fatalf("no section block in %.200s", blocks)
	return ""
}

func TestRunSlackApprovalPromptAcrossRestart(t *testing.T) {
	model := approvalModel(t)
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, approvalConfig(t, dir, addr, model.URL)+slackSection("events", fs.url()))
	endpoint := "http://" + addr + "/slack/events"
	var logs syncBuffer

	prompts := func() []url.Values {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var out []url.Values
		for _, p := range fs.posts {
			if strings.Contains(p.Get("blocks"), "talon_approve") {
				out = append(out, p)
			}
		}
		return out
	}
	updates := func() []url.Values {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return append([]url.Values(nil), fs.updates...)
	}
	// Slack reads <…> as a mention, a link or a command, anywhere: escaped
	// text has none but the owner's mention.
	live := regexp.MustCompile("<[^@]|<@U999>|<@[^U]")

	stop := startRunEnv(t, cfg, addr, slackEnv(), &logs)
	event, _ := json.Marshal(map[string]any{
		"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev1", "event_time": time.Now().Unix(),
		"event": map[string]any{"type": "message", "channel": "D1", "channel_type": "im", "user": "U1",
			"ts": "1700000000.000100", "event_ts": "1700000000.000100", "text": "convert this page"},
	})
	if code := postSlackEvent(t, endpoint, testSigningSecret, event); code != http.StatusOK {
		t.Fatalf("event: status %d", code)
	}
	waitUntil(t, func() bool { return len(prompts()) == 1 })
	first := prompts()[0]
	fs.mu.Lock()
	var ts string
	for i, p := range fs.posts {
		if strings.Contains(p.Get("blocks"), "talon_approve") {
			ts = fs.ts(i)
		}
	}
	fs.mu.Unlock()
	for what, text := range map[string]string{"prompt text": first.Get("text"), "prompt section": sectionText(t, first.Get("blocks"))} {
		checkPromptText(t, what, text, 3000, live)
	}
	m := regexp.MustCompile(`"value":"([0-9]+)"`).FindStringSubmatch(first.Get("blocks"))
	if m == nil {
		t.Fatalf("no approval id in the prompt's buttons: %.300s", first.Get("blocks"))
	}
	approval := m[1]
	stop()

	stop = startRunEnv(t, cfg, addr, slackEnv(), &logs)
	defer stop()
	// The resumed turn asks again: in the same message, with live buttons.
	waitUntil(t, func() bool { return len(updates()) >= 1 })
	refresh := updates()[0]
	if refresh.Get("ts") != ts || !strings.Contains(refresh.Get("blocks"), "talon_approve") {
		t.Errorf("after the restart: update of %s with blocks %.200s; want the prompt %s refreshed with its buttons", refresh.Get("ts"), refresh.Get("blocks"), ts)
	}
	// A click on the prompt posted before the restart decides.
	click, _ := json.Marshal(map[string]any{
		"type": "block_actions", "team": map[string]any{"id": "T1"}, "user": map[string]any{"id": "U1", "team_id": "T1"},
		"channel":   map[string]any{"id": "D1"},
		"container": map[string]any{"type": "message", "channel_id": "D1", "message_ts": ts},
		"actions":   []map[string]any{{"action_id": "talon_deny", "block_id": "talon_approval:U1", "value": approval, "type": "button"}},
	})
	if code := signedForm(t, endpoint, string(click)); code != http.StatusOK {
		t.Fatalf("click: status %d", code)
	}
	waitUntil(t, func() bool {
		for _, p := range fs.postedTo("D1") {
			if strings.HasPrefix(p, "result: ") {
				return true
			}
		}
		return false
	})
	ups := updates()
	last := ups[len(ups)-1]
	if last.Get("ts") != ts || strings.Contains(last.Get("blocks"), "talon_approve") || !strings.Contains(last.Get("text"), "Denied by <@U1>") {
		t.Errorf("last update of the prompt: ts %s, text %.300q, blocks %.300s; want the buttons of %s replaced by the outcome",
			last.Get("ts"), last.Get("text"), last.Get("blocks"), ts)
	}
	checkPromptText(t, "outcome", last.Get("text"), 3000, live)
	if n := len(prompts()); n != 1 {
		t.Errorf("%d approval prompts posted, want 1 across the restart", n)
	}
	fs.mu.Lock()
	for _, b := range fs.bodies {
		if strings.Contains(b, approvalToken) {
			t.Error("the token reached Slack")
		}
	}
	fs.mu.Unlock()
	if strings.Contains(logs.String(), approvalToken) || strings.Contains(logs.String(), "evil.example") {
		t.Error("the arguments reached the log")
	}
}

// The same through Discord: a DM from user 7.
func TestRunDiscordApprovalPromptAcrossRestart(t *testing.T) {
	const token = "test-discord-token-not-real"
	model := approvalModel(t)
	f := newFakeDiscordGateway(t, 0)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, approvalConfig(t, dir, addr, model.URL)+
		"discord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: "+f.srv.URL+"\n")
	getenv := testEnv(map[string]string{"DISCORD_BOT_TOKEN": token})
	var logs syncBuffer

	snapshot := func() (prompts, edits, callbacks []discordSent) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.sent {
			switch {
			case s.Edit:
				edits = append(edits, s)
			case strings.Contains(s.Raw, "talon:approve:"):
				prompts = append(prompts, s)
			}
		}
		return prompts, edits, append([]discordSent(nil), f.callbacks...)
	}
	content := func(s discordSent) string {
		if d, ok := s.Body["data"].(map[string]any); ok {
			c, _ := d["content"].(string)
			return c
		}
		c, _ := s.Body["content"].(string)
		return c
	}
	// Discord pings only through allowed_mentions, which are always
	// empty; a fence inside the arguments is what could break the block.
	live := regexp.MustCompile("```[^`]*```[^`]*```")

	stop := startRunEnv(t, cfg, addr, getenv, &logs)
	waitUntil(t, func() bool { return f.sessions() == 1 })
	f.dispatch("MESSAGE_CREATE", discordDM("1000041", "convert this page"))
	waitUntil(t, func() bool { p, _, _ := snapshot(); return len(p) == 1 })
	ps, _, _ := snapshot()
	prompt := ps[0]
	checkPromptText(t, "prompt", content(prompt), 2000, live)
	if am, _ := json.Marshal(prompt.Body["allowed_mentions"]); string(am) != `{"parse":[]}` && !strings.HasPrefix(string(am), `{"parse":[],`) {
		t.Errorf("prompt allowed_mentions = %s, want none", am)
	}
	m := regexp.MustCompile(`talon:approve:([0-9]+)`).FindStringSubmatch(prompt.Raw)
	if m == nil {
		t.Fatal("no approval id in the prompt")
	}
	approval := m[1]
	stop()

	stop = startRunEnv(t, cfg, addr, getenv, &logs)
	defer stop()
	waitUntil(t, func() bool { return f.sessions() == 2 })
	waitUntil(t, func() bool { _, e, _ := snapshot(); return len(e) >= 1 })
	_, edits, _ := snapshot()
	if edits[0].ID != prompt.ID || !strings.Contains(edits[0].Raw, "talon:approve:"+approval) || strings.Contains(edits[0].Raw, `"disabled":true`) {
		t.Errorf("after the restart: edit of %s: %.300s; want the prompt %s refreshed with live buttons", edits[0].ID, edits[0].Raw, prompt.ID)
	}
	f.dispatch("INTERACTION_CREATE", map[string]any{
		"id": "801", "application_id": "200", "type": 3, "token": "tok-801", "channel_id": "400",
		"user":    map[string]any{"id": "7", "username": "u7"},
		"message": map[string]any{"id": prompt.ID, "channel_id": "400", "content": content(prompt)},
		"data":    map[string]any{"custom_id": "talon:deny:" + approval, "component_type": 2},
	})
	waitUntil(t, func() bool {
		for _, p := range f.postsSnapshot() {
			if strings.HasPrefix(p, "400 result: ") {
				return true
			}
		}
		return false
	})
	ps, _, cbs := snapshot()
	if len(ps) != 1 {
		t.Errorf("%d approval prompts posted, want 1 across the restart", len(ps))
	}
	if len(cbs) != 1 || cbs[0].ID != "801" {
		t.Fatalf("interaction answers = %+v, want one to the click", cbs)
	}
	if typ, _ := cbs[0].Body["type"].(float64); typ != 7 || !strings.Contains(content(cbs[0]), "Denied by <@7>") || strings.Contains(cbs[0].Raw, `"disabled":false`) {
		t.Errorf("the click's answer = %.400s; want the prompt updated (type 7) with the outcome and disabled buttons", cbs[0].Raw)
	}
	checkPromptText(t, "outcome", content(cbs[0]), 2000, live)
	if d, _ := cbs[0].Body["data"].(map[string]any); d == nil || !strings.HasPrefix(fmt.Sprint(d["allowed_mentions"]), "map[parse:[]") {
		t.Errorf("the click's answer may ping: %.200s", cbs[0].Raw)
	}
	f.mu.Lock()
	for _, s := range append(append([]discordSent(nil), f.sent...), f.callbacks...) {
		if strings.Contains(s.Raw, approvalToken) {
			t.Error("the token reached Discord")
		}
	}
	f.mu.Unlock()
	if strings.Contains(logs.String(), approvalToken) || strings.Contains(logs.String(), "evil.example") {
		t.Error("the arguments reached the log")
	}
}
