package tools

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/talonhq/talon/sandbox/guest"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// This file runs the committed modules in wazero with a minimal fake of the
// host side of ABI v1 (sandbox/ABI.md): it proves the guest SDK and the
// tools speak the ABI, independently of package sandbox.

// fakeHost answers the talon host functions for one call.
type fakeHost struct {
	// respond returns the result JSON of an http_request.
	respond func(req guest.Request) string
	secrets map[string]bool

	mu       sync.Mutex
	requests []guest.Request
	logs     []string
	pending  []byte
}

type fakeKey struct{}

func hostOf(ctx context.Context) *fakeHost { return ctx.Value(fakeKey{}).(*fakeHost) }

// read returns guest memory [ptr, ptr+n) or aborts the call.
func read(m api.Module, ptr, n uint32) []byte {
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		panic(fmt.Sprintf("guest fault: [%d, %d) outside memory", ptr, ptr+n))
	}
	return append([]byte(nil), b...)
}

// testEnv is a wazero runtime with WASI and the fake talon module, shared by
// the tests of this binary so that each module is compiled once.
type testEnv struct {
	rt wazero.Runtime

	mu       sync.Mutex
	compiled map[string]wazero.CompiledModule
}

var (
	envOnce sync.Once
	env     *testEnv
	envErr  error
)

func getEnv(t *testing.T) *testEnv {
	t.Helper()
	envOnce.Do(func() {
		ctx := context.Background()
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().
			WithCompilationCache(wazero.NewCompilationCache()).
			WithMemoryLimitPages(1024)) // 64 MiB
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
			envErr = err
			return
		}
		_, err := rt.NewHostModuleBuilder("talon").
			NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, ptr, n uint32) int32 {
			h := hostOf(ctx)
			var req guest.Request
			var res string
			if err := json.Unmarshal(read(m, ptr, n), &req); err != nil {
				res = `{"error":{"kind":"invalid","message":"bad request json"}}`
			} else {
				h.mu.Lock()
				h.requests = append(h.requests, req)
				h.mu.Unlock()
				res = h.respond(req)
			}
			h.pending = []byte(res)
			return int32(len(res))
		}).Export("http_request").
			NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, ptr, n uint32) int32 {
			h := hostOf(ctx)
			c := min(int(n), len(h.pending))
			if !m.Memory().Write(ptr, h.pending[:c]) {
				panic("guest fault: result_read outside memory")
			}
			h.pending = nil
			return int32(c)
		}).Export("result_read").
			NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, level, ptr, n uint32) {
			h := hostOf(ctx)
			h.mu.Lock()
			h.logs = append(h.logs, fmt.Sprintf("%d:%s", level, read(m, ptr, n)))
			h.mu.Unlock()
		}).Export("log").
			NewFunctionBuilder().WithFunc(func(ctx context.Context, m api.Module, ptr, n uint32) int32 {
			if hostOf(ctx).secrets[string(read(m, ptr, n))] {
				return 1
			}
			return 0
		}).Export("has_secret").
			Instantiate(ctx)
		if err != nil {
			envErr = err
			return
		}
		env = &testEnv{rt: rt, compiled: map[string]wazero.CompiledModule{}}
	})
	if envErr != nil {
		t.Fatalf("wazero setup: %v", envErr)
	}
	return env
}

// compile returns the compiled module of the embedded <name>.wasm.
func (e *testEnv) compile(t *testing.T, name string) wazero.CompiledModule {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.compiled[name]; ok {
		return c
	}
	bin, err := fs.ReadFile(FS, name+".wasm")
	if err != nil {
		t.Fatalf("read %s.wasm: %v", name, err)
	}
	c, err := e.rt.CompileModule(context.Background(), bin)
	if err != nil {
		t.Fatalf("compile %s.wasm: %v", name, err)
	}
	e.compiled[name] = c
	return c
}

// call runs one tool call the way ABI.md describes and returns the output.
func call(t *testing.T, name string, input string, h *fakeHost) string {
	t.Helper()
	e := getEnv(t)
	ctx := context.WithValue(context.Background(), fakeKey{}, h)
	m, err := e.rt.InstantiateModule(ctx, e.compile(t, name), wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions("_initialize").
		WithSysWalltime().WithSysNanotime().
		WithRandSource(rand.Reader))
	if err != nil {
		t.Fatalf("instantiate %s: %v", name, err)
	}
	defer m.Close(ctx)

	res, err := m.ExportedFunction("talon_alloc").Call(ctx, uint64(len(input)))
	if err != nil {
		t.Fatalf("talon_alloc: %v", err)
	}
	ptr := uint32(res[0])
	if ptr == 0 {
		t.Fatal("talon_alloc returned 0")
	}
	if !m.Memory().Write(ptr, []byte(input)) {
		t.Fatalf("write input at %d: outside memory", ptr)
	}
	res, err = m.ExportedFunction("talon_call").Call(ctx, uint64(ptr), uint64(len(input)))
	if err != nil {
		t.Fatalf("talon_call: %v", err)
	}
	out, ok := m.Memory().Read(uint32(res[0]>>32), uint32(res[0]))
	if !ok {
		t.Fatalf("talon_call returned %#x: outside memory", res[0])
	}
	if !json.Valid(out) {
		t.Fatalf("talon_call output is not JSON: %q", out)
	}
	return string(out)
}

// builtins lists the tools embedded in FS.
func builtins(t *testing.T) []string {
	t.Helper()
	matches, err := fs.Glob(FS, "*.wasm")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(m, ".wasm"))
	}
	sort.Strings(names)
	return names
}

func TestModulesMatchABI(t *testing.T) {
	e := getEnv(t)
	for _, name := range builtins(t) {
		t.Run(name, func(t *testing.T) {
			c := e.compile(t, name)
			for _, imp := range c.ImportedFunctions() {
				mod, fn, _ := imp.Import()
				if mod != "talon" && mod != "wasi_snapshot_preview1" {
					t.Errorf("imports %s.%s, want only talon and wasi_snapshot_preview1", mod, fn)
				}
			}
			exports := c.ExportedFunctions()
			for _, want := range []string{"talon_abi_version_1", "talon_alloc", "talon_call", "_initialize"} {
				if _, ok := exports[want]; !ok {
					t.Errorf("missing export %s", want)
				}
			}
			if _, ok := exports["_start"]; ok {
				t.Error("exports _start: built as a command, want a reactor (-buildmode=c-shared)")
			}
			if _, ok := c.ExportedMemories()["memory"]; !ok {
				t.Error("missing exported memory")
			}
			if _, err := fs.Stat(FS, name+".yaml"); err != nil {
				t.Errorf("no default manifest: %v", err)
			}
		})
	}
}

func TestMalformedArguments(t *testing.T) {
	for _, name := range builtins(t) {
		t.Run(name, func(t *testing.T) {
			h := &fakeHost{respond: func(guest.Request) string { t.Error("unexpected http_request"); return `{}` }}
			tests := []struct{ input, wantPrefix string }{
				{`{"tool":"` + name + `","args":{"no_such_argument":1}}`, `{"error":"invalid arguments: `},
				{`{"tool":"` + name + `","args":"a string"}`, `{"error":"invalid arguments: `},
				{`not json`, `{"error":"invalid input: `},
			}
			for _, tt := range tests {
				if got := call(t, name, tt.input, h); !strings.HasPrefix(got, tt.wantPrefix) {
					t.Errorf("call(%s) = %s, want prefix %s", tt.input, got, tt.wantPrefix)
				}
			}
		})
	}
}

const page = `<!doctype html><html><head><title>Talon &amp; friends</title>
<script>document.write("<p>no</p>")</script></head>
<body><nav>Home | About</nav><h1>Welcome</h1><p>Tools run   in a
<b>sandbox</b>.</p></body></html>`

func TestHTTPFetchRoundTrip(t *testing.T) {
	h := &fakeHost{respond: func(req guest.Request) string {
		b, _ := json.Marshal(guest.Response{
			Status:  200,
			Headers: map[string]string{"Content-Type": "text/html; charset=utf-8"},
			Body:    page,
			URL:     req.URL + "final",
		})
		return string(b)
	}}
	got := call(t, "http_fetch", `{"tool":"http_fetch","args":{"url":"https://example.com/"}}`, h)
	want := `{"ok":{"status":200,"url":"https://example.com/final","title":"Talon & friends","text":"Welcome\n\nTools run in a sandbox.","truncated":false}}`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s", diff)
	}
	if len(h.requests) != 1 || h.requests[0].Method != "GET" || h.requests[0].URL != "https://example.com/" {
		t.Errorf("requests = %+v, want one GET https://example.com/", h.requests)
	}
}

func TestHTTPErrorReachesModel(t *testing.T) {
	h := &fakeHost{respond: func(guest.Request) string {
		return `{"error":{"kind":"denied","message":"host \"10.0.0.1\" refused: address is private"}}`
	}}
	got := call(t, "http_fetch", `{"tool":"http_fetch","args":{"url":"http://10.0.0.1/"}}`, h)
	want := `{"error":"fetch http://10.0.0.1/: http denied: host \"10.0.0.1\" refused: address is private"}`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s", diff)
	}
}

func TestGitHubCredentialOnlyWhenStored(t *testing.T) {
	issue := `{"number":7,"title":"Crash","state":"open","user":{"login":"alice"},"labels":[{"name":"bug"}],"html_url":"https://github.com/o/r/issues/7","body":"b"}`
	tests := []struct {
		name     string
		secrets  map[string]bool
		wantCred string
	}{
		{"with token", map[string]bool{"github": true}, "github"},
		{"anonymous", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &fakeHost{secrets: tt.secrets, respond: func(guest.Request) string {
				b, _ := json.Marshal(guest.Response{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: issue})
				return string(b)
			}}
			got := call(t, "github", `{"tool":"github","args":{"action":"get_issue","repo":"o/r","number":7}}`, h)
			want := `{"ok":{"number":7,"title":"Crash","state":"open","author":"alice","labels":["bug"],"url":"https://github.com/o/r/issues/7","comments":0,"body":"b"}}`
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("output mismatch (-want +got):\n%s", diff)
			}
			wantReq := []guest.Request{{
				Method: "GET",
				URL:    "https://api.github.com/repos/o/r/issues/7",
				Headers: map[string]string{
					"Accept":               "application/vnd.github+json",
					"X-GitHub-Api-Version": "2022-11-28",
					"User-Agent":           "talon-github-tool",
				},
				Credential: tt.wantCred,
			}}
			if diff := cmp.Diff(wantReq, h.requests); diff != "" {
				t.Errorf("requests mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPRequestRoundTrip(t *testing.T) {
	h := &fakeHost{respond: func(req guest.Request) string {
		b, _ := json.Marshal(guest.Response{Status: 201, Headers: map[string]string{"Content-Type": "application/json"}, Body: `{"echo":` + req.Body + `}`})
		return string(b)
	}}
	got := call(t, "http_request", `{"tool":"http_request","args":{"method":"POST","url":"https://api.example.com/v1/items","json":{"name":"x"},"credential":"example"}}`, h)
	want := `{"ok":{"status":201,"headers":{"content-type":"application/json"},"body":{"echo":{"name":"x"}}}}`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s", diff)
	}
	if len(h.requests) != 1 || h.requests[0].Credential != "example" || h.requests[0].Body != `{"name":"x"}` {
		t.Errorf("requests = %+v, want one POST with credential example and the JSON body", h.requests)
	}
}

func TestManifestsNameTheirModule(t *testing.T) {
	for _, name := range builtins(t) {
		b, err := fs.ReadFile(FS, name+".yaml")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(string(b), "\nname: "+name+"\n") {
			t.Errorf("%s.yaml does not say name: %s", name, name)
		}
	}
}
