package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox/egress"
)

// fixture is built once per test binary: the test guests' binaries and one
// compilation cache directory shared by every Runtime, so each module is
// compiled once.
var fixture struct {
	cacheDir string
	wasm     map[string][]byte
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "talon-sandbox-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fixture.cacheDir = dir
	fixture.wasm = map[string][]byte{}
	files, err := filepath.Glob("testdata/*.wasm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fixture.wasm[strings.TrimSuffix(filepath.Base(f), ".wasm")] = b
	}
	return m.Run()
}

var alice = agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}

// testTool is a test guest with a manifest; extra is YAML appended to the
// name and description.
func testTool(t testing.TB, name, extra string) Tool {
	t.Helper()
	y := "name: " + name + "\ndescription: test tool " + name + "\n" + extra
	m, err := ParseManifest(name+".yaml", []byte(y))
	if err != nil {
		t.Fatalf("manifest %s: %v", name, err)
	}
	w, ok := fixture.wasm[name]
	if !ok {
		t.Fatalf("no testdata/%s.wasm (run go generate)", name)
	}
	return Tool{Manifest: m, Wasm: w, Source: "testdata"}
}

// newRuntime starts a Runtime on the shared cache and closes it at the end
// of the test.
func newRuntime(t testing.TB, cfg Config, tools ...Tool) *Runtime {
	t.Helper()
	cfg.Tools = append(cfg.Tools, tools...)
	if cfg.CacheDir == "" {
		cfg.CacheDir = fixture.cacheDir
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func call(name, args string) agent.ToolCall {
	return agent.ToolCall{ID: "call-1", Name: name, Args: []byte(args), Key: agent.SessionKey{Principal: alice}}
}

// fakeEgress records what the host asks the broker and answers from respond.
type fakeEgress struct {
	respond func(egress.Request) (*egress.Response, error)

	mu      sync.Mutex
	callers []egress.Caller  // guarded by mu
	reqs    []egress.Request // guarded by mu
}

func (f *fakeEgress) Do(ctx context.Context, c egress.Caller, r egress.Request) (*egress.Response, error) {
	f.mu.Lock()
	f.callers = append(f.callers, c)
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
	return f.respond(r)
}

func (f *fakeEgress) requests() []egress.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]egress.Request(nil), f.reqs...)
}

// fakeApprover answers every request with ok and err and records them.
type fakeApprover struct {
	ok  bool
	err error
	// think is how long the person takes to answer.
	think time.Duration

	mu   sync.Mutex
	reqs []ApprovalRequest // guarded by mu
}

func (f *fakeApprover) Approve(ctx context.Context, req ApprovalRequest) (bool, error) {
	if f.think > 0 {
		select {
		case <-time.After(f.think):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	return f.ok, f.err
}

// fakeSecrets holds the secret names each user has.
type fakeSecrets map[agent.Principal][]string

func (f fakeSecrets) Has(ctx context.Context, p agent.Principal, name string) bool {
	for _, n := range f[p] {
		if n == name {
			return true
		}
	}
	return false
}

// fakeRedactor replaces each user's secret values with [REDACTED], and
// records whom it was asked about.
type fakeRedactor map[agent.Principal][]string

func (f fakeRedactor) Redact(ctx context.Context, p agent.Principal, text string) (string, int) {
	n := 0
	for _, v := range f[p] {
		n += strings.Count(text, v)
		text = strings.ReplaceAll(text, v, "[REDACTED]")
	}
	return text, n
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
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

// errKind returns the Kind of a *CallError, or err itself.
func errKind(err error) error {
	var ce *CallError
	if errors.As(err, &ce) {
		return ce.Kind
	}
	return err
}

// echoTool is the well-behaved echo guest with room for many calls.
func echoTool(t testing.TB) Tool {
	return testTool(t, "echo", "limits: {per_minute: 100000}\n")
}
