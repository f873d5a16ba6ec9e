package main

import (
	crand "crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// What the chaos tests of several `talon run` replicas share: the counted
// target of their http_fetch tool, the environment the replicas read, and
// each replica's process.

// hitCounter is the http_fetch tool's target: it counts each path it is
// asked for, outside the replicas, so that a tool call run twice shows.
type hitCounter struct {
	URL  string
	mu   sync.Mutex
	hits map[string]int
}

// newFetchTool serves a hitCounter and writes the http_fetch tool that
// reaches it (a trusted host on 127.0.0.1) into dir/tools; it returns the
// counter and the tools directory.
func newFetchTool(t *testing.T, dir string) (*hitCounter, string) {
	t.Helper()
	c := &hitCounter{hits: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.hits[r.URL.Path]++
		c.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "counted %s", r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c, writeFetchTool(t, dir, srv.URL, "30s")
}

// writeFetchTool writes, in dir/tools (returned), the manifest of the
// built-in http_fetch allowed to GET the server at url, with deadline.
func writeFetchTool(t *testing.T, dir, url, deadline string) string {
	t.Helper()
	toolsDir := filepath.Join(dir, "tools")
	if err := os.MkdirAll(toolsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf("name: http_fetch\ndescription: Fetch a page of the counter.\nparameters:\n  type: object\n"+
		"  properties:\n    url: {type: string}\n  required: [url]\nhttp:\n  - scheme: http\n    host: %q\n    methods: [GET]\n    trusted: true\nlimits:\n  deadline: %s\n",
		strings.TrimPrefix(url, "http://"), deadline)
	if err := os.WriteFile(filepath.Join(toolsDir, "http_fetch.yaml"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	return toolsDir
}

// setReplicaEnv sets what the replicas' configurations name: Slack's
// tokens, DATABASE_URL, NATS_URL and one vault key for all of them.
func setReplicaEnv(t *testing.T, dbURL, natsURL string) {
	t.Setenv("SLACK_BOT_TOKEN", testBotToken)
	t.Setenv("SLACK_APP_TOKEN", testAppToken)
	t.Setenv("SLACK_SIGNING_SECRET", testSigningSecret)
	t.Setenv("DATABASE_URL", dbURL)
	t.Setenv("NATS_URL", natsURL)
	key := make([]byte, 32)
	_, _ = crand.Read(key)
	t.Setenv("TALON_VAULT_KEY", base64.StdEncoding.EncodeToString(key))
}

// chaosReplica is one `talon run` process of a chaos test; each start logs
// to run<N>.log beside its configuration.
type chaosReplica struct {
	name, cfg, addr string
	proc            *exec.Cmd
	exited          chan struct{} // closed once proc has exited
	starts          int
}

// start runs the replica's process (this test binary as talon).
func (r *chaosReplica) start(t *testing.T) {
	t.Helper()
	r.starts++
	logf, err := os.Create(filepath.Join(filepath.Dir(r.cfg), fmt.Sprintf("run%d.log", r.starts)))
	if err != nil {
		t.Fatal(err)
	}
	r.proc = exec.Command(os.Args[0], "run", "--config", r.cfg)
	r.proc.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	r.proc.Stdin = strings.NewReader("")
	r.proc.Stdout, r.proc.Stderr = logf, logf
	if err := r.proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	r.exited = exited
	go func(c *exec.Cmd) {
		_ = c.Wait()
		logf.Close()
		close(exited)
	}(r.proc)
}

// lastLog is the end of the replica's latest log.
func (r *chaosReplica) lastLog() string { return tailLog(filepath.Dir(r.cfg), r.starts) }

// ready waits, up to 2 minutes, for the replica's /readyz.
func (r *chaosReplica) ready(t *testing.T) {
	t.Helper()
	waitReady(t, r.name, r.addr, r.exited, r.lastLog)
}

// waitReady waits, up to 2 minutes, until the replica name at addr
// answers /readyz with 200; it fails the test if exited is closed first.
func waitReady(t *testing.T, name, addr string, exited <-chan struct{}, lastLog func() string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("replica %s exited before it was ready:\n%s", name, lastLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not ready in 2 minutes:\n%s", name, lastLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killReplicas kills every replica still running and, when the test
// failed (and CHAOS_DEBUG_DIR does not keep the logs), logs the end of
// each one's log.
func killReplicas(t *testing.T, reps []*chaosReplica) {
	for _, r := range reps {
		if r.proc != nil {
			_ = r.proc.Process.Signal(syscall.SIGKILL)
			<-r.exited
		}
	}
	if t.Failed() && os.Getenv("CHAOS_DEBUG_DIR") == "" {
		for _, r := range reps {
			t.Logf("last log of %s:\n%s", r.name, r.lastLog())
		}
	}
}
