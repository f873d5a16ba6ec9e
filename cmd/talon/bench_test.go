package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

func TestBenchReportsJSON(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		want      int
		toolCalls int64
	}{
		{"no tools", []string{"--users", "20", "--messages", "3", "--concurrency", "10"}, 60, 0},
		{"every turn calls a sandboxed tool", []string{"--users", "2", "--messages", "2", "--tool-share", "1"}, 4, 4},
		{"half the turns call it", []string{"--users", "2", "--messages", "2", "--tool-share", "0.5"}, 4, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runMain(t, env{}, append([]string{"bench", "--json", "--data-dir", t.TempDir()}, tc.args...)...)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			var got benchResult
			if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
				t.Fatalf("output is not one JSON object: %v\n%s", err, res.stdout)
			}
			if got.Turns != tc.want || got.Errors != 0 || got.TurnsPerSec <= 0 || got.DBBytes <= 0 || got.PeakRSSBytes <= 0 {
				t.Errorf("result: %+v; want %d turns and no errors", got, tc.want)
			}
			if got.ToolCalls != tc.toolCalls {
				t.Errorf("tool calls: got %d, want %d", got.ToolCalls, tc.toolCalls)
			}
			if got.OverheadMS.P50 > got.OverheadMS.P99 {
				t.Errorf("percentiles out of order: %+v", got.OverheadMS)
			}
		})
	}
}

// With --llm-url the endpoint's model is asked for the tool in the share of
// turns --tool-share says, in the prompt and by tool_choice in the turn's
// first request, and the calls it makes run in the sandbox and are counted.
// An endpoint that ignores tool_choice, or refuses it, is reported on stderr
// and in the JSON, not passed off as a tool run.
func TestBenchDrivesToolsThroughEndpoint(t *testing.T) {
	call := llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "html_text", Arguments: `{"html":"<p>Hi &amp; bye</p>"}`}}}
	// forced calls the tool when, and only when, tool_choice forces it.
	forced := func(r llmtest.Request) llmtest.Response {
		if r.ToolChoice == "html_text" && slices.Contains(r.Tools, "html_text") {
			return call
		}
		return llmtest.Response{Text: "done"}
	}
	ignores := func(llmtest.Request) llmtest.Response { return llmtest.Response{Text: "no"} }
	// refuses answers 400 to any tool_choice, as some servers do, and
	// follows the prompt otherwise.
	refuses := func(r llmtest.Request) llmtest.Response {
		if r.ToolChoice != "" {
			return llmtest.Response{Status: 400}
		}
		if last := r.Messages[len(r.Messages)-1]; last.Role == llm.RoleUser && strings.Contains(last.Content, "Call the html_text tool") {
			return call
		}
		return llmtest.Response{Text: "done"}
	}
	for _, tc := range []struct {
		name                     string
		model                    llmtest.Handler
		share                    string
		calls, asks              int64
		forced, ignored, refused int64
		warn                     []string
	}{
		{"tool_choice makes the model call the tool", forced, "1", 4, 4, 4, 0, 0, nil},
		{"half the turns ask", forced, "0.5", 2, 2, 2, 0, 0, nil},
		{"endpoint ignores tool_choice", ignores, "1", 0, 4, 4, 4, 0,
			[]string{"ignored tool_choice in 4 of 4 requests", "made 0 tool calls where 4 turns asked"}},
		{"endpoint refuses tool_choice", refuses, "1", 4, 4, 0, 0, 4, []string{"refused tool_choice (HTTP 400) in 4 requests"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := llmtest.NewServer(t, tc.model)
			res := runMain(t, env{}, "bench", "--json", "--data-dir", t.TempDir(), "--users", "2", "--messages", "2",
				"--tool-share", tc.share, "--llm-url", srv.URL)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			var got benchResult
			if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
				t.Fatalf("output is not one JSON object: %v\n%s", err, res.stdout)
			}
			if got.Turns != 4 || got.Errors != 0 || got.ToolCalls != tc.calls || got.ToolTurns != tc.asks {
				t.Errorf("result %+v: want 4 turns, no errors, %d tool calls, %d asked", got, tc.calls, tc.asks)
			}
			if got.ToolChoiceForced != tc.forced || got.ToolChoiceIgnored != tc.ignored || got.ToolChoiceRefused != tc.refused {
				t.Errorf("tool_choice forced %d, ignored %d, refused %d; want %d, %d, %d",
					got.ToolChoiceForced, got.ToolChoiceIgnored, got.ToolChoiceRefused, tc.forced, tc.ignored, tc.refused)
			}
			if len(got.Warnings) != len(tc.warn) {
				t.Errorf("warnings in the JSON: %q, want %d", got.Warnings, len(tc.warn))
			}
			for i, w := range tc.warn {
				if i < len(got.Warnings) && !strings.Contains(got.Warnings[i], w) {
					t.Errorf("warning %d: %q, want it to say %q", i, got.Warnings[i], w)
				}
				if !strings.Contains(res.stderr, "warning: ") || !strings.Contains(res.stderr, w) {
					t.Errorf("stderr does not warn %q: %s", w, res.stderr)
				}
			}
			if tc.warn == nil && strings.Contains(res.stderr, "warning") {
				t.Errorf("a warning where none is due: %s", res.stderr)
			}
			var toolResults, forcedAfterResult int
			for _, r := range srv.Requests() {
				if m := r.Messages[len(r.Messages)-1]; m.Role == llm.RoleTool {
					toolResults++
					if m.IsError || !strings.Contains(m.Content, "Hi & bye") {
						t.Errorf("tool result sent to the model: %+v", m)
					}
					if r.ToolChoice != "" {
						forcedAfterResult++
					}
				}
			}
			if int64(toolResults) != tc.calls {
				t.Errorf("the endpoint got %d tool results, want %d", toolResults, tc.calls)
			}
			if forcedAfterResult > 0 {
				t.Errorf("%d requests carrying a tool's result forced the tool again", forcedAfterResult)
			}
		})
	}
}

// Without --json the report says how tool_choice fared, and the warning
// comes on stderr.
func TestBenchReportsToolChoiceInText(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Text("no"))
	res := runMain(t, env{}, "bench", "--data-dir", t.TempDir(), "--users", "1", "--messages", "3", "--tool-share", "1", "--llm-url", srv.URL)
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	for _, want := range []string{"tool calls:      0 (3 turns asked for one)", "tool_choice:     forced in 3 requests, ignored in 3, refused in 0"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("stdout does not say %q:\n%s", want, res.stdout)
		}
	}
	if !strings.Contains(res.stderr, "talon bench: warning: the endpoint ignored tool_choice in 3 of 3 requests") {
		t.Errorf("stderr: %s", res.stderr)
	}
}

// With --console-poll the console is served over the bench's database and
// its pages load while the turns run.
func TestBenchPollsConsole(t *testing.T) {
	res := runMain(t, env{}, "bench", "--json", "--data-dir", t.TempDir(), "--users", "4", "--messages", "5", "--llm-latency", "20ms", "--console-poll", "10ms")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var got benchResult
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, res.stdout)
	}
	if got.Turns != 20 || got.Errors != 0 || got.ConsoleErrors != 0 || got.ConsolePolls < 1 {
		t.Errorf("result: %+v; want 20 turns, the console polled at least once, no errors", got)
	}
}

func TestBenchFlagsDocumented(t *testing.T) {
	if res := runMain(t, env{}); !strings.Contains(res.stderr, "--think D") || !strings.Contains(res.stderr, "--tool-share F") {
		t.Errorf("usage does not document bench's --think and --tool-share:\n%s", res.stderr)
	}
	if res := runMain(t, env{}); !strings.Contains(res.stderr, "forced by tool_choice") || !strings.Contains(res.stderr, "[--data-dir DIR] [--cpuprofile FILE]") {
		t.Errorf("usage does not say how --tool-share drives --llm-url:\n%s", res.stderr)
	}
	res := runMain(t, env{}, "bench", "--help")
	for _, want := range []string{"-think D\n", "mean pause D of a user", "-tool-share F\n", "forces the html_text tool (tool_choice)", "ignored or refused", "-replicas N\n", "-data-dir DIR\n", "-cpuprofile FILE\n"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("bench --help does not say %q:\n%s", want, res.stderr)
		}
	}
}

// Every flag of talon bench is in the usage and in README's command table
// row, with the same placeholder as bench -h shows (--think D).
func TestBenchFlagsAgreeWithReadme(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "| `talon bench --users") {
			row = strings.ReplaceAll(line, `\|`, "|") // a pipe escaped in the table
			break
		}
	}
	if row == "" {
		t.Fatal("README has no command table row for talon bench")
	}
	usage := runMain(t, env{}).stderr
	help := runMain(t, env{}, "bench", "-h").stderr
	var n int
	for _, line := range strings.Split(help, "\n") {
		f, ok := strings.CutPrefix(line, "  -")
		if !ok {
			continue
		}
		n++
		flag := "--" + f // "--think D", or "--json" for a bool
		if !strings.Contains(row, flag) {
			t.Errorf("README's bench row does not show %q", flag)
		}
		if !strings.Contains(usage, flag) {
			t.Errorf("the usage does not show %q", flag)
		}
	}
	if n < 15 {
		t.Errorf("bench -h lists %d flags, want at least 15:\n%s", n, help)
	}
}

// The bench counts failed tool calls by the sandbox's kind of failure
// (Run alone turns the kind into text for the model), and a tool's own
// error apart; the model still gets the same text as from Run.
func TestBenchCountsToolFailuresByKind(t *testing.T) {
	ctx := t.Context()
	sb, closeTools, err := benchTools(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer closeTools()
	c := &countingTools{ToolRunner: sb}
	key := agent.SessionKey{Principal: agent.Principal{Platform: "terminal", User: "bench"}}
	unknown := agent.ToolCall{ID: "1", Name: "no_such_tool", Args: []byte(`{}`), Key: key}
	want, _ := sb.Run(ctx, unknown)
	res, err := c.Run(ctx, unknown)
	if err != nil || !res.IsError || res.Content != want.Content {
		t.Errorf("unknown tool: %+v, %v; want Run's %+v", res, err, want)
	}
	if _, err := c.Run(ctx, agent.ToolCall{ID: "2", Name: "html_text", Args: []byte(`{"html": 3}`), Key: key}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(ctx, agent.ToolCall{ID: "3", Name: "html_text", Args: []byte(`{"html": "<p>hi</p>"}`), Key: key}); err != nil {
		t.Fatal(err)
	}
	got := c.failures()
	if got["unknown tool"] != 1 || len(got) != 2 || c.calls.Load() != 3 || c.fails.Load() != 2 {
		t.Errorf("failures = %v (calls %d, fails %d), want 1 unknown tool and 1 other failure of 3 calls", got, c.calls.Load(), c.fails.Load())
	}
}

// talon bench --replicas --replicas-in-process: the load runs on SQLite in
// one runtime (the reference), then on two replicas in the bench's process
// sharing a PostgreSQL schema and a NATS server; every turn of both is
// answered, and the replicas' turns are in PostgreSQL. Without its
// requirements the flag is refused. (As processes, the default:
// TestBenchReplicasAsProcesses.)
func TestBenchReplicas(t *testing.T) {
	for _, args := range [][]string{
		{"--replicas", "2"},
		{"--replicas", "2", "--store", "postgres:postgres://x@127.0.0.1/db"},
		{"--replicas", "2", "--store", "postgres:postgres://x@127.0.0.1/db", "--nats", "nats://u:p@127.0.0.1:4222"},
		{"--replicas", "17", "--store", "postgres:postgres://x@127.0.0.1/db", "--nats", "nats://127.0.0.1:4222"},
		{"--replicas-in-process", "--store", "postgres:postgres://x@127.0.0.1/db", "--nats", "nats://127.0.0.1:4222"},
	} {
		res := runMain(t, env{}, append([]string{"bench"}, args...)...)
		if res.code != 2 || !strings.Contains(res.stderr, "--replicas") && !strings.Contains(res.stderr, "--nats") {
			t.Errorf("bench %v: exit %d, stderr %s; want a usage error", args, res.code, res.stderr)
		}
		if strings.Contains(res.stderr, "u:p@") {
			t.Errorf("bench %v shows the NATS credentials: %s", args, res.stderr)
		}
	}
	dbURL, pool := postgresSchema(t)
	natsURL := testNATS(t)
	res := runMain(t, env{}, "bench", "--json", "--users", "12", "--messages", "3", "--tool-share", "0.25",
		"--replicas", "2", "--replicas-in-process", "--store", "postgres:"+dbURL, "--nats", natsURL)
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var got benchResult
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, res.stdout)
	}
	if got.Replicas != 2 || got.Turns != 36 || got.Errors != 0 || got.TurnsPerSec <= 0 || got.ToolCalls != 9 || got.OverheadMS.P50 > got.OverheadMS.P99 {
		t.Errorf("replicas: %+v; want 2 replicas, 36 turns, 9 tool calls, no errors", got)
	}
	if got.Procs != nil || got.BenchRSSBytes != 0 || got.PeakRSSBytes <= 0 {
		t.Errorf("in one process: procs %+v, bench RSS %d, peak RSS %d; want no processes, the process's peak RSS", got.Procs, got.BenchRSSBytes, got.PeakRSSBytes)
	}
	if r := got.Reference; r == nil || r.Replicas != 0 || r.Turns != 36 || r.Errors != 0 || r.TurnsPerSec <= 0 || r.ToolCalls != 9 {
		t.Errorf("reference: %+v; want 36 turns on SQLite, 9 tool calls, no errors", r)
	}
	// Every message is announced (one publish) and its announcement both
	// acknowledged and delivered (two received); the turns' stages are
	// inside their overhead (the fake model takes no time).
	if got.NATSMsgsOut < 36 || got.NATSMsgsIn < 72 {
		t.Errorf("NATS messages: %d sent, %d received; want at least 36 and 72", got.NATSMsgsOut, got.NATSMsgsIn)
	}
	if st := got.Stages; st == nil || st.Mean.Accept <= 0 || st.Mean.Turn <= 0 || st.Mean.Accept > st.Mean.Overhead+1 ||
		st.AcceptMS.P50 > st.AcceptMS.P99 || st.TurnMS.P50 > st.TurnMS.P99 || st.TurnMS.P50 <= 0 {
		t.Errorf("stages: %+v; want the accept and the turn measured, the accept within the overhead", st)
	}
	var done int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM inbound WHERE state = 'done'`).Scan(&done); err != nil || done != 36 {
		t.Errorf("messages answered in PostgreSQL: %d, %v; want 36", done, err)
	}
}

// A PostgreSQL store is named on the command line as postgres:URL or as
// the URL alone (the issue's `talon bench --store postgres://…`).
func TestStoreURLAsTyped(t *testing.T) {
	for arg, want := range map[string]string{
		"postgres:postgres://talon@db/talon": "postgres://talon@db/talon",
		"postgres://talon@db/talon":          "postgres://talon@db/talon",
		"postgresql://talon@db/talon":        "postgresql://talon@db/talon",
		"postgres:":                          "",
	} {
		if got, ok := cutPostgres(arg); !ok || got != want {
			t.Errorf("cutPostgres(%q) = %q, %v; want %q", arg, got, ok, want)
		}
	}
	for _, arg := range []string{"sqlite", "mysql://db/talon", "postgresx://db"} {
		if got, ok := cutPostgres(arg); ok {
			t.Errorf("cutPostgres(%q) = %q, true; want not a PostgreSQL store", arg, got)
		}
	}
	// The URL alone is taken as the store's: its password is refused for
	// the process list's sake (exit 1, not a usage error), without being
	// echoed.
	for _, args := range [][]string{
		{"bench", "--users", "1", "--messages", "1", "--store", "postgres://talon:hunter22@127.0.0.1:1/talon"},
		{"bench", "--users", "1", "--messages", "1", "--store", "postgresql://talon:hunter22@127.0.0.1:1/talon", "--replicas", "2", "--nats", "nats://127.0.0.1:1"},
	} {
		res := runMain(t, env{}, args...)
		if res.code != 1 || !strings.Contains(res.stderr, "holds a password") || strings.Contains(res.stderr+res.stdout, "hunter22") {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 refusing the password without echoing it", args[6], res.code, res.stderr)
		}
	}
	// postgres without a URL (as migrate-store --to takes it) is refused
	// with every form the bench takes.
	res := runMain(t, env{}, "bench", "--users", "1", "--messages", "1", "--store", "postgres")
	if res.code != 2 || !strings.Contains(res.stderr, "--store must be sqlite, postgres:URL or the postgres:// URL alone") {
		t.Errorf("--store postgres: exit %d, stderr %q; want a usage error naming the forms", res.code, res.stderr)
	}
}
