package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
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

// waitWarm waits for a warming to end, within a generous deadline.
func waitWarm(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the warming did not end")
	}
}

// WarmAfter loads every enabled tool once ready is closed: the ones an
// earlier process loaded after delay, from the cache, the others (to
// compile) after compileDelay; not before, and not the disabled ones. On a
// restart over a warm cache it loads them all without instrumenting or
// compiling any, and makes no instance. Close stops it.
func TestWarmAfter(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	tools := func() []Tool {
		return []Tool{echoTool(t), testTool(t, "state", ""), testTool(t, "secret", "enabled: false\n")}
	}
	start := func() *Runtime {
		r, err := New(ctx, Config{CacheDir: dir, Tools: tools()})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	closed := make(chan struct{})
	close(closed)

	r := start() // never ready, then ready but not yet time: nothing loads, Close does not wait
	never := r.WarmAfter(make(chan struct{}), 0, 0)
	later := r.WarmAfter(closed, time.Hour, time.Hour)
	notYet := r.WarmAfter(closed, 0, time.Hour)
	r.Close(ctx)
	for _, done := range []<-chan struct{}{never, later, notYet} {
		waitWarm(t, done)
	}
	if st := r.Stats(); st.Loaded != 0 || st.Instrumented != 0 || st.Compiled != 0 {
		t.Errorf("warmed before ready and its delay: %+v", st)
	}
	if compiled, _ := filepath.Glob(filepath.Join(dir, "wazero-*", "*")); len(compiled) != 0 {
		t.Errorf("the cache holds %d compiled files before any warming", len(compiled))
	}

	r = start() // the first start: an empty cache, every enabled tool compiled off the calls' path
	waitWarm(t, r.WarmAfter(closed, time.Hour, 0))
	if st := r.Stats(); st.Loaded != 2 || st.Instrumented != 2 || st.Compiled != 2 || st.Instances != 0 {
		t.Errorf("first start, after warming: %+v, want echo and state instrumented, compiled and loaded, and no instance", st)
	}
	r.Close(ctx)

	r = start() // a restart: everything from the verified cache, at delay
	defer r.Close(ctx)
	waitWarm(t, r.WarmAfter(closed, 0, time.Hour))
	if st := r.Stats(); st.Loaded != 2 || st.Instrumented != 0 || st.Compiled != 0 || st.Instances != 0 {
		t.Errorf("restart, after warming: %+v, want echo and state loaded from the cache, and no instance", st)
	}
	for _, n := range []string{"echo", "state"} {
		if res, err := r.Call(ctx, call(n, `{"x":1}`)); err != nil || res.IsError {
			t.Errorf("%s after warming: %+v, %v", n, res, err)
		}
	}
	if st := r.Stats(); st.Instrumented != 0 || st.Compiled != 0 {
		t.Errorf("the calls after warming instrumented or compiled: %+v", st)
	}
}

// A tool no earlier process loaded waits for compileDelay; one that was
// loaded does not.
func TestWarmCompilesNewToolsLater(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	first := newRuntime(t, Config{CacheDir: dir}, echoTool(t))
	if err := first.Load(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	first.Close(ctx)

	r := newRuntime(t, Config{CacheDir: dir}, echoTool(t), testTool(t, "state", ""))
	if used, others := r.warmOrder(); !slices.Equal(used, []string{"echo"}) || !slices.Equal(others, []string{"state"}) {
		t.Fatalf("warm order: used %v, others %v; want [echo] and [state]", used, others)
	}
	closed := make(chan struct{})
	close(closed)
	done := r.WarmAfter(closed, 0, time.Hour)
	for deadline := time.Now().Add(2 * time.Minute); r.Stats().Loaded == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("the warming ended without waiting to compile state")
	default:
	}
	if st := r.Stats(); st.Loaded != 1 || st.Instrumented != 0 || st.Compiled != 0 {
		t.Errorf("before compileDelay: %+v, want echo alone loaded, from the cache", st)
	}
}

// A call that comes while the warming loads its tool waits for that load:
// the module is read, instrumented and compiled once.
func TestWarmCallWaitsForTheWarming(t *testing.T) {
	ctx := context.Background()
	gate := newGateFS(fstest.MapFS{"slow.wasm": {Data: fixture.wasm["echo"]}})
	files := &countingFS{FS: gate}
	m, err := ParseManifest("slow.yaml", []byte("name: slow\ndescription: echo, slow to read\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, Config{CacheDir: t.TempDir()}, Tool{Manifest: m, FS: files, Path: "slow.wasm", Source: "gate"})
	closed := make(chan struct{})
	close(closed)
	warmed := r.WarmAfter(closed, 0, 0)
	select { // the warming reads the module, and waits at the gate
	case <-gate.opened:
	case <-time.After(2 * time.Minute):
		t.Fatal("the warming did not load the tool")
	}
	called := make(chan error, 1)
	go func() {
		res, err := r.Call(ctx, call("slow", `{"x":1}`))
		if err == nil && res.IsError {
			err = errors.New(res.Content)
		}
		called <- err
	}()
	close(gate.release)
	if err := <-called; err != nil {
		t.Fatalf("the call during the warming: %v", err)
	}
	waitWarm(t, warmed)
	if st, opened := r.Stats(), files.count("slow.wasm"); st.Instrumented != 1 || st.Compiled != 1 || opened != 1 {
		t.Errorf("instrumented %d, compiled %d, module read %d times; want each once", st.Instrumented, st.Compiled, opened)
	}
}

// A call whose tool the warming has not reached jumps its queue: the
// warming starts no other load while the call's is in progress.
func TestWarmWaitsForACallsLoad(t *testing.T) {
	ctx := context.Background()
	gate := newGateFS(fstest.MapFS{"slow.wasm": {Data: fixture.wasm["echo"]}})
	m, err := ParseManifest("slow.yaml", []byte("name: slow\ndescription: echo, slow to read\n"))
	if err != nil {
		t.Fatal(err)
	}
	other := &countingFS{FS: fstest.MapFS{"aaa.wasm": {Data: fixture.wasm["echo"]}}}
	m2, err := ParseManifest("aaa.yaml", []byte("name: aaa\ndescription: echo, first in the warming's order\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, Config{CacheDir: t.TempDir()},
		Tool{Manifest: m, FS: gate, Path: "slow.wasm", Source: "gate"}, Tool{Manifest: m2, FS: other, Path: "aaa.wasm", Source: "count"})
	called := make(chan error, 1)
	go func() {
		res, err := r.Call(ctx, call("slow", `{"x":1}`))
		if err == nil && res.IsError {
			err = errors.New(res.Content)
		}
		called <- err
	}()
	select { // the call's load reads the module, and waits at the gate
	case <-gate.opened:
	case <-time.After(2 * time.Minute):
		t.Fatal("the call did not load its tool")
	}
	closed := make(chan struct{})
	close(closed)
	warmed := r.WarmAfter(closed, 0, 0)
	time.Sleep(100 * time.Millisecond) // time for the warming to start aaa's load, were it to
	if n := other.count("aaa.wasm"); n != 0 {
		t.Errorf("the warming read aaa's module %d times while a call's load was in progress, want 0", n)
	}
	close(gate.release)
	if err := <-called; err != nil {
		t.Fatalf("the call: %v", err)
	}
	waitWarm(t, warmed)
	if st := r.Stats(); st.Loaded != 2 || other.count("aaa.wasm") != 1 {
		t.Errorf("after the warming: %+v, aaa read %d times; want both loaded, aaa read once", st, other.count("aaa.wasm"))
	}
}

// A damaged compiled file is found by the warming after a restart, removed
// and compiled again, off the calls' path; the next restart uses the new
// one.
func TestWarmRebuildsADamagedCache(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	closed := make(chan struct{})
	close(closed)
	var logs syncBuffer
	warm := func() Stats {
		r, err := New(ctx, Config{CacheDir: dir, Tools: []Tool{echoTool(t)}, Logger: zerolog.New(&logs)})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(ctx)
		waitWarm(t, r.WarmAfter(closed, 0, 0))
		if res, err := r.Call(ctx, call("echo", `{"x":1}`)); err != nil || res.IsError {
			t.Fatalf("echo after warming: %+v, %v", res, err)
		}
		return r.Stats()
	}
	wantWork(t, warm(), 1, 1)
	compiled, _ := cacheFiles(t, dir)
	for _, p := range compiled {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x5a
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wantWork(t, warm(), 0, 1)
	if !strings.Contains(logs.String(), "does not match its recorded digest") {
		t.Errorf("the damaged file was not reported: %s", logs.String())
	}
	wantWork(t, warm(), 0, 0)
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
