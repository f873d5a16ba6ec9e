package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/sandbox/egress"
)

func TestEcho(t *testing.T) {
	for _, pool := range []int{2, 0} {
		r := newRuntime(t, Config{PoolSize: pool}, echoTool(t))
		// Arguments reach the guest compacted, and with <, > and & as
		// they are, not as \u003c escapes.
		for _, args := range []string{`{}`, `{"a":[1,2,{"b":"c:d"}]}`, `"x"`, ``, `{ "h" : "<p>&amp;</p>" }`} {
			got, err := r.Run(context.Background(), call("echo", args))
			if err != nil {
				t.Fatalf("pool %d, Run(%s): %v", pool, args, err)
			}
			want := strings.ReplaceAll(args, " ", "")
			if want == "" {
				want = "{}"
			}
			if diff := cmp.Diff(agent.ToolResult{Content: want}, got); diff != "" {
				t.Errorf("pool %d, Run(%s) (-want +got):\n%s", pool, args, diff)
			}
		}
	}
}

func TestCallRefusesInvalidArguments(t *testing.T) {
	r := newRuntime(t, Config{}, echoTool(t))
	for _, args := range []string{`{"a":`, `{"a":1}x`, `{a:1}`} {
		_, err := r.Call(context.Background(), call("echo", args))
		if !errors.Is(err, ErrInput) {
			t.Errorf("Call(%q) = %v, want ErrInput", args, err)
		}
	}
}

func TestTools(t *testing.T) {
	off := testTool(t, "state", "enabled: false\n")
	r := newRuntime(t, Config{}, testTool(t, "echo", `
parameters:
  type: object
  properties:
    text: {type: string}
  required: [text]
`), off)
	got, err := r.Tools(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	want := []llm.Tool{{
		Name: "echo", Description: "test tool echo",
		Parameters: json.RawMessage(`{"properties":{"text":{"type":"string"}},"required":["text"],"type":"object"}`),
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Tools (-want +got):\n%s", diff)
	}
	res, err := r.Run(context.Background(), call("state", `{}`))
	if err != nil || !res.IsError || res.Content != "unknown tool" {
		t.Errorf("Run(disabled) = %+v, %v; want IsError unknown tool", res, err)
	}
}

// A guest that keeps state in globals and memory never sees it again: every
// call answers [7,1,1] (_initialize ran; first call of the instance).
func TestIsolation(t *testing.T) {
	for _, pool := range []int{2, 0} {
		r := newRuntime(t, Config{PoolSize: pool}, testTool(t, "state", ""))
		for i := range 5 {
			got, err := r.Run(context.Background(), call("state", `{}`))
			if err != nil {
				t.Fatal(err)
			}
			if want := (agent.ToolResult{Content: "[7,1,1]"}); got != want {
				t.Errorf("pool %d, call %d = %+v, want %+v", pool, i, got, want)
			}
		}
		// The instances after the first were restored from its snapshot
		// (see snapshot), so this holds for them too.
		if r.tools["state"].snap.Load() == nil {
			t.Errorf("pool %d: no snapshot taken", pool)
		}
	}
}

func TestHTTPRequest(t *testing.T) {
	eg := &fakeEgress{respond: func(r egress.Request) (*egress.Response, error) {
		if strings.Contains(r.URL, "denied") {
			return nil, &egress.DeniedError{Host: "denied.example", Reason: "not in the allowlist"}
		}
		if strings.Contains(r.URL, "fail") {
			return nil, errors.New("dial tcp: https://fail.example/?token=SECRET refused")
		}
		return &egress.Response{Status: 200, Body: "hello", URL: r.URL}, nil
	}}
	tools := []Tool{
		testTool(t, "http", `
http: [{host: api.example}]
credentials: [github]
limits: {max_response_bytes: 1000, max_request_bytes: 100}
`),
	}
	r := newRuntime(t, Config{Egress: eg}, tools...)

	tests := []struct {
		name string
		args string
		want string
	}{
		{"ok", `{"method":"get","url":"https://api.example/x","credential":"github"}`,
			`[{"status":200,"body":"hello","url":"https://api.example/x"},{"status":200,"body":"hello","url":"https://api.example/x"}]`},
		{"denied", `{"url":"https://denied.example/"}`,
			`[{"error":{"kind":"denied","message":"egress: request to \"denied.example\" refused: not in the allowlist"}},` +
				`{"error":{"kind":"denied","message":"egress: request to \"denied.example\" refused: not in the allowlist"}}]`},
		{"network error hides the text", `{"url":"https://fail.example/"}`,
			`[{"error":{"kind":"network","message":"the request failed"}},{"error":{"kind":"network","message":"the request failed"}}]`},
		{"unknown field", `{"url":"https://api.example/","cookie":"x"}`,
			`[{"error":{"kind":"invalid","message":"the request JSON could not be read"}},{"error":{"kind":"invalid","message":"the request JSON could not be read"}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Run(context.Background(), call("http", tt.args))
			if err != nil {
				t.Fatal(err)
			}
			// A response from the network taints the turn that reads it.
			want := agent.ToolResult{Content: tt.want}
			if strings.Contains(tt.want, `"status":`) {
				want.Taint = "api.example"
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	reqs := eg.requests()
	if diff := cmp.Diff(egress.Request{Method: "GET", URL: "https://api.example/x", Credential: "github"}, reqs[0]); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	eg.mu.Lock()
	c := eg.callers[0]
	eg.mu.Unlock()
	wantPolicy := &egress.Policy{
		Allow: []egress.Rule{{Host: "api.example"}}, Credentials: []string{"github"},
		MaxRequestBytes: 100, MaxResponseBytes: 1000, Timeout: 30 * time.Second,
	}
	if c.Tool != "http" || c.Principal != alice {
		t.Errorf("caller = %s %v, want http %v", c.Tool, c.Principal, alice)
	}
	if diff := cmp.Diff(wantPolicy, c.Policy); diff != "" {
		t.Errorf("policy (-want +got):\n%s", diff)
	}
}

func TestHTTPRequestLimitAndApproval(t *testing.T) {
	eg := &fakeEgress{respond: func(r egress.Request) (*egress.Response, error) {
		return &egress.Response{Status: 201, URL: r.URL}, nil
	}}
	ok201 := `{"status":201,"body":"","url":"https://api.example/x?q=1"}`
	limitErr := `{"error":{"kind":"limit","message":"too many HTTP requests in this call"}}`
	approvalErr := `{"error":{"kind":"approval","message":"the user did not approve this request"}}`
	tests := []struct {
		name      string
		manifest  string
		approver  Approver
		args      string
		want      string
		wantAsked []string
	}{
		{"one request per call", "limits: {max_http_requests: 1}\n", nil,
			`{"url":"https://api.example/x?q=1"}`, "[" + ok201 + "," + limitErr + "]", nil},
		{"non_get asks for POST", "approval: non_get\n", &fakeApprover{ok: true},
			`{"method":"POST","url":"https://api.example/x?q=1"}`, "[" + ok201 + "," + ok201 + "]",
			[]string{"POST https://api.example/x", "POST https://api.example/x"}},
		{"non_get denied", "approval: non_get\n", &fakeApprover{ok: false},
			`{"method":"DELETE","url":"https://api.example/x?q=1"}`, "[" + approvalErr + "," + approvalErr + "]",
			[]string{"DELETE https://api.example/x", "DELETE https://api.example/x"}},
		{"non_get approver error denies", "approval: non_get\n", &fakeApprover{ok: true, err: errors.New("boom")},
			`{"method":"DELETE","url":"https://api.example/x?q=1"}`, "[" + approvalErr + "," + approvalErr + "]",
			[]string{"DELETE https://api.example/x", "DELETE https://api.example/x"}},
		{"non_get nil approver denies", "approval: non_get\n", nil,
			`{"method":"PUT","url":"https://api.example/x?q=1"}`, "[" + approvalErr + "," + approvalErr + "]", nil},
		{"non_get GET not asked", "approval: non_get\n", &fakeApprover{ok: false},
			`{"url":"https://api.example/x?q=1"}`, "[" + ok201 + "," + ok201 + "]", nil},
		// The deadline (100 ms) does not run while the person decides
		// (250 ms, twice).
		{"non_get slow person", "approval: non_get\nlimits: {deadline: 100ms}\n", &fakeApprover{ok: true, think: 250 * time.Millisecond},
			`{"method":"POST","url":"https://api.example/x?q=1"}`, "[" + ok201 + "," + ok201 + "]",
			[]string{"POST https://api.example/x", "POST https://api.example/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRuntime(t, Config{Egress: eg, Approver: tt.approver, PoolSize: -1}, testTool(t, "http", tt.manifest))
			got, err := r.Run(context.Background(), call("http", tt.args))
			if err != nil {
				t.Fatal(err)
			}
			want := agent.ToolResult{Content: tt.want}
			if strings.Contains(tt.want, `"status":`) {
				want.Taint = "api.example"
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			var asked []string
			if fa, ok := tt.approver.(*fakeApprover); ok {
				for _, q := range fa.reqs {
					asked = append(asked, q.Description)
					if q.Tool != "http" || q.Principal != alice || q.CallID != "call-1" {
						t.Errorf("approval request %+v: wrong tool, principal or call id", q)
					}
				}
			}
			if diff := cmp.Diff(tt.wantAsked, asked); diff != "" {
				t.Errorf("asked (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApprovalAlways(t *testing.T) {
	tests := []struct {
		name     string
		approver Approver
		want     agent.ToolResult
		wantErr  bool
	}{
		{"approved", &fakeApprover{ok: true}, agent.ToolResult{Content: `{"x":1}`}, false},
		{"denied", &fakeApprover{ok: false}, agent.ToolResult{Content: "the user did not approve this call", IsError: true}, false},
		{"no approver", nil, agent.ToolResult{Content: "this tool needs approval and none can be asked", IsError: true}, false},
		{"approver fails", &fakeApprover{err: errors.New("paused")}, agent.ToolResult{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRuntime(t, Config{Approver: tt.approver}, testTool(t, "echo", "approval: always\n"))
			got, err := r.Run(context.Background(), call("echo", `{"x":1}`))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if fa, ok := tt.approver.(*fakeApprover); ok {
				want := []ApprovalRequest{{Tool: "echo", Principal: alice, Key: agent.SessionKey{Principal: alice}, CallID: "call-1",
					Description: "run tool echo", Args: json.RawMessage(`{"x":1}`)}}
				if diff := cmp.Diff(want, fa.reqs); diff != "" {
					t.Errorf("approval requests (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestHasSecretAndLog(t *testing.T) {
	var logs syncBuffer
	r := newRuntime(t, Config{
		Secrets:  fakeSecrets{alice: {"github", "gitlab"}},
		Logger:   zerolog.New(&logs).Level(zerolog.DebugLevel),
		Redactor: fakeRedactor{},
	}, testTool(t, "secret", "credentials: [github]\n"))
	tests := []struct{ name, want string }{
		{"github", "1"}, // granted and present
		{"gitlab", "0"}, // present but not granted
		{"jira", "0"},   // neither
	}
	for _, tt := range tests {
		got, err := r.Run(context.Background(), call("secret", `"`+tt.name+`"`))
		if err != nil {
			t.Fatal(err)
		}
		if got != (agent.ToolResult{Content: tt.want}) {
			t.Errorf("has_secret(%s) = %+v, want %s", tt.name, got, tt.want)
		}
	}
	if l := logs.String(); !strings.Contains(l, `"tool":"secret"`) || !strings.Contains(l, `"guest_msg":"gitlab"`) ||
		!strings.Contains(l, `"level":"debug"`) || !strings.Contains(l, `"guest_level":"info"`) {
		t.Errorf("log = %s; want debug lines with tool, guest_level and guest_msg", l)
	}

	// A secret in what the guest logs is redacted first; without a
	// redactor the text is withheld.
	for _, tt := range []struct {
		name     string
		redactor Redactor
		want     []string
	}{
		{"redactor", fakeRedactor{alice: {"s3cr3t-value-of-alice"}},
			[]string{`"guest_msg":"{\"token\":\"[REDACTED]\",\"again\":\"x[REDACTED]y\"}"`, `"guest_msg_redacted":2`, `"guest_level":"warn"`}},
		{"none", nil, []string{`"guest_msg_withheld":true`, `"tool":"logargs"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out syncBuffer
			r := newRuntime(t, Config{Logger: zerolog.New(&out).Level(zerolog.DebugLevel), Redactor: tt.redactor},
				testTool(t, "logargs", ""))
			if _, err := r.Run(context.Background(), call("logargs", `{"token":"s3cr3t-value-of-alice","again":"xs3cr3t-value-of-alicey"}`)); err != nil {
				t.Fatal(err)
			}
			l := out.String()
			if strings.Contains(l, "s3cr3t") {
				t.Error("the secret reached the log")
			}
			for _, w := range tt.want {
				if !strings.Contains(l, w) {
					t.Errorf("log %s does not contain %s", l, w)
				}
			}
		})
	}

	// At info level nothing the guest says is written.
	var quiet syncBuffer
	r2 := newRuntime(t, Config{Logger: zerolog.New(&quiet).Level(zerolog.InfoLevel)}, testTool(t, "secret", ""))
	if _, err := r2.Run(context.Background(), call("secret", `"github"`)); err != nil {
		t.Fatal(err)
	}
	if quiet.String() != "" {
		t.Errorf("info-level log = %q, want nothing", quiet.String())
	}
}

func TestRateLimit(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newRuntime(t, Config{Now: clock}, testTool(t, "echo", "limits: {per_minute: 2}\n"))
	bob := agent.Principal{Platform: "slack", Workspace: "T1", User: "U2"}
	run := func(p agent.Principal) error {
		c := call("echo", `{}`)
		c.Key.Principal = p
		_, err := r.Call(context.Background(), c)
		return err
	}
	for i := range 2 {
		if err := run(alice); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if err := run(alice); !errors.Is(err, ErrRateLimited) {
		t.Errorf("third call: %v, want ErrRateLimited", err)
	}
	if err := run(bob); err != nil {
		t.Errorf("another user: %v, want no limit", err)
	}
	mu.Lock()
	now = now.Add(30 * time.Second) // one token back
	mu.Unlock()
	if err := run(alice); err != nil {
		t.Errorf("after 30 s: %v", err)
	}
	if err := run(alice); !errors.Is(err, ErrRateLimited) {
		t.Errorf("again: %v, want ErrRateLimited", err)
	}
}

func TestCloseWaitsAndRefuses(t *testing.T) {
	r, err := New(context.Background(), Config{CacheDir: fixture.cacheDir, Tools: []Tool{echoTool(t)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), call("echo", `{}`)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), call("echo", `{}`)); err == nil {
		t.Error("Run after Close succeeded")
	}
	if err := r.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// alongside runs hostile while well-behaved echo calls run on the same
// Runtime, and checks that every echo call succeeds, during and after.
func alongside(t *testing.T, r *Runtime, hostile func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		hostile()
	}()
	errs := make(chan error, 64)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				got, err := r.Run(context.Background(), call("echo", `{"n":1}`))
				if err != nil || got != (agent.ToolResult{Content: `{"n":1}`}) {
					errs <- errors.New("echo failed beside a hostile guest")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := r.Run(context.Background(), call("echo", `{"after":true}`))
	if err != nil || got.Content != `{"after":true}` {
		t.Errorf("echo after the hostile guest = %+v, %v", got, err)
	}
}

func TestHostileDeadline(t *testing.T) {
	const deadline = 200 * time.Millisecond
	// calltree has no loop at all: it is stopped at a function entry;
	// sleep waits in a host function (WASI poll_oneoff) for an hour.
	for _, name := range []string{"loop", "initloop", "calltree", "sleep"} {
		t.Run(name, func(t *testing.T) {
			r := newRuntime(t, Config{PoolSize: -1}, echoTool(t), testTool(t, name, "limits: {deadline: 200ms}\n"))
			alongside(t, r, func() {
				// The machine running the tests may be shared and loaded:
				// the bound must hold in one of three tries.
				var elapsed []time.Duration
				for range 3 {
					start := time.Now()
					_, err := r.Call(context.Background(), call(name, `{}`))
					d := time.Since(start)
					if !errors.Is(err, ErrDeadline) {
						t.Errorf("err = %v, want ErrDeadline", err)
					}
					if d <= deadline+50*time.Millisecond {
						return
					}
					elapsed = append(elapsed, d)
				}
				t.Errorf("stopped after %v, want within %s", elapsed, deadline+50*time.Millisecond)
			})
			// Run gives the model a short reason.
			res, err := r.Run(context.Background(), call(name, `{}`))
			if err != nil || !res.IsError || !strings.Contains(res.Content, "deadline") {
				t.Errorf("Run = %+v, %v; want IsError about the deadline", res, err)
			}
		})
	}
}

// A guest in an endless loop does not hold up the host's garbage collector:
// compiled guest code cannot be preempted, so without the instrumented
// exits a collection's stop-the-world would wait for the guest, and with it
// every goroutine of the gateway.
func TestHostileLoopDoesNotStallGC(t *testing.T) {
	for _, name := range []string{"loop", "calltree"} {
		t.Run(name, func(t *testing.T) {
			// Both guests log once from inside their endless work.
			inside := newLogSignal(`"message":"tool log"`)
			r := newRuntime(t, Config{PoolSize: -1, Logger: zerolog.New(inside).Level(zerolog.DebugLevel)},
				testTool(t, name, "limits: {deadline: 10s}\n"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			returned := make(chan error, 1)
			go func() {
				_, err := r.Call(ctx, call(name, `{}`))
				returned <- err
			}()
			select {
			case <-inside.seen: // the guest is in its loop
			case err := <-returned:
				t.Fatalf("the call returned (%v) before the guest reached its loop", err)
			}
			collected := make(chan struct{})
			go func() {
				runtime.GC()
				close(collected)
			}()
			select {
			case <-collected:
			case err := <-returned:
				t.Fatalf("the call returned (%v) before the collection finished: the collection waited for the guest", err)
			case <-time.After(5 * time.Second):
				t.Fatal("no collection finished in 5s while the guest looped")
			}
			cancel()
			if err := <-returned; !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
		})
	}
}

// logSignal is a log sink that closes seen at the first line holding want.
type logSignal struct {
	want string
	once sync.Once
	seen chan struct{}
}

func newLogSignal(want string) *logSignal { return &logSignal{want: want, seen: make(chan struct{})} }

func (l *logSignal) Write(p []byte) (int, error) {
	if strings.Contains(string(p), l.want) {
		l.once.Do(func() { close(l.seen) })
	}
	return len(p), nil
}

// The pooled path also stops a looping _initialize (in the filler) and the
// call falls back to a fresh instance that meets the deadline.
// A start function would run inside instantiation, where no stop can
// reach it: the module is refused before it runs.
func TestHostileStartLoop(t *testing.T) {
	r := newRuntime(t, Config{}, echoTool(t), testTool(t, "startloop", ""))
	alongside(t, r, func() {
		_, err := r.Call(context.Background(), call("startloop", `{}`))
		if !errors.Is(err, ErrLoad) || !errors.Is(err, ErrABI) {
			t.Errorf("err = %v, want ErrLoad and ErrABI", err)
		}
	})
}

func TestHostileInitLoopPooled(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 1}, testTool(t, "initloop", "limits: {deadline: 100ms}\n"))
	for range 2 {
		if _, err := r.Call(context.Background(), call("initloop", `{}`)); !errors.Is(err, ErrDeadline) {
			t.Errorf("err = %v, want ErrDeadline", err)
		}
	}
}

func TestHostileCancelled(t *testing.T) {
	r := newRuntime(t, Config{}, testTool(t, "loop", ""))
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the call is running: the guest loops forever, so
		// any moment after the start will do.
		cancel()
	}()
	_, err := r.Call(ctx, call("loop", `{}`))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestHostileMemoryBomb(t *testing.T) {
	for _, pool := range []int{2, 0} {
		r := newRuntime(t, Config{PoolSize: pool}, echoTool(t), testTool(t, "bomb", "limits: {memory_mib: 16}\n"))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		alongside(t, r, func() {
			_, err := r.Call(context.Background(), call("bomb", `{}`))
			if !errors.Is(err, ErrMemory) {
				t.Errorf("pool %d: err = %v, want ErrMemory", pool, err)
			}
		})
		runtime.ReadMemStats(&after)
		if grew := int64(after.HeapSys) - int64(before.HeapSys); grew > 256<<20 {
			t.Errorf("host heap grew by %d MiB", grew>>20)
		}
	}
}

func TestHostileRecursion(t *testing.T) {
	r := newRuntime(t, Config{}, echoTool(t), testTool(t, "recurse", ""))
	alongside(t, r, func() {
		_, err := r.Call(context.Background(), call("recurse", `{}`))
		if !errors.Is(err, ErrTrap) {
			t.Errorf("err = %v, want ErrTrap", err)
		}
	})
}

func TestHostileOutput(t *testing.T) {
	r := newRuntime(t, Config{}, echoTool(t), testTool(t, "bigout", "limits: {max_output_bytes: 1048576}\n"))
	for _, arg := range []string{"0", "1"} {
		alongside(t, r, func() {
			_, err := r.Call(context.Background(), call("bigout", arg))
			if !errors.Is(err, ErrOutputTooLarge) {
				t.Errorf("bigout(%s): err = %v, want ErrOutputTooLarge", arg, err)
			}
		})
	}
}

func TestHostileFaults(t *testing.T) {
	r := newRuntime(t, Config{}, echoTool(t), testTool(t, "fault", ""))
	tests := []struct {
		arg  string
		want error
	}{
		{"0", ErrGuestFault}, // http_request range outside memory
		{"1", ErrGuestFault}, // http_request length above cap
		{"2", ErrGuestFault}, // result_read range outside memory
		{"3", ErrGuestFault}, // log range wraps around
		{"4", ErrGuestFault}, // has_secret name above cap
		{"5", ErrBadOutput},  // output outside memory
		{"6", ErrBadOutput},  // output not JSON
		{"7", ErrGuestFault}, // log level out of range
		{"8", ErrGuestFault}, // result_read length past memory
		{"9", nil},           // behaves
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			alongside(t, r, func() {
				_, err := r.Call(context.Background(), call("fault", tt.arg))
				if errKind(err) != tt.want {
					t.Errorf("err = %v, want %v", err, tt.want)
				}
			})
		})
	}
}

func TestHostileFilesystem(t *testing.T) {
	r := newRuntime(t, Config{}, echoTool(t), testTool(t, "passwd", ""))
	alongside(t, r, func() {
		got, err := r.Run(context.Background(), call("passwd", `{}`))
		if err != nil || got.IsError {
			t.Fatalf("Run = %+v, %v", got, err)
		}
		var out []any
		if err := json.Unmarshal([]byte(got.Content), &out); err != nil {
			t.Fatalf("output %q: %v", got.Content, err)
		}
		if len(out) != 21 {
			t.Fatalf("output has %d entries, want 21", len(out))
		}
		for i, e := range out[:20] {
			if e == float64(0) {
				t.Errorf("path_open try %d succeeded", i)
			}
		}
		if out[20] != "" || strings.Contains(got.Content, "root:") {
			t.Errorf("guest read %q", out[20])
		}
	})
}

func TestHostileEnvironmentAndSockets(t *testing.T) {
	t.Setenv("TALON_SANDBOX_CANARY", "leak")
	r := newRuntime(t, Config{}, echoTool(t), testTool(t, "wasi", ""))
	alongside(t, r, func() {
		got, err := r.Run(context.Background(), call("wasi", `{}`))
		if err != nil || got.IsError {
			t.Fatalf("Run = %+v, %v", got, err)
		}
		var out []int
		if err := json.Unmarshal([]byte(got.Content), &out); err != nil {
			t.Fatalf("output %q: %v", got.Content, err)
		}
		if len(out) != 10 {
			t.Fatalf("output %v, want 10 numbers", out)
		}
		if diff := cmp.Diff([]int{0, 0, 0, 0, 0, 0}, out[:6]); diff != "" {
			t.Errorf("environ and args (errno, count, size) (-want +got):\n%s", diff)
		}
		for i, name := range []string{"fd_prestat_get(3)", "sock_accept(3)", "sock_send(1)", "sock_recv(0)"} {
			if out[6+i] == 0 {
				t.Errorf("%s succeeded", name)
			}
		}
	})
}

// PoolSize 0 means no pool: no instance is made but for a call, and calls
// work.
func TestPoolSizeZero(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 0}, echoTool(t))
	for i := range 5 {
		if res, err := r.Run(context.Background(), call("echo", `{"i":1}`)); err != nil || res.Content != `{"i":1}` {
			t.Fatalf("call %d = %+v, %v", i, res, err)
		}
	}
	st := r.Stats()
	if got, want := (Stats{Instances: st.Instances, Pools: st.Pools, Pooled: st.Pooled, Memory: st.Memory}), (Stats{Instances: 5}); got != want {
		t.Errorf("Stats = %+v, want %+v (no memory left charged)", got, want)
	}
}

// Pools are made on first use of a tool, filled in the background, and
// their instances serve calls; Close waits for the fillers.
func TestPoolLazy(t *testing.T) {
	r := newRuntime(t, Config{PoolSize: 2}, echoTool(t), testTool(t, "state", ""))
	r.mu.Lock()
	n := len(r.pools)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d pools before any call, want 0", n)
	}
	for range 10 {
		if _, err := r.Run(context.Background(), call("echo", `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	_, echo := r.pools["echo"]
	_, state := r.pools["state"]
	r.mu.Unlock()
	if !echo || state {
		t.Errorf("pools: echo %v state %v, want only echo", echo, state)
	}
}
