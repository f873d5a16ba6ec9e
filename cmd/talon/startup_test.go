package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/tools"
)

// startupConfig is a gateway on a loopback listener with no channel: the
// terminal channel reads stdin.
func startupConfig(tb testing.TB, dataDir, llmURL, listen string) string {
	tb.Helper()
	body := strings.Replace(baseConfig(dataDir, "openai", llmURL), `listen: ""`, "listen: "+listen, 1)
	body = strings.Replace(body, "level: debug", "level: warn", 1)
	path := filepath.Join(tb.TempDir(), "talon.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func loopbackAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startRun starts `talon run` in-process and returns once /readyz answers
// 200, with a function that stops it and waits for it to exit.
func startRun(tb testing.TB, cfg, addr string) (stop func()) {
	tb.Helper()
	return startRunEnv(tb, cfg, addr, testEnv(nil), io.Discard)
}

// startRunEnv is startRun with an environment and a writer for the logs.
func startRunEnv(tb testing.TB, cfg, addr string, getenv func(string) string, stderr io.Writer) (stop func()) {
	tb.Helper()
	return startRunEnvWith(tb, cfg, addr, env{getenv: getenv}, stderr)
}

// startRunEnvWith is startRunEnv with e's seams (resolver, roots) too.
func startRunEnvWith(tb testing.TB, cfg, addr string, e env, stderr io.Writer) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	done := make(chan int, 1)
	e.stdin, e.stdout, e.stderr = stdinR, io.Discard, stderr
	go func() {
		done <- e.main(ctx, []string{"run", "--config", cfg})
	}()
	stop = func() {
		cancel()
		stdinW.Close()
		select {
		case code := <-done:
			if code != 0 {
				tb.Errorf("run exited with %d", code)
			}
		case <-time.After(30 * time.Second):
			tb.Fatal("run did not stop in 30 s")
		}
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop
			}
		}
		select {
		case code := <-done:
			tb.Fatalf("run exited with %d before it was ready", code)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			tb.Fatal("not ready in 30 s")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// BenchmarkStartToReady is the time from calling `talon run` to /readyz
// answering 200, over a data directory (database, key file, compilation
// cache) left by an earlier start. It does not include the process's own
// start (exec, runtime and package initialisation).
func BenchmarkStartToReady(b *testing.B) {
	srv := llmtest.NewServer(b, llmtest.Echo())
	dataDir := filepath.Join(b.TempDir(), "data")
	addr := loopbackAddr(b)
	cfg := startupConfig(b, dataDir, srv.URL, addr)
	startRun(b, cfg, addr)() // first start: creates the database and key
	for b.Loop() {
		stop := startRun(b, cfg, addr)
		b.StopTimer()
		stop()
		b.StartTimer()
	}
}

// BenchmarkStartToReadyUsedTools is BenchmarkStartToReady over a data
// directory where html_text was used: each start then loads it again in the
// background once ready, which must not delay ready.
func BenchmarkStartToReadyUsedTools(b *testing.B) {
	srv := llmtest.NewServer(b, llmtest.Echo())
	dataDir := filepath.Join(b.TempDir(), "data")
	addr := loopbackAddr(b)
	cfg := startupConfig(b, dataDir, srv.URL, addr)
	var out, errOut bytes.Buffer
	if code := (env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: testEnv(nil)}).main(context.Background(),
		[]string{"tool", "run", "--config", cfg, "html_text", "--args", `{"html":"<p>x</p>"}`}); code != 0 {
		b.Fatalf("tool run: exit %d: %s", code, errOut.String())
	}
	startRun(b, cfg, addr)()
	for b.Loop() {
		stop := startRun(b, cfg, addr)
		b.StopTimer()
		stop()
		b.StartTimer()
	}
}

// BenchmarkChatOneLine is `printf 'hi\n' | talon chat` in-process, against a
// fake model that answers at once: start, one streamed turn, shutdown.
func BenchmarkChatOneLine(b *testing.B) {
	srv := llmtest.NewServer(b, llmtest.Text("Hello there."))
	dataDir := filepath.Join(b.TempDir(), "data")
	cfg := startupConfig(b, dataDir, srv.URL, `""`)
	run := func() {
		var out bytes.Buffer
		code := env{stdin: strings.NewReader("hi\n"), stdout: &out, stderr: io.Discard, getenv: testEnv(nil)}.main(context.Background(), []string{"chat", "--config", cfg})
		if code != 0 || !strings.Contains(out.String(), "Hello there.") {
			b.Fatalf("chat: exit %d, output %q", code, out.String())
		}
	}
	run()
	for b.Loop() {
		run()
	}
}

// TestMetricsAddRuntimeCollectorsOnScrape checks that the Go runtime and
// process metrics, registered lazily, are served.
func TestMetricsAddRuntimeCollectorsOnScrape(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	addr := loopbackAddr(t)
	stop := startRun(t, startupConfig(t, filepath.Join(t.TempDir(), "data"), srv.URL, addr), addr)
	defer stop()
	for range 2 { // the second scrape must not register them again
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"go_goroutines", "process_resident_memory_bytes", "talon_queue_depth"} {
			if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
				t.Errorf("/metrics: status %d, no %s in\n%s", resp.StatusCode, want, body)
			}
		}
	}
}

// BenchmarkIdleSessions measures what idle sessions cost the gateway: it
// opens the app as `talon run` does, has each of 10,000 users send one
// message and get its answer, waits until the runtime is idle, and reports
// the growth of the Go heap in use (heap-MB) and of the resident set
// (rss-MB, which includes SQLite's page cache) against the same app after
// a warm-up of 100 users. Sessions live in SQLite; the runtime should keep
// only the queues of active ones.
func BenchmarkIdleSessions(b *testing.B) {
	const users, warmup = 10_000, 100
	for b.Loop() {
		heap, rss := idleSessionsGrowth(b, users, warmup)
		b.ReportMetric(float64(heap)/1e6, "heap-MB")
		b.ReportMetric(float64(rss)/1e6, "rss-MB")
	}
}

// idleSessionsGrowth returns how much the heap in use and the resident set
// grew from after warmup users to after users more had one turn each.
func idleSessionsGrowth(tb testing.TB, users, warmup int) (heap, rss int64) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := tb.TempDir()
	cfg, err := loadConfig(env{getenv: testEnv(nil)}, startupConfig(tb, filepath.Join(dir, "data"), "http://127.0.0.1:1/v1", `""`))
	if err != nil {
		tb.Fatal(err)
	}
	a, err := openApp(ctx, env{getenv: testEnv(nil), stderr: io.Discard}, cfg, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	defer a.Close()
	a.rt.LLM = &benchLLM{} // answers at once, in-process
	a.rt.Limits.MaxConcurrentTurns = 64
	a.rt.Limits.RatePerMinute = 0
	ch := &benchChannel{done: map[string]chan agent.Reply{}}
	a.rt.Register(ch)
	runDone := make(chan error, 1)
	go func() { runDone <- a.rt.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			tb.Error(err)
		}
	}()
	<-a.rt.Ready()

	send := func(from, to int) {
		const window = 256 // messages in flight
		waits := make(chan (<-chan agent.Reply), window)
		errc := make(chan error, 1)
		go func() {
			defer close(waits)
			for u := from; u < to; u++ {
				dk := "idle:" + strconv.Itoa(u)
				w := ch.expect(dk)
				key := agent.SessionKey{Principal: agent.Principal{Platform: "bench", Workspace: "T1", User: "u" + strconv.Itoa(u)}}
				if _, err := a.rt.Accept(ctx, agent.Inbound{DedupeKey: dk, Key: key, Text: "hello " + strconv.Itoa(u), ReplyTo: dk}); err != nil {
					errc <- err
					return
				}
				waits <- w
			}
		}()
		for w := range waits {
			select {
			case <-w:
			case <-time.After(30 * time.Second):
				tb.Fatal("no reply in 30 s")
			}
		}
		select {
		case err := <-errc:
			tb.Fatal(err)
		default:
		}
		if err := a.rt.WaitIdle(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	measure := func() (int64, int64) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapInuse), residentBytes()
	}
	send(0, warmup)
	h0, r0 := measure()
	send(warmup, warmup+users)
	h1, r1 := measure()
	return h1 - h0, r1 - r0
}

// residentBytes is this process's VmRSS, or 0 where /proc is missing.
func residentBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// TestIdleSessionsHoldLittleMemory is a small run of BenchmarkIdleSessions:
// after 500 users had a turn each and the runtime is idle, the heap has
// not grown by more than 3 KB a session (30 MB for 10,000).
func TestIdleSessionsHoldLittleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const users = 500
	heap, _ := idleSessionsGrowth(t, users, 50)
	if perSession := heap / users; perSession > 3000 {
		t.Errorf("heap grew by %d bytes a session over %d idle sessions, want ≤ 3000", perSession, users)
	}
}

// After a restart, every enabled tool is loaded in the background once the
// gateway is ready: the one used before from the compilation cache, the
// two never used compiled once (after warmCompileDelay, shortened here);
// after the next restart, all three from the cache, none instrumented nor
// compiled again. With sandbox.warm: false, nothing is loaded before a
// call asks for it.
func TestRestartWarmsToolsFromCache(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dataDir := filepath.Join(t.TempDir(), "data")
	addr := loopbackAddr(t)
	cfg := startupConfig(t, dataDir, srv.URL, addr)
	if res := runMain(t, env{}, "tool", "run", "--config", cfg, "html_text", "--args", `{"html":"<p>body</p>"}`); res.code != 0 {
		t.Fatalf("tool run: exit %d: %s", res.code, res.stderr)
	}
	metric := func(body, name string) string {
		for _, l := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return v
			}
		}
		return ""
	}
	builtins, err := sandbox.LoadTools(tools.FS, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range builtins {
		if b.Manifest.Enabled {
			n++
		}
	}
	enabled := strconv.Itoa(n) // github, html_text and http_fetch today
	warmed := func() string {
		var body string
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); metric(body, "talon_sandbox_tools_loaded") == enabled {
				break
			}
		}
		return body
	}
	for i, want := range []string{strconv.Itoa(n - 1), "0"} { // the first restart compiles those never used; the second nothing
		var body string
		func() {
			stop := startRunEnvWith(t, cfg, addr, env{getenv: testEnv(nil), warmCompileDelay: time.Millisecond}, io.Discard)
			defer stop()
			body = warmed()
		}()
		for name, want := range map[string]string{"talon_sandbox_tools_loaded": enabled,
			"talon_sandbox_modules_instrumented_total": want, "talon_sandbox_modules_compiled_total": want} {
			if got := metric(body, name); got != want {
				t.Errorf("restart %d: %s = %q, want %s", i+1, name, got, want)
			}
		}
	}
	stop := func() {}
	defer func() { stop() }()

	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, "sandbox:\n  warm: false\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	stop = startRun(t, cfg, addr)
	// The warming starts 200 ms after ready and loads the first tool from
	// the cache within ~150 ms: 1.5 s without a load shows it is off.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := metric(string(b), "talon_sandbox_tools_loaded"); got != "0" {
			t.Fatalf("with sandbox.warm: false, talon_sandbox_tools_loaded = %q, want 0 until a call", got)
		}
	}
}
