package main

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// The memory on PostgreSQL, through talon chat with the scripted model:
// what alice asks the model to remember is found in a new session of a
// new process, never by bob; talon memory lists, exports and deletes it
// from PostgreSQL, and no SQLite file is made.
func TestMemoryOnPostgres(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	srv := llmtest.NewServer(t, rememberer)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	base := baseConfig(data, "openai", srv.URL) + "store:\n  driver: postgres\n  url: ${DATABASE_URL}\n"
	cfgFor := func(user string) string {
		if err := os.MkdirAll(filepath.Join(dir, user), 0o700); err != nil {
			t.Fatal(err)
		}
		return writeConfig(t, filepath.Join(dir, user), base+"terminal:\n  user: "+user+"\n")
	}
	alice, bob := cfgFor("alice"), cfgFor("bob")
	e := func(stdin string) env {
		return env{getenv: testEnv(map[string]string{"DATABASE_URL": dbURL}), stdin: strings.NewReader(stdin), tools: calcTools{}}
	}
	chat := func(cfg, input string) string {
		t.Helper()
		res := runMain(t, e(input), "chat", "--config", cfg)
		if res.code != 0 {
			t.Fatalf("chat exit %d; stderr:\n%s", res.code, res.stderr)
		}
		return res.stdout
	}

	if out := chat(alice, "remember Our staging host is staging-7.internal\n"); out != "tool said: Saved as #1 in your memory.\n" {
		t.Fatalf("save: %q", out)
	}
	out := chat(alice, "/new\nrecall staging hosts\n/memory\n")
	if !strings.Contains(out, "> Our staging host is staging-7.internal\n") || !strings.Contains(out, "What I remember for you") {
		t.Errorf("search in a new session of a new process:\n%s", out)
	}
	out = chat(bob, "recall staging\nforget 1\n")
	if strings.Contains(out, "staging-7") || !strings.Contains(out, "There is no entry #1 that this user may forget") {
		t.Errorf("bob's chat:\n%s", out)
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM memories WHERE space = 'user:terminal::alice'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("alice's entries in PostgreSQL: %d, %v; want 1", n, err)
	}

	res := runMain(t, e(""), "memory", "list", "--user", "terminal::alice", "--config", alice)
	if res.code != 0 || !strings.Contains(res.stdout, "Our staging host is staging-7.internal") {
		t.Errorf("memory list --user: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runMain(t, e(""), "memory", "export", "--user", "terminal::alice", "--config", alice)
	var exp struct {
		Entries []struct {
			ID   int64  `json:"id"`
			Text string `json:"text"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &exp); err != nil || res.code != 0 || len(exp.Entries) != 1 ||
		exp.Entries[0].ID != 1 || exp.Entries[0].Text != "Our staging host is staging-7.internal" {
		t.Errorf("memory export: exit %d, %v, %+v\n%s", res.code, err, exp, res.stderr)
	}
	res = runMain(t, e(""), "memory", "rm", "1", "--config", alice)
	if res.code != 0 || !strings.Contains(res.stdout, "removed #1 of user:terminal::alice") {
		t.Errorf("memory rm 1: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if out := chat(alice, "recall staging\n"); strings.Contains(out, "staging-7") {
		t.Errorf("found after talon memory rm:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(data, "talon.db")); !os.IsNotExist(err) {
		t.Errorf("an SQLite file was made in the data directory: %v", err)
	}
}

// A routine on PostgreSQL, through Slack (events mode, the fake Slack on
// loopback) and talon run: the operator adds it with talon routine beside
// the running gateway; at its time on the routines' clock it runs once,
// and its answer is posted in its channel; a run-now runs once more; the
// runs are recorded in PostgreSQL.
func TestRoutineOnPostgres(t *testing.T) {
	dbURL, pool := postgresSchema(t)
	llmSrv := llmtest.NewServer(t, routineModel)
	fs := newFakeSlackAPI(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	body := strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", llmSrv.URL), `listen: ""`, "listen: "+addr, 1) +
		slackSection("events", fs.url()) + "store:\n  driver: postgres\n  url: ${DATABASE_URL}\n"
	cfg := writeConfig(t, dir, body)
	vars := testEnv(map[string]string{"DATABASE_URL": dbURL})
	getenv := func(k string) string {
		if v := vars(k); v != "" {
			return v
		}
		return slackEnv()(k)
	}
	clk := &fakeClock{t: time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)}
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
		return runMain(t, env{getenv: getenv, now: clk.Now}, append([]string{"routine"}, append(args, "--config", cfg)...)...)
	}
	runs := func(state string) int {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM routine_runs WHERE state = $1`, state).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	var stderr syncBuffer
	stop := sync.OnceFunc(startRunEnvWith(t, cfg, addr, env{getenv: getenv, now: clk.Now, routineTick: 20 * time.Millisecond}, &stderr))
	defer stop()

	if res := cli("add", "--user", "slack:T1:U1", "--channel", "C1", "--name", "open PRs", "every 1h", "Post the open PRs."); res.code != 0 ||
		!strings.Contains(res.stdout, "Created.") {
		t.Fatalf("talon routine add: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := cli("list"); res.code != 0 || !strings.Contains(res.stdout, "slack:T1:U1") || !strings.Contains(res.stdout, "2026-06-01 09:00") {
		t.Errorf("talon routine list: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	clk.Set(time.Date(2026, 6, 1, 9, 0, 5, 0, time.UTC))
	waitUntil(t, func() bool { return len(posts("C1")) == 1 && runs("done") == 1 })
	if got := posts("C1")[0]; got.Get("text") != "Open PRs today: none." || got.Get("thread_ts") != "" {
		t.Errorf("the run's post: %q in thread %q; want the answer at the top level of C1", got.Get("text"), got.Get("thread_ts"))
	}
	// Later in the same hour the scheduler runs nothing; the operator's
	// run-now runs once.
	clk.Set(time.Date(2026, 6, 1, 9, 30, 0, 0, time.UTC))
	if res := cli("run-now", "1"); res.code != 0 {
		t.Fatalf("talon routine run-now 1: exit %d: %s", res.code, res.stderr)
	}
	waitUntil(t, func() bool { return len(posts("C1")) == 2 && runs("done") == 2 })
	var asked int
	for _, r := range llmSrv.Requests() {
		if r.Messages[len(r.Messages)-1].Role != llm.RoleTool && strings.Contains(r.LastUserText(), "[Scheduled run of routine 1") {
			asked++
		}
	}
	if asked != 2 || runs("started") != 0 {
		t.Errorf("the model was asked for %d runs, %d runs still open; want 2 and 0", asked, runs("started"))
	}
	if res := cli("pause", "1"); res.code != 0 {
		t.Errorf("talon routine pause 1: exit %d: %s", res.code, res.stderr)
	}
	if res := cli("list"); !strings.Contains(res.stdout, "paused") || !strings.Contains(res.stdout, "done") {
		t.Errorf("talon routine list after pause:\n%s", res.stdout)
	}
	stop()
	if len(posts("C1")) != 2 {
		t.Errorf("%d posts in C1, want 2", len(posts("C1")))
	}
	for _, secret := range []string{testBotToken, "Post the open PRs", "Open PRs today"} {
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}
