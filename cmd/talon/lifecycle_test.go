package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// child is `talon run` in a child process, with its stdin, its stdout
// collected and its log lines readable as they come.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    syncBuffer
	logs   chan string   // the lines of stderr, as long as someone reads them
	exited chan struct{} // closed when the process has exited; then err is its Wait
	err    error
}

func startChild(t *testing.T, cfg string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(os.Args[0], "run", "--config", cfg), logs: make(chan string, 1024), exited: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	c.cmd.Stdout = &c.out
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var read sync.WaitGroup
	read.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			select {
			case c.logs <- sc.Text():
			default: // nobody waits for this one
			}
		}
	})
	go func() {
		read.Wait()
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exited
	})
	return c
}

// waitLog waits until a log line contains want.
func (c *child) waitLog(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line := <-c.logs:
			if strings.Contains(line, want) {
				return
			}
		case <-c.exited:
			t.Fatalf("talon run exited (%v) before logging %q", c.err, want)
		case <-deadline:
			t.Fatalf("no log line with %q in 30 s", want)
		}
	}
}

func (c *child) signal(t *testing.T, s os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(s); err != nil {
		t.Fatal(err)
	}
}

// A first SIGTERM lets the running turn finish within agent.shutdown_grace
// (here 30 minutes); a second one during the grace stops the process at
// once. The turn it cut short is answered at the next start.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the gateway twice as a child process")
	}
	asked := make(chan struct{}, 4)
	hang := llmtest.NewServer(t, func(llmtest.Request) llmtest.Response {
		asked <- struct{}{}
		return llmtest.Response{Hang: true}
	})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, baseConfig(data, "openai", hang.URL)+"  shutdown_grace: 30m\n")

	c := startChild(t, cfg)
	if _, err := io.WriteString(c.stdin, "a long question\n"); err != nil {
		t.Fatal(err)
	}
	within(t, asked, "the model call")
	c.signal(t, syscall.SIGTERM)
	c.waitLog(t, "stopping: running turns may finish")
	select {
	case <-c.exited:
		t.Fatalf("talon run exited (%v) on the first signal while a turn ran and the grace is 30 minutes", c.err)
	default:
	}
	start := time.Now()
	c.signal(t, syscall.SIGTERM)
	select {
	case <-c.exited:
		if c.err != nil {
			t.Errorf("exit after the second signal: %v, want status 0", c.err)
		}
		t.Logf("exited %s after the second signal", time.Since(start).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20 s after the second signal")
	}

	// The next start answers the question whose turn was cut short.
	srv := llmtest.NewServer(t, llmtest.Echo())
	cfg = writeConfig(t, dir, baseConfig(data, "openai", srv.URL))
	cmd := exec.Command(os.Args[0], "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	cmd.Stdin = strings.NewReader("")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, io.Discard
	if err := cmd.Run(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if !strings.Contains(out.String(), "echo: a long question") {
		t.Errorf("after the restart the question was not answered; output: %q", out.String())
	}
}

// On SIGTERM the gateway stops taking messages and lets the running turn
// finish: its answer is shown and the process exits 0 without a second
// signal.
func TestSignalLetsRunningTurnFinish(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the gateway as a child process")
	}
	asked := make(chan struct{}, 4)
	release := make(chan struct{})
	srv := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		asked <- struct{}{}
		<-release
		return llmtest.Response{Text: "late answer to " + req.LastUserText()}
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL)+"  shutdown_grace: 30m\n")
	c := startChild(t, cfg)
	if _, err := io.WriteString(c.stdin, "question\n"); err != nil {
		t.Fatal(err)
	}
	within(t, asked, "the model call")
	c.signal(t, syscall.SIGTERM)
	c.waitLog(t, "stopping: running turns may finish")
	close(release)
	select {
	case <-c.exited:
		if c.err != nil {
			t.Errorf("exit: %v, want status 0", c.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after the turn could finish")
	}
	if !strings.Contains(c.out.String(), "late answer to question") {
		t.Errorf("the running turn's answer was not shown; output: %q", c.out.String())
	}
}

// within receives from ch, failing the test if nothing comes in 30 s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nothing in 30 s", what)
		panic("unreachable")
	}
}
