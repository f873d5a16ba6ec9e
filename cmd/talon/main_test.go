package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestMain lets tests run the real binary as a child process: the test
// binary re-executes itself with TALON_TEST_MAIN=1 and acts as talon.
func TestMain(m *testing.M) {
	// A replica of talon bench --replicas is this executable again: the
	// test binary then acts as talon, whoever started the bench.
	if os.Getenv("TALON_TEST_MAIN") == "1" || len(os.Args) > 1 && os.Args[1] == benchReplicaCmd {
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(m.Run())
}

// writeConfig writes a configuration file for a test gateway.
func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "talon.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func baseConfig(dataDir, provider, url string) string {
	key := ""
	if provider == "anthropic" {
		key = "  api_key: ${TEST_ANTHROPIC_KEY}\n"
	}
	return fmt.Sprintf(`data_dir: %s
log:
  level: debug
  format: json
http:
  listen: ""
llm:
  provider: %s
  base_url: %s
  model: test-model
  max_retries: 0
%sagent:
  rate_per_minute: 0
`, dataDir, provider, url, key)
}

func testEnv(extra map[string]string) func(string) string {
	return func(k string) string { return extra[k] }
}

// result is what one talon invocation printed.
type result struct {
	code           int
	stdout, stderr string
}

func runMain(t *testing.T, e env, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	e.stdout, e.stderr = &out, &errOut
	if e.stdin == nil {
		e.stdin = strings.NewReader("")
	}
	if e.getenv == nil {
		e.getenv = testEnv(nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := e.main(ctx, args)
	return result{code, out.String(), errOut.String()}
}

// calcTools is the test ToolRunner: "add" sums a and b.
type calcTools struct{}

func (calcTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "add", Description: "Add a and b.", Parameters: json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}`)}}, nil
}

func (calcTools) Run(_ context.Context, c agent.ToolCall) (agent.ToolResult, error) {
	var a struct{ A, B float64 }
	if err := json.Unmarshal(c.Args, &a); err != nil {
		return agent.ToolResult{IsError: true, Content: err.Error()}, nil
	}
	return agent.ToolResult{Content: fmt.Sprint(a.A + a.B)}, nil
}

// conversation is the fake model's script: it echoes, asks for the add
// tool when told to add, and reports the tool's result.
func conversation(req llmtest.Request) llmtest.Response {
	last := req.Messages[len(req.Messages)-1]
	if last.Role == llm.RoleTool {
		return llmtest.Response{Text: "the sum is " + last.Content}
	}
	text := last.Content
	if strings.HasPrefix(text, "add ") {
		var a, b int
		fmt.Sscanf(text, "add %d %d", &a, &b)
		return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "add", Arguments: fmt.Sprintf(`{"a":%d,"b":%d}`, a, b)}}}
	}
	return llmtest.Response{Text: fmt.Sprintf("echo: %s (I have seen %d messages)", text, len(req.Messages))}
}

func TestRunTerminalConversation(t *testing.T) {
	for _, provider := range []string{"openai", "anthropic"} {
		t.Run(provider, func(t *testing.T) {
			srv := llmtest.NewServer(t, conversation)
			url := srv.URL
			if provider == "anthropic" {
				url = srv.AnthropicURL
			}
			dir := t.TempDir()
			cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), provider, url))
			e := env{
				stdin:  strings.NewReader("hello\nadd 2 3\n/new\nwho are you\n"),
				getenv: testEnv(map[string]string{"TEST_ANTHROPIC_KEY": "sk-ant-test-not-a-real-key"}),
				tools:  calcTools{},
			}
			res := runMain(t, e, "run", "--config", cfg)
			if res.code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", res.code, res.stderr)
			}
			lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
			if len(lines) != 4 {
				t.Fatalf("stdout has %d lines, want 4:\n%s", len(lines), res.stdout)
			}
			want := []string{
				"echo: hello (I have seen 1 messages)",
				"the sum is 5",
				"Started a fresh conversation",
				"echo: who are you (I have seen 1 messages)",
			}
			for i, w := range want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d: got %q, want prefix %q", i, lines[i], w)
				}
			}
			reqs := srv.Requests()
			if len(reqs) != 4 {
				t.Fatalf("model requests: got %d, want 4", len(reqs))
			}
			for i, r := range reqs {
				if r.Provider != provider || !r.Stream {
					t.Errorf("request %d: provider %s stream %v, want %s streamed", i, r.Provider, r.Stream, provider)
				}
			}
			// The tool round trip carried history: user, assistant, user,
			// assistant tool call, tool result.
			var roles []string
			for _, m := range reqs[2].Messages {
				roles = append(roles, string(m.Role))
			}
			if diff := cmp.Diff([]string{"user", "assistant", "user", "assistant", "tool"}, roles); diff != "" {
				t.Errorf("tool round trip history (-want +got):\n%s", diff)
			}
			if strings.Contains(res.stderr, "sk-ant-test-not-a-real-key") || strings.Contains(res.stderr, "who are you") {
				t.Error("logs contain the API key or a message body")
			}
		})
	}
}

func TestChatStreamsAndExitsAtEOF(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Text("a fairly long answer that arrives in several pieces"))
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))
	res := runMain(t, env{stdin: strings.NewReader("hi\n")}, "chat", "--config", cfg)
	if res.code != 0 || res.stdout != "a fairly long answer that arrives in several pieces\n" {
		t.Fatalf("exit %d, stdout %q, stderr %s", res.code, res.stdout, res.stderr)
	}
	if !srv.Requests()[0].Stream {
		t.Error("chat did not stream")
	}
}

func TestBadConfigurationExitsNamingTheKey(t *testing.T) {
	cases := []struct {
		name, body string
		env        map[string]string
		want       []string
	}{
		{"unknown key", "llm:\n  modle: x\n", nil, []string{"llm.modle"}},
		{"bad duration", "agent:\n  turn_timeout: 5 minutes\n", nil, []string{"agent.turn_timeout"}},
		{"provider without key", "llm:\n  provider: anthropic\n", nil, []string{"llm.api_key"}},
		{"unset variable", "llm:\n  api_key: ${NOT_SET_ANYWHERE}\n", nil, []string{"NOT_SET_ANYWHERE"}},
		{"several at once", "llm:\n  modle: x\nagent:\n  turn_timeout: soon\n", nil, []string{"llm.modle", "agent.turn_timeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeConfig(t, dir, "data_dir: "+filepath.Join(dir, "data")+"\n"+tc.body)
			res := runMain(t, env{getenv: testEnv(tc.env)}, "run", "--config", cfg)
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

func TestConfigFromEnvironmentWithoutFile(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	e := env{stdin: strings.NewReader("ping\n"), getenv: testEnv(map[string]string{
		"OPENAI_BASE_URL": srv.URL, "OPENAI_API_KEY": "sk-test", "TALON_MODEL": "env-model", "TALON_DATA_DIR": filepath.Join(dir, "d"),
	})}
	res := runMain(t, e, "chat")
	if res.code != 0 || res.stdout != "echo: ping\n" {
		t.Fatalf("exit %d stdout %q stderr %s", res.code, res.stdout, res.stderr)
	}
	r := srv.Requests()[0]
	if r.Model != "env-model" || r.Header.Get("Authorization") != "Bearer sk-test" {
		t.Errorf("request model %q auth %q", r.Model, r.Header.Get("Authorization"))
	}
	if _, err := os.Stat(filepath.Join(dir, "d", "talon.db")); err != nil {
		t.Errorf("TALON_DATA_DIR not used: %v", err)
	}
}

func TestOpsEndpoints(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, strings.Replace(baseConfig(filepath.Join(dir, "data"), "openai", srv.URL), `listen: ""`, "listen: "+addr, 1))
	stdinR, stdinW := io.Pipe()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- env{stdin: stdinR, stdout: &out, stderr: io.Discard, getenv: testEnv(nil)}.main(context.Background(), []string{"run", "--config", cfg})
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitUntil(t, func() bool { code, _ := get("/readyz"); return code == 200 })
	fmt.Fprintln(stdinW, "count me")
	waitUntil(t, func() bool { return strings.Contains(out.String(), "echo: count me") })
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `talon_turns_total{outcome="answer"} 1`) || !strings.Contains(body, "talon_turn_duration_seconds") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	// The model path meters each call: one turn call, its tokens counted.
	if !strings.Contains(body, `talon_llm_requests_total{outcome="ok",purpose="turn"} 1`) ||
		!regexp.MustCompile(`talon_llm_tokens_total\{direction="input",purpose="turn"\} [1-9]`).MatchString(body) ||
		!strings.Contains(body, `talon_llm_request_duration_seconds_count{purpose="turn"} 1`) {
		t.Errorf("/metrics lacks the model call's meters:\n%s", body)
	}
	// The sandbox's memory budget: the default, nothing waiting.
	for _, want := range []string{"talon_sandbox_memory_limit_bytes 2.68435456e+08", "talon_sandbox_memory_waiting 0",
		"talon_sandbox_memory_waits_total 0", "talon_sandbox_memory_wait_seconds_total 0", "talon_sandbox_memory_bytes "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	stdinW.Close()
	select {
	case c := <-done:
		if c != 0 {
			t.Errorf("exit %d", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop at end of input")
	}
}

func TestSecondProcessOnSameDataDirRefused(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- env{stdin: stdinR, stdout: &out, stderr: io.Discard, getenv: testEnv(nil)}.main(context.Background(), []string{"run", "--config", cfg})
	}()
	fmt.Fprintln(stdinW, "first")
	waitUntil(t, func() bool { return strings.Contains(out.String(), "echo: first") })
	res := runMain(t, env{}, "chat", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stderr, "another talon process") {
		t.Errorf("second process: exit %d, stderr %s", res.code, res.stderr)
	}
	stdinW.Close()
	<-done
}

// TestCrashMidTurn kills the gateway with SIGKILL while the model is
// answering, restarts it, and checks that the message is answered exactly
// once and the earlier reply is not repeated.
func TestCrashMidTurn(t *testing.T) {
	var mu sync.Mutex
	hung := make(chan struct{})
	hangOnce := true
	srv := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		text := req.LastUserText()
		mu.Lock()
		defer mu.Unlock()
		if text == "slow" && hangOnce {
			hangOnce = false
			close(hung)
			return llmtest.Response{Hang: true}
		}
		return llmtest.Response{Text: "answer to " + text}
	})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))

	// First process: answers "first", then dies in the middle of "slow".
	cmd := exec.Command(os.Args[0], "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out1 syncBuffer
	cmd.Stdout = &out1
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(stdin, "first")
	waitUntil(t, func() bool { return strings.Contains(out1.String(), "answer to first") })
	fmt.Fprintln(stdin, "slow")
	select {
	case <-hung:
	case <-time.After(30 * time.Second):
		t.Fatal("the model never saw the slow message")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if strings.Contains(out1.String(), "answer to slow") {
		t.Fatal("the first process answered before it was killed; the test did not crash mid-turn")
	}

	// Second process: it must finish the interrupted turn before the new
	// message of the same conversation, then exit at end of input.
	cmd2 := exec.Command(os.Args[0], "run", "--config", cfg)
	cmd2.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	cmd2.Stdin = strings.NewReader("after slow\n")
	var out2 syncBuffer
	cmd2.Stdout = &out2
	cmd2.Stderr = io.Discard
	if err := cmd2.Run(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	want := "answer to slow\nanswer to after slow\n"
	if out2.String() != want {
		t.Errorf("after restart stdout = %q, want %q", out2.String(), want)
	}
	if n := strings.Count(out1.String()+out2.String(), "answer to first"); n != 1 {
		t.Errorf("the first reply was delivered %d times", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDoctor(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Text("ok"))
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))
	res := runMain(t, env{}, "doctor", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "ok    model answers") {
		t.Errorf("healthy doctor: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	srv.Close()
	res = runMain(t, env{}, "doctor", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stdout, "FAIL  model answers") || !strings.Contains(res.stdout, "unreachable") {
		t.Errorf("doctor with the model down: exit %d\n%s", res.code, res.stdout)
	}
}

func TestVersionAndUsage(t *testing.T) {
	if res := runMain(t, env{}, "version"); res.code != 0 || strings.TrimSpace(res.stdout) == "" {
		t.Errorf("version: exit %d %q", res.code, res.stdout)
	}
	if res := runMain(t, env{}, "frobnicate"); res.code != 2 || !strings.Contains(res.stderr, "unknown command") {
		t.Errorf("unknown command: exit %d %q", res.code, res.stderr)
	}
}
