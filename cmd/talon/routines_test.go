package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// fakeClock is the routines' clock in a gateway under test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// routineModel makes a routine when asked in plain words, lists them when
// asked, and answers a routine's run.
func routineModel(req llmtest.Request) llmtest.Response {
	last := req.Messages[len(req.Messages)-1]
	switch {
	case last.Role == llm.RoleTool:
		return llmtest.Response{Text: "Done. " + last.Content}
	case strings.Contains(last.Content, "[Scheduled run of routine"):
		return llmtest.Response{Text: "Open PRs today: none."}
	case strings.Contains(last.Content, "every weekday at 9"):
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "routine_create",
			Arguments: `{"schedule":"0 9 * * 1-5","prompt":"Post the open PRs.","name":"open PRs","destination":"here"}`}}}
	case strings.Contains(last.Content, "my routines"):
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c2", Name: "routine_list", Arguments: `{}`}}}
	}
	return llmtest.Response{Text: "echo: " + last.Content}
}

// Through Slack (events mode, the fake Slack on loopback) with the
// scripted model: a person asks in a channel for a routine in plain words,
// the model makes it with routine_create, lists it with routine_list; at
// 9:00 on the routines' clock its run's answer is posted at the top level
// of that channel. talon routine works beside the running gateway: list,
// run-now (the gateway starts the run), and a routine the operator made
// for a channel the configuration denies is paused at its run, with a
// notice to its owner, and never posts there.
func TestRoutinesThroughSlack(t *testing.T) {
	llmSrv := llmtest.NewServer(t, routineModel)
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1) +
		slackSection("events", fs.url()) + "  denied_channels: [C9]\n"
	cfg := writeConfig(t, dir, body)
	endpoint := "http://" + addr + "/slack/events"
	clk := &fakeClock{t: time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)} // a Monday
	e := env{getenv: slackEnv(), now: clk.Now, routineTick: 20 * time.Millisecond}

	event := func(id, text, ts string) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{
			"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": id, "event_time": time.Now().Unix(),
			"event": map[string]any{"type": "app_mention", "channel": "C1", "user": "U1", "ts": ts, "event_ts": ts, "text": "<@UBOT> " + text},
		})
		if code := postSlackEvent(t, endpoint, testSigningSecret, b); code != http.StatusOK {
			t.Fatalf("event %s: status %d, want 200", id, code)
		}
	}
	posts := func(channel string) []url.Values {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		var out []url.Values
		for _, p := range fs.posts {
			if p.Get("channel") == channel {
				out = append(out, p)
			}
		}
		return out
	}
	cli := func(args ...string) result {
		t.Helper()
		return runMain(t, env{getenv: slackEnv(), now: clk.Now}, append([]string{"routine"}, append(args, "--config", cfg)...)...)
	}

	var stderr syncBuffer
	stopRun := startRunEnvWith(t, cfg, addr, e, &stderr)
	stop := sync.OnceFunc(stopRun)
	defer stop()

	event("Ev1", "every weekday at 9 post the open PRs here", "1700000000.000100")
	waitUntil(t, func() bool { return len(posts("C1")) == 1 })
	if got := posts("C1")[0]; !strings.Contains(got.Get("text"), `Done. Created. Routine 1 "open PRs": 0 9 * * 1-5 (UTC), posted where it was made; next run Mon 2026-06-01 09:00 UTC`) {
		t.Fatalf("answer to the request = %q", got.Get("text"))
	}
	event("Ev2", "what are my routines?", "1700000000.000200")
	waitUntil(t, func() bool { return len(posts("C1")) == 2 })
	if got := posts("C1")[1].Get("text"); !strings.Contains(got, `Routine 1 "open PRs": 0 9 * * 1-5 (UTC)`) {
		t.Errorf("routine_list answer = %q", got)
	}
	if res := cli("list"); res.code != 0 || !strings.Contains(res.stdout, "slack:T1:U1") || !strings.Contains(res.stdout, "cron 0 9 * * 1-5") {
		t.Errorf("talon routine list: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	clk.Set(time.Date(2026, 6, 1, 9, 0, 5, 0, time.UTC))
	waitUntil(t, func() bool { return len(posts("C1")) == 3 })
	run := posts("C1")[2]
	if run.Get("text") != "Open PRs today: none." || run.Get("thread_ts") != "" {
		t.Errorf("the run's post: %q in thread %q; want the answer at the top level of C1", run.Get("text"), run.Get("thread_ts"))
	}
	// The run's request names the routine and carries its prompt.
	var runReq llmtest.Request
	for _, r := range llmSrv.Requests() {
		if strings.Contains(r.LastUserText(), "[Scheduled run of routine 1") {
			runReq = r
		}
	}
	if !strings.Contains(runReq.LastUserText(), "Post the open PRs.") {
		t.Errorf("the run's request: %q", runReq.LastUserText())
	}

	// The operator runs it now from the command line.
	clk.Set(time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC))
	if res := cli("run-now", "1"); res.code != 0 {
		t.Fatalf("talon routine run-now 1: exit %d: %s", res.code, res.stderr)
	}
	waitUntil(t, func() bool { return len(posts("C1")) == 4 })

	// No routine of U1 posts in a channel the configuration denies.
	if res := cli("add", "--user", "slack:T1:U1", "--channel", "C9", "every 10m", "post here"); res.code == 0 ||
		!strings.Contains(res.stderr, "does not answer in this conversation") {
		t.Errorf("talon routine add for the denied channel: exit %d: %s", res.code, res.stderr)
	}
	// A routine whose channel is gone pauses at its run, and its owner is
	// told in their DM.
	if res := cli("add", "--user", "slack:T1:U1", "--channel", "C404", "every 10m", "post here"); res.code != 0 {
		t.Fatalf("talon routine add: exit %d: %s", res.code, res.stderr)
	}
	clk.Set(time.Date(2026, 6, 1, 10, 11, 0, 0, time.UTC))
	waitUntil(t, func() bool { return strings.Contains(cli("list").stdout, "paused: it can no longer post where it did") })
	if got := posts("C404"); len(got) != 0 {
		t.Errorf("posts in the channel that is gone: %v", got)
	}
	waitUntil(t, func() bool { return len(posts("DU1")) == 1 })
	if got := posts("DU1")[0].Get("text"); !strings.Contains(got, `I paused your routine 2 ("post here"): it can no longer post where it did: its channel is gone, or the bot was removed from it. Nothing of it is lost`) {
		t.Errorf("notice in U1's DM: %q", got)
	}
	if res := cli("resume", "2"); res.code == 0 || !strings.Contains(res.stderr, "still cannot post where it did") {
		t.Errorf("resumed a routine whose channel is gone: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// Pause, resume and delete from the command line.
	for _, sub := range []string{"pause", "resume", "rm"} {
		if res := cli(sub, "1"); res.code != 0 {
			t.Errorf("talon routine %s 1: exit %d: %s", sub, res.code, res.stderr)
		}
	}
	if res := cli("list"); strings.Contains(res.stdout, "open PRs") {
		t.Errorf("routine 1 still listed after rm:\n%s", res.stdout)
	}
	stop()
	for _, secret := range []string{testBotToken, testSigningSecret, "Post the open PRs", "Open PRs today"} {
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

// In the terminal, /routine add, /routines and /tz work as on Slack.
func TestRoutineCommandsInChat(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))
	clk := &fakeClock{t: time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)}
	in := "/tz Europe/Paris\n/routine add \"30 8 * * 1\" weekly plan\n/routines\n/routine add every 1m too often\n/help\n"
	res := runMain(t, env{stdin: strings.NewReader(in), now: clk.Now}, "chat", "--config", cfg)
	for _, want := range []string{
		"Your time zone is now Europe/Paris",
		`Created. Routine 1 "weekly plan": 30 8 * * 1 (Europe/Paris), posted where it was made; next run Mon 2026-06-08 08:30 CEST.`,
		"runs of \"every 1m\" would be 1m0s apart; routines run at most every 5m0s",
		"/routines: list your routines",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("chat output lacks %q:\n%s", want, res.stdout)
		}
	}
	if strings.Count(res.stdout, `Routine 1 "weekly plan"`) != 2 {
		t.Errorf("the routine is not listed by /routines:\n%s", res.stdout)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("the commands reached the model %d times", n)
	}
}

// talon routine resume asks Discord, when discord is configured, whether a
// Discord routine may still post where it did, and refuses the resume
// naming what is wrong: a channel the bot no longer sees, an owner who
// left the server, a channel the configuration now denies. Once all is
// well again it resumes.
func TestRoutineResumeChecksDiscord(t *testing.T) {
	var mu sync.Mutex
	channels := map[string]string{} // channel id → JSON; guarded by mu
	members := map[string]bool{}    // user ids in guild 300; guarded by mu
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bot test-discord-token" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"message":"401: Unauthorized","code":0}`)
			return
		}
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v9/"), "/")
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == "GET" && len(parts) == 2 && parts[0] == "channels" && channels[parts[1]] != "":
			fmt.Fprint(w, channels[parts[1]])
			return
		case r.Method == "GET" && len(parts) == 4 && parts[0] == "guilds" && parts[1] == "300" && parts[2] == "members" && members[parts[3]]:
			fmt.Fprintf(w, `{"user":{"id":%q},"roles":[]}`, parts[3])
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"message":"404: Not Found","code":10003}`)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	body := "data_dir: " + filepath.Join(dir, "data") + "\ndiscord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: " + srv.URL +
		"\n  allowed_guilds: [\"300\"]\n  denied_channels: [\"502\"]\n"
	cfg := writeConfig(t, dir, body)
	clk := &fakeClock{t: time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)}
	cli := func(args ...string) result {
		t.Helper()
		return runMain(t, env{getenv: testEnv(map[string]string{"DISCORD_BOT_TOKEN": "test-discord-token"}), now: clk.Now},
			append([]string{"routine"}, append(args, "--config", cfg)...)...)
	}
	for i, ch := range []string{"500", "502"} {
		if res := cli("add", "--user", "discord::7", "--channel", ch, "every 10m", "post here"); res.code != 0 {
			t.Fatalf("talon routine add in %s: exit %d: %s", ch, res.code, res.stderr)
		}
		if res := cli("pause", strconv.Itoa(i+1)); res.code != 0 {
			t.Fatalf("talon routine pause %d: exit %d: %s", i+1, res.code, res.stderr)
		}
	}
	resume := func(id, want string) {
		t.Helper()
		res := cli("resume", id)
		switch {
		case want == "" && res.code != 0:
			t.Errorf("talon routine resume %s: exit %d: %s", id, res.code, res.stderr)
		case want != "" && (res.code == 0 || !strings.Contains(res.stderr, "still cannot post where it did: "+want)):
			t.Errorf("talon routine resume %s: exit %d\n%s%s\nwant the refusal %q", id, res.code, res.stdout, res.stderr, want)
		}
	}
	// The channel is gone (or the bot no longer sees it).
	resume("1", "its channel is gone, or the bot was removed from it")
	// The channel is back, its owner is not in the server.
	mu.Lock()
	channels["500"] = `{"id":"500","guild_id":"300","type":0}`
	channels["502"] = `{"id":"502","guild_id":"300","type":0}`
	mu.Unlock()
	resume("1", "its owner is no longer a member of the server")
	if res := cli("list"); !strings.Contains(res.stdout, "paused") {
		t.Errorf("routine 1 after refused resumes:\n%s", res.stdout)
	}
	mu.Lock()
	members["7"] = true
	mu.Unlock()
	// The configuration denies channel 502.
	resume("2", "the configuration no longer lets its owner use it there")
	resume("1", "")
	if res := cli("list"); !strings.Contains(res.stdout, "active") || strings.Count(res.stdout, "paused:") != 1 {
		t.Errorf("after resuming routine 1 only:\n%s", res.stdout)
	}
}
