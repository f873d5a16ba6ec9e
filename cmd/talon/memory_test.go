package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/cmd/talon/config"
)

// rememberer is the fake model's script for memory: "remember [channel]
// TEXT" calls memory_save, "recall WORDS" memory_search, "forget N"
// memory_forget; a tool's result is answered with "tool said: " and the
// result; anything else is echoed.
func rememberer(req llmtest.Request) llmtest.Response {
	last := req.Messages[len(req.Messages)-1]
	if last.Role == llm.RoleTool {
		return llmtest.Response{Text: "tool said: " + last.Content}
	}
	text := last.Content
	if i := strings.LastIndex(text, "The user's message:\n"); i >= 0 {
		text = text[i+len("The user's message:\n"):]
	}
	call := func(name string, args any) llmtest.Response {
		b, _ := json.Marshal(args)
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_1", Name: name, Arguments: string(b)}}}
	}
	switch {
	case strings.HasPrefix(text, "remember channel "):
		return call("memory_save", map[string]any{"text": strings.TrimPrefix(text, "remember channel "), "scope": "channel"})
	case strings.HasPrefix(text, "remember "):
		return call("memory_save", map[string]any{"text": strings.TrimPrefix(text, "remember ")})
	case strings.HasPrefix(text, "recall"):
		return call("memory_search", map[string]any{"query": strings.TrimSpace(strings.TrimPrefix(text, "recall"))})
	case strings.HasPrefix(text, "forget "):
		var id int
		fmt.Sscanf(text, "forget %d", &id)
		return call("memory_forget", map[string]any{"id": id})
	}
	return llmtest.Response{Text: "echo: " + text}
}

// TestChatMemoryAcrossSessionsRestartsAndUsers: what alice asks the model
// to remember is found in a new session after a restart, listed by
// /memory, invisible to bob (by search, by number, by /memory rm), and
// the operator's commands list, export and delete it.
func TestChatMemoryAcrossSessionsRestartsAndUsers(t *testing.T) {
	srv := llmtest.NewServer(t, rememberer)
	dir := t.TempDir()
	base := baseConfig(filepath.Join(dir, "data"), "openai", srv.URL)
	cfgFor := func(user string) string {
		if err := os.MkdirAll(filepath.Join(dir, user), 0o700); err != nil {
			t.Fatal(err)
		}
		return writeConfig(t, filepath.Join(dir, user), base+"terminal:\n  user: "+user+"\n")
	}
	alice, bob := cfgFor("alice"), cfgFor("bob")
	chat := func(cfg, input string) string {
		t.Helper()
		res := runMain(t, env{stdin: strings.NewReader(input), tools: calcTools{}}, "chat", "--config", cfg)
		if res.code != 0 {
			t.Fatalf("chat exit %d; stderr:\n%s", res.code, res.stderr)
		}
		if strings.Contains(res.stderr, "staging-7") {
			t.Errorf("the logs hold a memory's text:\n%s", res.stderr)
		}
		return res.stdout
	}

	out := chat(alice, "remember Our staging host is staging-7.internal\n")
	if want := "tool said: Saved as #1 in your memory.\n"; out != want {
		t.Fatalf("save: got %q, want %q", out, want)
	}
	// A restart, a fresh session: found.
	out = chat(alice, "/new\nrecall staging hosts\n/memory\n")
	if !strings.Contains(out, "> Our staging host is staging-7.internal\n") || !strings.Contains(out, "not instructions") {
		t.Errorf("search after a restart and /new:\n%s", out)
	}
	if !strings.Contains(out, "#1 ") || !strings.Contains(out, "What I remember for you") || !strings.Contains(out, "/memory rm ID") {
		t.Errorf("/memory:\n%s", out)
	}
	// The model saw the memory as a tool result, and no instruction.
	last := srv.Requests()[len(srv.Requests())-1]
	if !strings.Contains(string(last.Raw), "staging-7.internal") || strings.Contains(last.System, "staging-7") {
		t.Error("the memory did not reach the model as a tool result only")
	}

	// Bob: nothing found, nothing forgotten.
	out = chat(bob, "recall staging\nrecall\nforget 1\n/memory rm 1\n/memory\n")
	if strings.Contains(out, "staging-7") {
		t.Errorf("bob reads alice's memory:\n%s", out)
	}
	for _, want := range []string{"No memory entries found for \"staging\"", "There is no entry #1 that this user may forget", "There is no entry #1 that you may delete", "Your memory is empty"} {
		if !strings.Contains(out, want) {
			t.Errorf("bob's chat does not say %q:\n%s", want, out)
		}
	}
	if out := chat(alice, "recall staging\n"); !strings.Contains(out, "staging-7") {
		t.Errorf("alice's entry is gone after bob's attempts:\n%s", out)
	}
	// FTS5 syntax and invalid UTF-8 in a search are words, never errors.
	out = chat(alice, "recall \"staging\" OR text: NEAR(host *) tag: *\nrecall staging \xff\xfehost\nremember caf\xe9 at 9\n")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "tool said: No memory entries found") || strings.Contains(strings.ToLower(out), "sql") ||
		strings.Contains(out, "fts5") || strings.Contains(out, "(ref ") || !strings.Contains(out, "> Our staging host is staging-7.internal") ||
		!strings.Contains(out, "Saved as #2") {
		t.Errorf("searches with query syntax and invalid UTF-8:\n%s", out)
	}

	// The operator.
	res := runMain(t, env{}, "memory", "list", "--config", alice)
	if res.code != 0 || !strings.Contains(res.stdout, "user:terminal::alice") || !strings.Contains(res.stdout, "1") {
		t.Errorf("memory list: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runMain(t, env{}, "memory", "list", "--user", "terminal::alice", "--config", alice)
	if res.code != 0 || !strings.Contains(res.stdout, "Our staging host is staging-7.internal") {
		t.Errorf("memory list --user: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runMain(t, env{}, "memory", "export", "--user", "terminal::alice", "--config", alice)
	var exp struct {
		User    string `json:"user"`
		Entries []struct {
			ID      int64     `json:"id"`
			Memory  string    `json:"memory"`
			Author  string    `json:"author"`
			Text    string    `json:"text"`
			SavedAt time.Time `json:"saved_at"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &exp); err != nil || res.code != 0 {
		t.Fatalf("memory export: exit %d, %v\n%s%s", res.code, err, res.stdout, res.stderr)
	}
	if exp.User != "terminal::alice" || len(exp.Entries) != 2 || exp.Entries[0].Text != "Our staging host is staging-7.internal" ||
		exp.Entries[1].Text != "caf\uFFFD at 9" ||
		exp.Entries[0].Author != "terminal::alice" || exp.Entries[0].SavedAt.IsZero() {
		t.Errorf("export: %+v", exp)
	}
	res = runMain(t, env{}, "memory", "export", "--user", "terminal::bob", "--config", alice)
	if res.code != 0 || !strings.Contains(res.stdout, `"entries": []`) {
		t.Errorf("bob's export: exit %d\n%s", res.code, res.stdout)
	}
	for _, args := range [][]string{{"memory"}, {"memory", "export"}, {"memory", "rm"}, {"memory", "rm", "x"}, {"memory", "list", "--user", "bob"}, {"memory", "frob"}} {
		if res := runMain(t, env{}, append(args, "--config", alice)...); res.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, res.code)
		}
	}
	res = runMain(t, env{}, "memory", "rm", "1", "99", "--config", alice)
	if res.code != 1 || !strings.Contains(res.stdout, "removed #1 of user:terminal::alice") || !strings.Contains(res.stderr, "no entry #99") {
		t.Errorf("memory rm 1 99: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if out := chat(alice, "recall staging\n"); strings.Contains(out, "staging-7") {
		t.Errorf("found after talon memory rm:\n%s", out)
	}
	// Alice deletes her own entry with /memory rm; /help names the
	// commands.
	out = chat(alice, "remember Lunch is at noon\n/memory rm 3\nrecall lunch\n/help\n")
	for _, want := range []string{"Saved as #3", "Deleted entry #3: I no longer remember it.", "No memory entries found for \"lunch\"", "/memory rm ID: make me forget"} {
		if !strings.Contains(out, want) {
			t.Errorf("alice's chat does not say %q:\n%s", want, out)
		}
	}
	// With memory.enabled false: no tools, no /memory in the help.
	off := writeConfig(t, filepath.Join(dir, "alice"), base+"terminal:\n  user: alice\nmemory:\n  enabled: false\n")
	out = chat(off, "/memory\n/help\n/tools\n")
	if !strings.Contains(out, "Memory is not enabled on this gateway.") || strings.Contains(out, "/memory rm") || strings.Contains(out, "memory_save") {
		t.Errorf("memory disabled:\n%s", out)
	}
}

// TestChatMemoryRefusesSecrets: a user's vault value (redacted from the
// message before the model sees it), a well-known token format and a
// credential of the configuration are refused with a message saying why,
// and never stored.
func TestChatMemoryRefusesSecrets(t *testing.T) {
	srv := llmtest.NewServer(t, rememberer)
	dir := t.TempDir()
	const (
		vaultValue   = "vault-value-9f8e7d6c5b4a"
		consoleToken = "correct-horse-battery-staple-42"
		ghToken      = "ghp_0123456789abcdefghijABCDEFGHIJ012345"
	)
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))
	getenv := testEnv(map[string]string{"TALON_CONSOLE_TOKEN": consoleToken})
	if res := runMain(t, env{stdin: strings.NewReader(vaultValue + "\n"), getenv: getenv}, "vault", "set", "--user", "terminal::local", "api", "--host", "api.example.com", "--config", cfg); res.code != 0 {
		t.Fatalf("vault set: %d %s", res.code, res.stderr)
	}
	in := "remember my api key is " + vaultValue + "\nremember the CI token " + ghToken + "\nremember the console password " + consoleToken + "\nremember lunch is at noon\n"
	res := runMain(t, env{stdin: strings.NewReader(in), getenv: getenv, tools: calcTools{}}, "chat", "--config", cfg)
	if res.code != 0 {
		t.Fatalf("chat: exit %d\n%s", res.code, res.stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	var refusals []string
	for _, l := range lines {
		if strings.Contains(l, "Not saved: the text holds what looks like a secret") {
			refusals = append(refusals, l)
		}
	}
	if len(refusals) != 3 || !strings.Contains(res.stdout, "Saved as #1 in your memory") {
		t.Fatalf("want three refusals and one save:\n%s", res.stdout)
	}
	for _, secret := range []string{vaultValue, ghToken, consoleToken} {
		if strings.Contains(res.stdout, secret) || strings.Contains(res.stderr, secret) {
			t.Errorf("the output holds the secret %q", secret)
		}
	}
	out := runMain(t, env{getenv: getenv}, "memory", "export", "--user", "terminal::local", "--config", cfg).stdout
	if strings.Count(out, `"id"`) != 1 || !strings.Contains(out, "lunch is at noon") {
		t.Errorf("stored:\n%s", out)
	}
}

// TestSlackChannelMemory: in a Slack channel, a writer saves to the
// channel's memory; another member finds it (and their turn is tainted by
// it) but can neither save to it nor forget it.
func TestSlackChannelMemory(t *testing.T) {
	llmSrv := llmtest.NewServer(t, rememberer)
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1) +
		slackSection("events", fs.url()) + "memory:\n  channel_writers:\n    slack:C1: [slack:T1:U1]\n"
	cfg := writeConfig(t, dir, body)
	stop := startRunEnv(t, cfg, addr, slackEnv(), io.Discard)
	defer stop()
	endpoint := "http://" + addr + "/slack/events"
	n := 0
	mention := func(user, text string) string {
		t.Helper()
		n++
		ts := fmt.Sprintf("1700000%03d.000100", n)
		b, _ := json.Marshal(map[string]any{
			"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": fmt.Sprintf("Ev%d", n), "event_time": time.Now().Unix(),
			"event": map[string]any{"type": "app_mention", "channel": "C1", "user": user, "ts": ts, "event_ts": ts, "text": "<@UBOT> " + text},
		})
		before := len(fs.postedTo("C1"))
		if code := postSlackEvent(t, endpoint, testSigningSecret, b); code != http.StatusOK {
			t.Fatalf("event: status %d", code)
		}
		waitUntil(t, func() bool { return len(fs.postedTo("C1")) > before })
		posts := fs.postedTo("C1")
		return posts[len(posts)-1]
	}
	if got := mention("U1", "remember channel Deploys freeze on Fridays"); !strings.Contains(got, "Saved as #1 in this channel") {
		t.Fatalf("writer's save: %q", got)
	}
	got := mention("U2", "recall deploys friday")
	if !strings.Contains(got, "Deploys freeze on Fridays") || !strings.Contains(got, "by slack:T1:U1") {
		t.Errorf("member's search: %q", got)
	}
	// The member's turn that read the writer's words is tainted by them.
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "data", "talon.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var taint string
	if err := raw.QueryRow(`SELECT taint FROM turns ORDER BY id DESC LIMIT 1`).Scan(&taint); err != nil || taint != "tool memory_search: memory #1, written by slack:T1:U1" {
		t.Errorf("the member's turn's taint: %q, %v", taint, err)
	}
	if got := mention("U2", "remember channel Deploys are fine on Fridays"); !strings.Contains(got, "only this channel") {
		t.Errorf("non-writer's save: %q", got)
	}
	if got := mention("U2", "forget 1"); !strings.Contains(got, "no entry #1") {
		t.Errorf("non-writer's forget: %q", got)
	}
	if got := mention("U2", "recall Fridays"); strings.Count(got, "Deploys") != 1 {
		t.Errorf("after the non-writer's attempts: %q", got)
	}
}

// Every credential of the configuration is one memory refuses: each
// config.Secret field, wherever it is (maps and lists included), and the
// environment's credentials.
func TestConfigSecretValuesFindsEveryCredential(t *testing.T) {
	cfg := config.Default()
	cfg.LLM.APIKey = "llm-key-0123456789"
	cfg.LLM.Headers = map[string]config.Secret{"X-Org": "org-header-secret-99"}
	cfg.Slack.BotToken = "xoxb-bot-token-not-real-1"
	cfg.Discord.Token = "discord-token-not-real-22"
	a := &app{cfg: &cfg, env: env{getenv: testEnv(map[string]string{"TALON_CONSOLE_TOKEN": "console-token-333333", "TALON_VAULT_KEY": "vault-key-base64-4444"})}}
	got := map[string]bool{}
	for _, v := range a.configSecretValues() {
		got[string(v)] = true
	}
	for _, want := range []string{"llm-key-0123456789", "org-header-secret-99", "xoxb-bot-token-not-real-1", "discord-token-not-real-22", "console-token-333333", "vault-key-base64-4444"} {
		if !got[want] {
			t.Errorf("configSecretValues misses %q", want)
		}
	}
	names := map[string]string{}
	a.eachConfigSecret(func(name, v string) { names[name] = v })
	for name, want := range map[string]string{"llm.api_key": "llm-key-0123456789", "llm.headers.X-Org": "org-header-secret-99",
		"slack.bot_token": "xoxb-bot-token-not-real-1", "discord.token": "discord-token-not-real-22", "TALON_VAULT_KEY": "vault-key-base64-4444"} {
		if names[name] != want {
			t.Errorf("eachConfigSecret names %q for %q; all names: %v", names[name], name, slices.Collect(maps.Keys(names)))
		}
	}
}

// A configuration credential under 8 bytes (a local server's "x") is
// accepted, and the operator is told by name, never by value, that it is
// redacted only as a whole word and not looked for in chat text; a real
// one raises no warning. The chat still works with it.
func TestShortConfigSecretWarned(t *testing.T) {
	for _, tc := range []struct {
		key  string
		warn bool
	}{{"x", true}, {"sk-test-0123456789", false}} {
		t.Run(tc.key, func(t *testing.T) {
			srv := llmtest.NewServer(t, llmtest.Echo())
			e := env{stdin: strings.NewReader("an example\n"), getenv: testEnv(map[string]string{
				"OPENAI_BASE_URL": srv.URL, "OPENAI_API_KEY": tc.key, "TALON_DATA_DIR": t.TempDir(),
			})}
			res := runMain(t, e, "chat")
			if res.code != 0 || res.stdout != "echo: an example\n" {
				t.Fatalf("exit %d stdout %q stderr %s", res.code, res.stdout, res.stderr)
			}
			warned := strings.Contains(res.stderr, "too few to be told from ordinary text") && strings.Contains(res.stderr, "llm.api_key")
			if warned != tc.warn {
				t.Errorf("warned about llm.api_key: %v, want %v; stderr:\n%s", warned, tc.warn, res.stderr)
			}
		})
	}
}
