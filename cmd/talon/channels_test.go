package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"github.com/talonhq/talon/adapters/discord"
	"github.com/talonhq/talon/adapters/slack"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/cmd/talon/config"
)

// Credentials of the fake Slack workspace: never real, and never expected
// in any output.
const (
	testBotToken      = "xoxb-test-bot-token-not-real"
	testAppToken      = "xapp-test-app-token-not-real"
	testSigningSecret = "test-signing-secret-not-real"
)

func slackEnv() func(string) string {
	return testEnv(map[string]string{
		"SLACK_BOT_TOKEN": testBotToken, "SLACK_APP_TOKEN": testAppToken, "SLACK_SIGNING_SECRET": testSigningSecret,
	})
}

// fakeSlackAPI answers Slack's Web API on 127.0.0.1: auth.test as workspace
// T1 (or with authErr), apps.connections.open, and chat.postMessage, which
// it records.
type fakeSlackAPI struct {
	srv *httptest.Server

	mu       sync.Mutex
	authErr  string       // when set, auth.test answers {"ok":false,"error":authErr}; guarded by mu
	scopes   string       // auth.test's X-OAuth-Scopes; guarded by mu
	posts    []url.Values // chat.postMessage forms; guarded by mu
	postedAt []time.Time  // when each of posts came; guarded by mu
	tokens   []string     // the token of each request (form field or bearer); guarded by mu
	methods  []string     // the methods called; guarded by mu
	updates  []url.Values // chat.update forms; guarded by mu
	bodies   []string     // every request's body; guarded by mu
	// lost: the next chat.postMessage whose text contains it is posted,
	// but its answer never comes; hung then gets its text. Guarded by mu.
	lost string
	hung chan string
	// thread are messages people wrote, each as Slack sends it plus
	// "channel": conversations.replies serves them with the bot's.
	// Guarded by mu.
	thread []map[string]any
	// files: what /files/NAME serves (url_private). unfurl, when set,
	// is called with the text of each chat.postMessage and chat.update
	// that Slack would unfurl (unfurl_links or unfurl_media not "false"),
	// as Slack's servers would fetch its links. Guarded by mu.
	files  map[string]string
	unfurl func(text string)
}

func newFakeSlackAPI(t *testing.T) *fakeSlackAPI {
	t.Helper()
	scopes, err := slack.ManifestScopes()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSlackAPI{scopes: strings.Join(scopes, ","), hung: make(chan string, 1)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSlackAPI) url() string { return f.srv.URL + "/api/" }

func (f *fakeSlackAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	if text := form.Get("text"); r.URL.Path == "/api/chat.postMessage" && f.lost != "" && strings.Contains(text, f.lost) {
		f.lost = ""
		f.posts, f.postedAt = append(f.posts, form), append(f.postedAt, time.Now())
		f.mu.Unlock()
		f.hung <- text
		<-r.Context().Done() // the gateway dies waiting
		return
	}
	defer f.mu.Unlock()
	if name, ok := strings.CutPrefix(r.URL.Path, "/files/"); ok {
		w.Header().Set("Content-Type", "text/csv")
		fmt.Fprint(w, f.files[name])
		return
	}
	if m := strings.TrimPrefix(r.URL.Path, "/api/"); f.unfurl != nil && (m == "chat.postMessage" || m == "chat.update") &&
		(form.Get("unfurl_links") != "false" || form.Get("unfurl_media") != "false") {
		f.unfurl(form.Get("text")) // before the post is answered, so a test need not wait for it
	}
	f.methods = append(f.methods, strings.TrimPrefix(r.URL.Path, "/api/"))
	tok := form.Get("token")
	if tok == "" {
		tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	f.tokens = append(f.tokens, tok)
	f.bodies = append(f.bodies, string(body))
	answer := map[string]any{"ok": true}
	switch strings.TrimPrefix(r.URL.Path, "/api/") {
	case "auth.test":
		if f.authErr != "" {
			answer = map[string]any{"ok": false, "error": f.authErr}
			break
		}
		w.Header().Set("X-OAuth-Scopes", f.scopes)
		answer = map[string]any{"ok": true, "team": "Acme", "team_id": "T1", "user_id": "UBOT", "bot_id": "BBOT", "user": "talon"}
	case "apps.connections.open":
		answer = map[string]any{"ok": true, "url": "ws://127.0.0.1:1/never-dialled"}
	case "chat.postMessage":
		f.posts, f.postedAt = append(f.posts, form), append(f.postedAt, time.Now())
		answer = map[string]any{"ok": true, "channel": form.Get("channel"), "ts": f.ts(len(f.posts) - 1)}
	case "conversations.replies":
		// The bot's messages in the thread, with their metadata when asked.
		var msgs []map[string]any
		for i, p := range f.posts {
			if p.Get("channel") != form.Get("channel") || p.Get("thread_ts") != form.Get("ts") || f.ts(i) < form.Get("oldest") {
				continue
			}
			m := map[string]any{"type": "message", "user": "UBOT", "bot_id": "BBOT", "text": p.Get("text"), "ts": f.ts(i), "thread_ts": p.Get("thread_ts")}
			if md := p.Get("metadata"); md != "" && form.Get("include_all_metadata") == "1" {
				m["metadata"] = json.RawMessage(md)
			}
			msgs = append(msgs, m)
		}
		for _, m := range f.thread {
			if m["channel"] == form.Get("channel") && (m["thread_ts"] == form.Get("ts") || m["ts"] == form.Get("ts")) {
				msgs = append(msgs, m)
			}
		}
		sort.Slice(msgs, func(i, j int) bool { return msgs[i]["ts"].(string) < msgs[j]["ts"].(string) })
		answer = map[string]any{"ok": true, "messages": msgs, "has_more": false}
	case "conversations.history":
		// The bot's messages in the channel (outside threads), newest
		// first as Slack sends them, with their metadata when asked.
		var msgs []map[string]any
		for i := len(f.posts) - 1; i >= 0; i-- {
			p := f.posts[i]
			if p.Get("channel") != form.Get("channel") || p.Get("thread_ts") != "" || f.ts(i) < form.Get("oldest") {
				continue
			}
			m := map[string]any{"type": "message", "user": "UBOT", "bot_id": "BBOT", "text": p.Get("text"), "ts": f.ts(i)}
			if md := p.Get("metadata"); md != "" && form.Get("include_all_metadata") == "1" {
				m["metadata"] = json.RawMessage(md)
			}
			msgs = append(msgs, m)
		}
		answer = map[string]any{"ok": true, "messages": msgs, "has_more": false}
	case "conversations.info":
		if form.Get("channel") == "C404" {
			answer = map[string]any{"ok": false, "error": "channel_not_found"}
		}
	case "conversations.open":
		answer = map[string]any{"ok": true, "channel": map[string]any{"id": "D" + form.Get("users")}}
	case "chat.update":
		f.updates = append(f.updates, form)
		answer = map[string]any{"ok": true, "channel": form.Get("channel"), "ts": form.Get("ts")}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

// ts is the ts of post i: the real second it was posted, as Slack's are.
func (f *fakeSlackAPI) ts(i int) string {
	return fmt.Sprintf("%d.%06d", f.postedAt[i].Unix(), i+1)
}

func (f *fakeSlackAPI) postedTo(channel string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var texts []string
	for _, p := range f.posts {
		if p.Get("channel") == channel {
			texts = append(texts, p.Get("text"))
		}
	}
	return texts
}

// slackSection is a slack: section for the fake at apiURL.
func slackSection(mode, apiURL string) string {
	return fmt.Sprintf(`slack:
  enabled: true
  mode: %s
  bot_token: ${SLACK_BOT_TOKEN}
  app_token: ${SLACK_APP_TOKEN}
  signing_secret: ${SLACK_SIGNING_SECRET}
  api_url: %s
  allowed_teams: [T1]
`, mode, apiURL)
}

func TestRunSlackRejectedBotToken(t *testing.T) {
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	fs := newFakeSlackAPI(t)
	fs.authErr = "invalid_auth"
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL)+slackSection("socket", fs.url()))
	res := runMain(t, env{getenv: slackEnv()}, "run", "--config", cfg)
	if res.code == 0 {
		t.Fatalf("exit 0 with a rejected bot token; stderr:\n%s", res.stderr)
	}
	if !strings.Contains(res.stderr, "slack.bot_token") || !strings.Contains(res.stderr, "invalid_auth") {
		t.Errorf("stderr does not name the Slack bot token and Slack's answer:\n%s", res.stderr)
	}
	if strings.Contains(res.stderr, testBotToken) || strings.Contains(res.stderr, testAppToken) {
		t.Error("stderr shows a token")
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.tokens) == 0 || fs.tokens[0] != testBotToken {
		t.Errorf("auth.test was not called with the configured bot token")
	}
}

// signSlack computes X-Slack-Signature: v0=hex(HMAC-SHA256(secret,
// "v0:"+ts+":"+body)).
func signSlack(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "v0:%s:", ts)
	m.Write(body)
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

func postSlackEvent(t *testing.T, endpoint, secret string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", signSlack(secret, ts, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRunSlackEventsMode boots the gateway with Slack in events mode and
// checks a whole DM: a signed Events API request on the ops listener, the
// model's answer, and the reply posted in the DM.
func TestRunSlackEventsMode(t *testing.T) {
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1) +
		slackSection("events", fs.url()) + "console:\n  enabled: true\n"
	cfg := writeConfig(t, dir, body)

	var stderr syncBuffer
	const consoleToken = "console-token-0123456789"
	getenv := func(k string) string {
		if k == "TALON_CONSOLE_TOKEN" {
			return consoleToken
		}
		return slackEnv()(k)
	}
	stop := startRunEnv(t, cfg, addr, getenv, &stderr)

	// The console's Overview shows what the adapter reports of its
	// connection.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get("http://" + addr + "/console/signin")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field on the sign-in page:\n%s", page)
	}
	resp, err = c.PostForm("http://"+addr+"/console/signin", url.Values{"csrf": {string(m[1])}, "token": {consoleToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitUntil(t, func() bool {
		resp, err := c.Get("http://" + addr + "/console/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		page, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(page), "<td>slack</td><td>receiving events over HTTP</td>")
	})

	event, _ := json.Marshal(map[string]any{
		"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev1", "event_time": time.Now().Unix(),
		"event": map[string]any{"type": "message", "channel": "D1", "channel_type": "im", "user": "U1",
			"ts": "1700000000.000100", "event_ts": "1700000000.000100", "text": "hello gateway: a &lt; b &amp;&amp; <https://x.y/?a=1&amp;b=2>"},
	})
	endpoint := "http://" + addr + "/slack/events"
	if code := postSlackEvent(t, endpoint, "forged-secret", event); code != http.StatusUnauthorized {
		t.Errorf("forged signature: status %d, want 401", code)
	}
	if code := postSlackEvent(t, endpoint, testSigningSecret, event); code != http.StatusOK {
		t.Fatalf("signed event: status %d, want 200; stderr:\n%s", code, stderr.String())
	}
	waitUntil(t, func() bool { return len(fs.postedTo("D1")) > 0 })
	// Slack's wire text reaches the model as typed; the reply is escaped
	// once.
	if diff := cmp.Diff([]string{"echo: hello gateway: a &lt; b &amp;&amp; https://x.y/?a=1&amp;b=2"}, fs.postedTo("D1")); diff != "" {
		t.Errorf("replies in the DM (-want +got):\n%s", diff)
	}
	reqs := llmSrv.Requests()
	if len(reqs) != 1 || reqs[0].LastUserText() != "hello gateway: a < b && https://x.y/?a=1&b=2" {
		t.Errorf("model requests: %d, want 1 carrying the DM as typed", len(reqs))
	}

	stop()
	logs := stderr.String()
	for _, secret := range []string{testBotToken, testSigningSecret, "hello gateway"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain %q", secret)
		}
	}
	// The platform is "platform", never "channel" (a channel id's key).
	if strings.Contains(logs, `"channel":"slack"`) || !strings.Contains(logs, `"platform":"slack"`) {
		t.Errorf("the Slack adapter's lines do not name their platform as platform:\n%s", logs)
	}
}

// TestRunSlackFollowsThreadAcrossRestart boots the gateway (Slack in events
// mode), mentions the bot in a channel, stops the gateway and boots it
// again on the same data directory: a follow-up in the thread, without a
// mention, is answered, because the database remembers the thread.
func TestRunSlackFollowsThreadAcrossRestart(t *testing.T) {
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1) +
		slackSection("events", fs.url())
	cfg := writeConfig(t, dir, body)
	endpoint := "http://" + addr + "/slack/events"

	event := func(id string, ev map[string]any) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{
			"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": id, "event_time": time.Now().Unix(), "event": ev,
		})
		if code := postSlackEvent(t, endpoint, testSigningSecret, b); code != http.StatusOK {
			t.Fatalf("event %s: status %d, want 200", id, code)
		}
	}
	inThread := func() []string {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var texts []string
		for _, p := range fs.posts {
			if p.Get("channel") == "C1" && p.Get("thread_ts") == "1700000000.000100" {
				texts = append(texts, p.Get("text"))
			}
		}
		return texts
	}

	stop := startRunEnv(t, cfg, addr, slackEnv(), io.Discard)
	event("Ev1", map[string]any{"type": "app_mention", "channel": "C1", "user": "U1",
		"ts": "1700000000.000100", "event_ts": "1700000000.000100", "text": "<@UBOT> plan the offsite"})
	waitUntil(t, func() bool { return len(inThread()) == 1 })
	stop()

	stop = startRunEnv(t, cfg, addr, slackEnv(), io.Discard)
	defer stop()
	event("Ev2", map[string]any{"type": "message", "channel": "C1", "channel_type": "channel", "user": "U1",
		"ts": "1700000000.000200", "thread_ts": "1700000000.000100", "event_ts": "1700000000.000200", "text": "and the budget?"})
	waitUntil(t, func() bool { return len(inThread()) == 2 })
	if diff := cmp.Diff([]string{"echo: plan the offsite", "echo: and the budget?"}, inThread()); diff != "" {
		t.Errorf("replies in the thread (-want +got):\n%s", diff)
	}
}

func TestDoctorSlack(t *testing.T) {
	llmSrv := llmtest.NewServer(t, llmtest.Text("ok"))
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	base := baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL)

	cfg := writeConfig(t, dir, base+slackSection("socket", fs.url()))
	res := runMain(t, env{getenv: slackEnv()}, "doctor", "--config", cfg)
	if res.code != 0 {
		t.Errorf("healthy Slack: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{
		"ok    slack bot token: workspace Acme (T1), bot user UBOT",
		"ok    slack scopes: ",
		"ok    slack workspace: T1 is in slack.allowed_teams",
		"ok    slack app token: Socket Mode connections allowed",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, res.stdout)
		}
	}

	// Missing scopes and a workspace not allowlisted.
	fs.mu.Lock()
	fs.scopes = "chat:write"
	fs.mu.Unlock()
	cfg = writeConfig(t, dir, strings.Replace(base+slackSection("socket", fs.url()), "[T1]", "[T2]", 1))
	res = runMain(t, env{getenv: slackEnv()}, "doctor", "--config", cfg)
	if res.code == 0 {
		t.Errorf("doctor passed with missing scopes and another workspace:\n%s", res.stdout)
	}
	for _, want := range []string{"FAIL  slack: the bot token lacks scopes app_mentions:read (mentions in channels are not received); ", "mpim:history (threads in group DMs are not read before answering)", "FAIL  slack: the bot's workspace T1 (Acme) is not in slack.allowed_teams"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, res.stdout)
		}
	}

	// A rejected token.
	fs.mu.Lock()
	fs.authErr = "invalid_auth"
	fs.mu.Unlock()
	res = runMain(t, env{getenv: slackEnv()}, "doctor", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stdout, "FAIL  slack: auth.test with the bot token: invalid_auth; copy the Bot User OAuth Token") {
		t.Errorf("rejected token: exit %d\n%s", res.code, res.stdout)
	}
	if strings.Contains(res.stdout+res.stderr, testBotToken) {
		t.Error("doctor shows the bot token")
	}
}

func TestDiscordInviteURL(t *testing.T) {
	res := runMain(t, env{}, "discord", "invite-url", "--client-id", "123")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	u, err := url.Parse(strings.TrimSpace(res.stdout))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{"host": u.Host, "path": u.Path}
	for k, v := range u.Query() {
		got[k] = strings.Join(v, "|")
	}
	want := map[string]string{
		"host": "discord.com", "path": "/oauth2/authorize",
		"client_id": "123", "permissions": "309237713920", "scope": "bot applications.commands",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("invite URL (-want +got):\n%s", diff)
	}
	if want := strconv.FormatInt(discord.Permissions, 10); got["permissions"] != want {
		t.Errorf("permissions %s, want discord.Permissions %s", got["permissions"], want)
	}

	// Without --client-id: discord.application_id, else a clear error.
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "data_dir: "+filepath.Join(dir, "data")+"\ndiscord:\n  application_id: \"456\"\n")
	if res := runMain(t, env{}, "discord", "invite-url", "--config", cfg); res.code != 0 || !strings.Contains(res.stdout, "client_id=456&") {
		t.Errorf("from application_id: exit %d, %q %s", res.code, res.stdout, res.stderr)
	}
	cfg = writeConfig(t, dir, "data_dir: "+filepath.Join(dir, "data")+"\n")
	if res := runMain(t, env{}, "discord", "invite-url", "--config", cfg); res.code != 1 ||
		!strings.Contains(res.stderr, "discord.token is not configured") || !strings.Contains(res.stderr, "--client-id") {
		t.Errorf("without id or token: exit %d, %s", res.code, res.stderr)
	}

	for _, args := range [][]string{{"discord"}, {"discord", "invite"}, {"discord", "invite-url", "--client-id", "abc"}} {
		if res := runMain(t, env{}, args...); res.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage); stderr %s", args, res.code, res.stderr)
		}
	}
}

func TestChannelConfigErrorsNameTheKeys(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string
	}{
		{"slack without tokens", "slack:\n  enabled: true\n", []string{"slack.bot_token", "slack.app_token", "slack.allowed_teams"}},
		{"slack events without a signing secret", "slack:\n  enabled: true\n  mode: events\n", []string{"slack.bot_token", "slack.signing_secret", "slack.allowed_teams"}},
		{"discord without a token", "discord:\n  enabled: true\n", []string{"discord.token"}},
		{"unknown slack key", "slack:\n  bot-token: x\n", []string{"slack.bot-token: unknown key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeConfig(t, dir, "data_dir: "+filepath.Join(dir, "data")+"\n"+tc.body)
			res := runMain(t, env{}, "run", "--config", cfg)
			if res.code == 0 {
				t.Fatal("exit 0, want failure")
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr does not name %q:\n%s", w, res.stderr)
				}
			}
		})
	}
}

// fakeDiscordREST answers GET /users/@me and GET /oauth2/applications/@me
// for the bot token "test-discord-token"; any other token gets 401.
func fakeDiscordREST(t *testing.T, appFlags int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bot test-discord-token" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"message":"401: Unauthorized","code":0}`)
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/users/@me"):
			fmt.Fprint(w, `{"id":"900","username":"talon","bot":true}`)
		case strings.HasSuffix(r.URL.Path, "/oauth2/applications/@me"):
			fmt.Fprintf(w, `{"id":"901","name":"talon","flags":%d}`, appFlags)
		case strings.HasSuffix(r.URL.Path, "/gateway/bot"):
			fmt.Fprint(w, `{"url":"wss://gateway.example","shards":3,"session_start_limit":{"total":1000,"remaining":1000,"reset_after":0,"max_concurrency":1}}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"404: Not Found","code":0}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestDoctorDiscord(t *testing.T) {
	const intentFlag = 1 << 18 // GATEWAY_MESSAGE_CONTENT
	cases := []struct {
		name           string
		token          string
		messageContent bool
		flags          int
		shards         config.DiscordShards // 0: the default
		shared         bool
		want           []string
	}{
		{
			name: "healthy", token: "test-discord-token", messageContent: true, flags: intentFlag,
			want: []string{
				"ok    discord token: bot talon (900), application 901",
				"ok    discord message content intent: enabled in the Developer Portal",
				"ok    discord invite link: " + discord.InviteURL("901"),
				"ok    discord shards: 1, so 1 (Discord recommends 3; 1 may identify at once); this process connects every shard; below the recommendation",
			},
		},
		{
			name: "auto shards on replicas", token: "test-discord-token", shards: config.ShardsAuto, shared: true,
			want: []string{
				"ok    discord shards: auto, so 3 (Discord recommends 3; 1 may identify at once); the replicas share them through leases in NATS",
			},
		},
		{
			name: "intent not enabled", token: "test-discord-token", messageContent: true,
			want: []string{
				"ok    discord token: bot talon (900), application 901",
				"FAIL  discord: discord.message_content is true but the Message Content intent is not enabled in the Developer Portal",
			},
		},
		{
			name: "rejected token", token: "wrong-token",
			want: []string{"FAIL  discord: discord.token: Discord rejected the token (401)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := fakeDiscordREST(t, tc.flags)
			c := config.Default().Discord
			c.Enabled, c.Token, c.MessageContent = true, config.Secret(tc.token), tc.messageContent
			if tc.shards != 0 {
				c.Shards = tc.shards
			}
			ad := newDiscordAdapter(c)
			ad.APIBase = srv.URL
			var out strings.Builder
			doctorDiscord(context.Background(), c, ad, tc.shared, func(name string, err error, detail string) {
				if err != nil {
					fmt.Fprintf(&out, "FAIL  %s: %v\n", name, err)
					return
				}
				fmt.Fprintf(&out, "ok    %s%s\n", name, detail)
			})
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), tc.token) {
				t.Error("output shows the token")
			}
		})
	}
}

func TestDiscordClientIDFromToken(t *testing.T) {
	srv := fakeDiscordREST(t, 0)
	c := config.Default().Discord
	c.Token = "test-discord-token"
	ad := newDiscordAdapter(c)
	ad.APIBase = srv.URL
	if id, err := discordClientID(context.Background(), c, ad); err != nil || id != "901" {
		t.Errorf("discordClientID = %q, %v; want 901", id, err)
	}
	c.Token = "wrong-token"
	ad = newDiscordAdapter(c)
	ad.APIBase = srv.URL
	if _, err := discordClientID(context.Background(), c, ad); err == nil || !strings.Contains(err.Error(), "discord.token") {
		t.Errorf("rejected token: err = %v, want one naming discord.token", err)
	}
}

// fakeDiscordGateway is Discord on 127.0.0.1, as much of it as a whole
// conversation through talon run needs: GET /api/v9/gateway names its
// socket, which says HELLO and answers an IDENTIFY with READY (or, with
// closeCode, closes the connection with it, as Discord does for an invalid
// token); dispatch sends events; the REST API records posted messages,
// serves a channel's history and accepts the /talon registration.
type fakeDiscordGateway struct {
	srv       *httptest.Server
	closeCode int

	mu         sync.Mutex
	conn       *websocket.Conn     // the current socket; guarded by mu
	wmu        sync.Mutex          // serialises writes to conn
	seq        int64               // guarded by mu
	identifies int                 // guarded by mu
	posts      []string            // "channel content"; guarded by mu
	history    map[string][]string // channel → message JSON, oldest first; guarded by mu
	sent       []discordSent       // messages posted and edited, in full; guarded by mu
	callbacks  []discordSent       // interaction answers; guarded by mu
}

// discordSent is a message body the fake received: posted (Edit false,
// ID the id it was given) or edited (Edit true), or an interaction's
// answer (ID the interaction's).
type discordSent struct {
	Channel, ID string
	Edit        bool
	Raw         string
	Body        map[string]any
}

func newFakeDiscordGateway(t *testing.T, closeCode int) *fakeDiscordGateway {
	t.Helper()
	f := &fakeDiscordGateway{closeCode: closeCode, history: map[string][]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws/", f.socket)
	mux.HandleFunc("/api/v9/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		path := strings.TrimPrefix(r.URL.Path, "/api/v9/")
		parts := strings.Split(path, "/")
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case path == "gateway":
			fmt.Fprintf(w, `{"url":"ws://%s/ws"}`, r.Host)
		case path == "gateway/bot":
			fmt.Fprintf(w, `{"url":"ws://%s/ws","shards":1,"session_start_limit":{"total":1000,"remaining":1000,"reset_after":0,"max_concurrency":1}}`, r.Host)
		case r.Method == "POST" && len(parts) == 3 && parts[0] == "channels" && parts[2] == "messages":
			raw, _ := io.ReadAll(r.Body)
			var body map[string]any
			_ = json.Unmarshal(raw, &body)
			content, _ := body["content"].(string)
			f.posts = append(f.posts, parts[1]+" "+content)
			id := strconv.Itoa(9000 + len(f.posts))
			f.sent = append(f.sent, discordSent{Channel: parts[1], ID: id, Raw: string(raw), Body: body})
			fmt.Fprintf(w, `{"id":%q,"channel_id":%q,"author":{"id":"100","bot":true}}`, id, parts[1])
		case r.Method == "PATCH" && len(parts) == 4 && parts[0] == "channels" && parts[2] == "messages":
			raw, _ := io.ReadAll(r.Body)
			var body map[string]any
			_ = json.Unmarshal(raw, &body)
			f.sent = append(f.sent, discordSent{Channel: parts[1], ID: parts[3], Edit: true, Raw: string(raw), Body: body})
			fmt.Fprintf(w, `{"id":%q,"channel_id":%q,"author":{"id":"100","bot":true}}`, parts[3], parts[1])
		case r.Method == "POST" && len(parts) == 4 && parts[0] == "interactions" && parts[3] == "callback":
			raw, _ := io.ReadAll(r.Body)
			var body map[string]any
			_ = json.Unmarshal(raw, &body)
			f.callbacks = append(f.callbacks, discordSent{ID: parts[1], Raw: string(raw), Body: body})
			w.WriteHeader(http.StatusNoContent)
		case r.Method == "GET" && len(parts) == 3 && parts[0] == "channels" && parts[2] == "messages":
			// Newest first, those after the "after" id (ids of equal length).
			after, hist := r.URL.Query().Get("after"), f.history[parts[1]]
			var out []string
			for i := len(hist) - 1; i >= 0; i-- {
				var m struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal([]byte(hist[i]), &m)
				if m.ID > after {
					out = append(out, hist[i])
				}
			}
			fmt.Fprint(w, "["+strings.Join(out, ",")+"]")
		case parts[0] == "applications":
			if r.Method == "PUT" {
				_, _ = io.Copy(w, r.Body)
				return
			}
			fmt.Fprint(w, "[]")
		case r.Method == "POST" && parts[0] == "channels" && len(parts) == 3 && parts[2] == "typing":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"404: Not Found","code":0}`)
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.mu.Lock()
		if f.conn != nil {
			f.conn.Close()
		}
		f.mu.Unlock()
		f.srv.Close()
	})
	return f
}

func (f *fakeDiscordGateway) socket(w http.ResponseWriter, r *http.Request) {
	c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	f.wmu.Lock()
	err = c.WriteJSON(map[string]any{"op": 10, "d": map[string]any{"heartbeat_interval": 45000}})
	f.wmu.Unlock()
	if err != nil {
		return
	}
	for {
		var fr struct {
			Op int `json:"op"`
		}
		if c.ReadJSON(&fr) != nil {
			return
		}
		switch fr.Op {
		case 1:
			f.wmu.Lock()
			_ = c.WriteJSON(map[string]any{"op": 11})
			f.wmu.Unlock()
		case 2:
			f.mu.Lock()
			f.identifies++
			if f.closeCode != 0 {
				f.mu.Unlock()
				f.wmu.Lock()
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(f.closeCode, "Authentication failed."))
				f.wmu.Unlock()
				return
			}
			f.conn = c
			f.mu.Unlock()
			f.dispatch("READY", map[string]any{"v": 9, "session_id": "s", "user": map[string]any{"id": "100", "username": "talon", "bot": true},
				"application": map[string]any{"id": "200"}, "guilds": []any{}})
		}
	}
}

// dispatch sends an event on the current socket.
func (f *fakeDiscordGateway) dispatch(typ string, data any) {
	f.mu.Lock()
	c := f.conn
	f.seq++
	s := f.seq
	f.mu.Unlock()
	if c == nil {
		return
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	_ = c.WriteJSON(map[string]any{"op": 0, "t": typ, "s": s, "d": data})
}

func (f *fakeDiscordGateway) sessions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.identifies
}

func (f *fakeDiscordGateway) postsSnapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.posts...)
}

// discordDM is a DM from user 7 as the gateway and the REST API send it.
func discordDM(id, text string) map[string]any {
	return map[string]any{"id": id, "channel_id": "400", "content": text, "type": 0,
		"timestamp": time.Now().UTC().Format(time.RFC3339Nano), "author": map[string]any{"id": "7", "username": "u7"}}
}

// TestRunDiscordAnswersMessagesSentWhileStopped: through talon run, a DM
// sent to the bot while the gateway was stopped is answered, once, after
// the next start: the database remembers the channel to read back.
func TestRunDiscordAnswersMessagesSentWhileStopped(t *testing.T) {
	const token = "test-discord-token-not-real"
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	f := newFakeDiscordGateway(t, 0)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1)+
		"discord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: "+f.srv.URL+"\n")
	getenv := testEnv(map[string]string{"DISCORD_BOT_TOKEN": token})

	stop := startRunEnv(t, cfg, addr, getenv, io.Discard)
	waitUntil(t, func() bool { return f.sessions() == 1 })
	hello := discordDM("1000041", "hello")
	f.dispatch("MESSAGE_CREATE", hello)
	waitUntil(t, func() bool { return len(f.postsSnapshot()) == 1 })
	stop()

	missed := discordDM("1000042", "sent while stopped")
	h, _ := json.Marshal(hello)
	m, _ := json.Marshal(missed)
	f.mu.Lock()
	f.history["400"] = []string{string(h), string(m)}
	f.mu.Unlock()

	stop = startRunEnv(t, cfg, addr, getenv, io.Discard)
	defer stop()
	waitUntil(t, func() bool { return len(f.postsSnapshot()) >= 2 })
	f.dispatch("MESSAGE_CREATE", discordDM("1000043", "after"))
	waitUntil(t, func() bool { return len(f.postsSnapshot()) >= 3 })
	if diff := cmp.Diff([]string{"400 echo: hello", "400 echo: sent while stopped", "400 echo: after"}, f.postsSnapshot()); diff != "" {
		t.Errorf("posts (-want +got):\n%s", diff)
	}
}

// TestRunDiscordRejectedTokenExits: Discord closing the gateway with 4004
// stops talon run with a non-zero exit, the fix named on stderr and in a
// log line at error, after one IDENTIFY.
func TestRunDiscordRejectedTokenExits(t *testing.T) {
	const token = "test-discord-token-not-real"
	llmSrv := llmtest.NewServer(t, llmtest.Echo())
	f := newFakeDiscordGateway(t, 4004)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL)+
		"discord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: "+f.srv.URL+"\n")
	res := runMain(t, env{getenv: testEnv(map[string]string{"DISCORD_BOT_TOKEN": token})}, "run", "--config", cfg)
	if res.code == 0 {
		t.Fatalf("exit 0 after Discord rejected the token; stderr:\n%s", res.stderr)
	}
	const fix = "reset it in the Developer Portal (Bot → Reset Token) and set DISCORD_BOT_TOKEN"
	logged := false
	for _, line := range strings.Split(res.stderr, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["level"] == "error" && m["platform"] == "discord" && strings.Contains(fmt.Sprint(m["error"]), fix) {
			logged = true
		}
		if _, ok := m["channel"]; ok {
			t.Errorf("log line with a \"channel\" key: %s", line)
		}
	}
	if !logged || !strings.Contains(res.stderr, "4004") {
		t.Errorf("stderr does not log the 4004 and its fix at error, with platform discord:\n%s", res.stderr)
	}
	if strings.Contains(res.stderr, token) {
		t.Error("stderr shows the token")
	}
	if n := f.sessions(); n != 1 {
		t.Errorf("%d IDENTIFYs, want 1 (stopped at the fatal close)", n)
	}
}
