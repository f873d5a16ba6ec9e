package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/sandbox/internal/interrupt"
)

// startEcho starts a Runtime over dir with the echo tool, makes one call,
// and returns what it had to instrument and compile for it, with its log.
func startEcho(t *testing.T, dir string) (Stats, string) {
	t.Helper()
	var logs syncBuffer
	r, err := New(context.Background(), Config{CacheDir: dir, Tools: []Tool{echoTool(t)}, Logger: zerolog.New(&logs)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer r.Close(context.Background())
	res, err := r.Call(context.Background(), call("echo", `{"x":1}`))
	if err != nil || res.IsError || !strings.Contains(res.Content, `"x":1`) {
		t.Fatalf("echo call: %+v, %v", res, err)
	}
	st := r.Stats()
	return st, logs.String()
}

func wantWork(t *testing.T, st Stats, instrumented, compiled int64) {
	t.Helper()
	if st.Instrumented != instrumented || st.Compiled != compiled {
		t.Errorf("instrumented %d and compiled %d modules, want %d and %d", st.Instrumented, st.Compiled, instrumented, compiled)
	}
}

// cacheFiles returns the compiled files and the instrumented modules in dir.
func cacheFiles(t *testing.T, dir string) (compiled, instrumented []string) {
	t.Helper()
	compiled, _ = filepath.Glob(filepath.Join(dir, "wazero-*", strings.Repeat("?", 64)))
	ins, _ := filepath.Glob(filepath.Join(dir, instrumentedDir, "*.wasm"))
	if len(compiled) == 0 || len(ins) == 0 {
		t.Fatalf("cache holds %d compiled and %d instrumented files", len(compiled), len(ins))
	}
	return compiled, ins
}

func TestCacheHitAfterRestart(t *testing.T) {
	dir := t.TempDir()
	st, _ := startEcho(t, dir)
	wantWork(t, st, 1, 1)
	st, logs := startEcho(t, dir)
	wantWork(t, st, 0, 0)
	if strings.Contains(logs, "compilation cache") {
		t.Errorf("a clean cache was complained about: %s", logs)
	}
}

// A cache file that is not what Talon wrote is never used: it is removed,
// the module is made again, the call works, and the cache is whole again.
func TestCacheCorruptFileRebuilt(t *testing.T) {
	garble := func(at func(n int) int) func(string) {
		return func(p string) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[at(len(b))] ^= 0x5a
			os.WriteFile(p, b, 0o600)
		}
	}
	truncate := func(p string) { os.Truncate(p, 40) }
	cases := []struct {
		name                   string
		compiled, instrumented func(string) // what is done to the files; nil leaves them
		wantI, wantC           int64
	}{
		// wazero checks a CRC-32 of the code but not the function table
		// after its header: only the recorded digest catches this one.
		{"compiled function table", garble(func(int) int { return 40 }), nil, 0, 1},
		{"compiled code", garble(func(n int) int { return n / 2 }), nil, 0, 1},
		{"compiled truncated", truncate, nil, 0, 1},
		{"instrumented module", nil, garble(func(n int) int { return n - 1 }), 1, 0},
		{"instrumented truncated", nil, truncate, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			startEcho(t, dir)
			compiled, instrumented := cacheFiles(t, dir)
			for _, f := range []struct {
				fn    func(string)
				paths []string
			}{{tc.compiled, compiled}, {tc.instrumented, instrumented}} {
				if f.fn != nil {
					for _, p := range f.paths {
						f.fn(p)
					}
				}
			}
			st, logs := startEcho(t, dir)
			wantWork(t, st, tc.wantI, tc.wantC)
			if !strings.Contains(logs, "compilation cache: file removed") {
				t.Errorf("the bad file was not reported: %s", logs)
			}
			st, _ = startEcho(t, dir)
			wantWork(t, st, 0, 0)
		})
	}
}

// A compiled file nobody recorded (planted, or left by another program) is
// removed before wazero can read it.
func TestCacheUnrecordedFileRemoved(t *testing.T) {
	dir := t.TempDir()
	startEcho(t, dir)
	compiled, _ := cacheFiles(t, dir)
	planted := filepath.Join(filepath.Dir(compiled[0]), strings.Repeat("ab", 32))
	b, _ := os.ReadFile(compiled[0])
	os.WriteFile(planted, b, 0o600)
	st, logs := startEcho(t, dir)
	wantWork(t, st, 0, 0)
	if _, err := os.Stat(planted); err == nil || !strings.Contains(logs, "not recorded by Talon") {
		t.Errorf("the planted file is still there (%v) or was not reported: %s", err, logs)
	}
}

func TestCacheOtherInstrumenterVersionMisses(t *testing.T) {
	dir := t.TempDir()
	startEcho(t, dir)
	instrumenterVersion = interrupt.Version + 1
	defer func() { instrumenterVersion = interrupt.Version }()
	st, _ := startEcho(t, dir)
	wantWork(t, st, 1, 0) // the same output, so wazero's compiled code is reused
	st, _ = startEcho(t, dir)
	wantWork(t, st, 0, 0)
}

func TestCacheDirNotWritableWorksUncached(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.WriteFile(dir, []byte("a file where the directory should be"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		st, logs := startEcho(t, dir)
		wantWork(t, st, 1, 1)
		if !strings.Contains(logs, "compilation cache unusable") {
			t.Errorf("no warning: %s", logs)
		}
	}
}

// WarmAfter loads, once ready is closed, the tools an earlier process
// used, from the cache; not the others, and not before; Close stops it.
func TestWarmAfter(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	tools := func() []Tool { return []Tool{echoTool(t), testTool(t, "secret", "")} }
	start := func(ready <-chan struct{}) *Runtime {
		r, err := New(ctx, Config{CacheDir: dir, Tools: tools()})
		if err != nil {
			t.Fatal(err)
		}
		r.WarmAfter(ready, 0)
		return r
	}
	closed := make(chan struct{})
	close(closed)
	r := start(closed)
	if st := r.Stats(); st.Loaded != 0 {
		t.Errorf("a first start warmed tools nobody used: %+v", st)
	}
	if err := r.Load(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	r.Close(ctx)

	r = start(make(chan struct{})) // never ready: nothing loads, Close does not wait
	r.WarmAfter(closed, time.Hour) // ready, but not yet time: the same
	r.Close(ctx)
	if st := r.Stats(); st.Loaded != 0 || st.Instrumented != 0 {
		t.Errorf("warmed before ready and its delay: %+v", st)
	}

	r = start(closed)
	defer r.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for r.Stats().Loaded == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := r.Stats()
	if st.Loaded != 1 || st.Instrumented != 0 || st.Compiled != 0 || st.Instances != 0 {
		t.Errorf("after warming: %+v, want echo loaded from the cache, and no instance made", st)
	}
}

// A tool's first use checks the digests of its own compiled code only: a
// damaged file of another tool is neither read nor reported until that
// tool is used, and then it is removed and compiled again.
func TestCacheChecksOnlyTheModuleUsed(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	startEcho(t, dir)
	echoFiles, _ := cacheFiles(t, dir)
	var logs syncBuffer
	start := func() *Runtime {
		r, err := New(ctx, Config{CacheDir: dir, Tools: []Tool{echoTool(t), testTool(t, "state", "")}, Logger: zerolog.New(&logs)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := start()
	if err := r.Load(ctx, "state"); err != nil {
		t.Fatal(err)
	}
	r.Close(ctx)
	all, _ := cacheFiles(t, dir)
	var stateFile string
	for _, f := range all {
		if !slices.Contains(echoFiles, f) {
			stateFile = f
		}
	}
	if stateFile == "" {
		t.Fatalf("no compiled file of state among %v", all)
	}
	b, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x5a
	os.WriteFile(stateFile, b, 0o600)

	r = start()
	defer r.Close(ctx)
	if res, err := r.Call(ctx, call("echo", `{"x":1}`)); err != nil || res.IsError {
		t.Fatalf("echo call: %+v, %v", res, err)
	}
	if _, err := os.Stat(stateFile); err != nil || strings.Contains(logs.String(), "file removed") {
		t.Errorf("echo's first use checked state's compiled file (%v): %s", err, logs.String())
	}
	wantWork(t, r.Stats(), 0, 0)
	if err := r.Load(ctx, "state"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "does not match its recorded digest") {
		t.Errorf("state's damaged file was not reported: %s", logs.String())
	}
	wantWork(t, r.Stats(), 0, 1)
}
