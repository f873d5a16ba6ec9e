package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// benchTestEnv returns the PostgreSQL schema and the NATS server the tests
// of talon bench's replica processes run on, or skips.
func benchTestEnv(t *testing.T) (dbURL, natsURL string, pool *pgxpool.Pool) {
	t.Helper()
	natsURL = needPostgresAndNATS(t, "talon bench's replicas as processes")
	dbURL, pool = postgresSchema(t)
	return dbURL, natsURL, pool
}

// benchCommand is talon bench with args, run by this test binary acting as
// talon (as its replicas will).
func benchCommand(args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.Command(os.Args[0], append([]string{"bench"}, args...)...)
	cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	cmd.Stdin = strings.NewReader("")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// waitExit waits for cmd, killing it and failing the test if it has not
// exited within d.
func waitExit(t *testing.T, cmd *exec.Cmd, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("talon bench did not exit within %s", d)
		return nil
	}
}

// childrenOf returns the processes whose parent is pid, with their
// arguments (Linux's /proc).
func childrenOf(pid int) map[int][]string {
	out := map[int][]string{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		child, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		out[child] = strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	}
	return out
}

// talon bench --replicas 2 runs each replica as a process of its own:
// every message is answered without error, each process accepted its
// users' messages (user u by replica u mod 2) and the two ran all the
// turns between them, and the peak RSS is the processes' sum.
func TestBenchReplicasAsProcesses(t *testing.T) {
	dbURL, natsURL, _ := benchTestEnv(t)
	cmd, stdout, stderr := benchCommand("--json", "--users", "12", "--messages", "3", "--tool-share", "0.25",
		"--replicas", "2", "--store", "postgres:"+dbURL, "--nats", natsURL)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd, 3*time.Minute); err != nil {
		t.Fatalf("talon bench: %v\n%s", err, stderr)
	}
	var got benchResult
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, stdout)
	}
	if got.Replicas != 2 || got.Turns != 36 || got.Errors != 0 || got.TurnsPerSec <= 0 || got.ToolCalls != 9 || got.OverheadMS.P50 > got.OverheadMS.P99 {
		t.Errorf("replicas: %+v; want 2 replicas, 36 turns, 9 tool calls, no errors", got)
	}
	if r := got.Reference; r == nil || r.Turns != 36 || r.Errors != 0 {
		t.Errorf("reference: %+v; want 36 turns on SQLite, no errors", r)
	}
	if len(got.Procs) != 2 {
		t.Fatalf("procs: %+v; want 2", got.Procs)
	}
	var turns int
	rss := got.BenchRSSBytes
	for i, p := range got.Procs {
		if p.PID <= 0 || p.PID == cmd.Process.Pid || p.Accepted != 18 || p.PeakRSSBytes <= 0 {
			t.Errorf("replica %d: %+v; want a process of its own (not the bench's %d) that accepted 18 messages", i, p, cmd.Process.Pid)
		}
		turns += p.Turns
		rss += p.PeakRSSBytes
	}
	if got.Procs[0].PID == got.Procs[1].PID {
		t.Errorf("both replicas report pid %d", got.Procs[0].PID)
	}
	if turns != 36 {
		t.Errorf("the replicas ran %d turns between them, want 36", turns)
	}
	// The two share this host's CPUs: each has half, as GOMAXPROCS and
	// as its pool.
	share := max(1, runtime.GOMAXPROCS(0)/2)
	if got.ProcsPerReplica != share || got.PoolPerReplica != share {
		t.Errorf("procs_per_replica %d, pool_per_replica %d; want %d each", got.ProcsPerReplica, got.PoolPerReplica, share)
	}
	for i, p := range got.Procs {
		if p.GOMAXPROCS != share {
			t.Errorf("replica %d ran with GOMAXPROCS %d, want %d", i, p.GOMAXPROCS, share)
		}
	}
	if got.BenchRSSBytes <= 0 || got.PeakRSSBytes != rss {
		t.Errorf("peak RSS %d, bench's own %d; want the bench's and the replicas' sum, %d", got.PeakRSSBytes, got.BenchRSSBytes, rss)
	}
	if st := got.Stages; st == nil || st.Mean.Accept <= 0 || st.Mean.Turn <= 0 || st.TurnMS.P50 <= 0 {
		t.Errorf("stages: %+v; want the accept and the turn measured in the replicas", st)
	}
	// The slowest turns, split: the replica timed the accept and the
	// parts around the model calls of each.
	if st := got.Stages; st != nil {
		if len(st.Slowest) != slowestTurns {
			t.Fatalf("slowest: %+v; want %d turns", st.Slowest, slowestTurns)
		}
		// The accept's wait for its announcement's acknowledgement may
		// overlap the turn on another replica (BeforeModelMS then
		// negative), so the parts are checked as the times they split:
		// the model call began after the accept began, and the accept
		// until it, the wait for it and the reply's persisting lie within
		// the overhead.
		for i, s := range st.Slowest {
			if s.AcceptMS <= 0 || s.AfterModelMS <= 0 || s.AcceptMS+s.BeforeModelMS < 0 ||
				s.OverheadMS < s.AcceptMS+s.BeforeModelMS+s.AfterModelMS || s.User >= 12 || s.Message >= 3 ||
				(i > 0 && s.OverheadMS > st.Slowest[i-1].OverheadMS) {
				t.Errorf("slowest[%d]: %+v; want the slowest first, the accept and the reply's persisting timed within the overhead", i, s)
			}
		}
		if top := st.Slowest[0].OverheadMS; top < got.OverheadMS.P99 {
			t.Errorf("the slowest turn's overhead %.2f ms is below the p99 %.2f ms", top, got.OverheadMS.P99)
		}
	}
}

// slowest takes the turns of the highest overhead, the slowest first,
// each with the parts the replicas measured and the rest.
func TestSlowestTurnsSplit(t *testing.T) {
	clock := &modelClock{marks: map[[2]int]turnMarks{}}
	var turns []benchTurn
	for i := range 2 * slowestTurns {
		turns = append(turns, benchTurn{u: i, m: 1, at: time.Duration(i) * time.Second, overhead: time.Duration(i+1) * time.Millisecond})
		clock.mark(i, 1, func(k *turnMarks) {
			k.accept, k.afterModel = time.Duration(i)*100*time.Microsecond, 300*time.Microsecond
			k.acceptAt = int64(i) * int64(time.Second)
			k.modelAt = k.acceptAt + int64(k.accept) + int64(200*time.Microsecond)
		})
	}
	got := slowest(turns, clock)
	if len(got) != slowestTurns {
		t.Fatalf("got %d turns, want %d", len(got), slowestTurns)
	}
	for j, s := range got {
		i := 2*slowestTurns - 1 - j // the slowest first
		want := benchSlowTurn{AtS: float64(i), User: i, Message: 1, OverheadMS: float64(i + 1), AcceptMS: float64(i) / 10,
			BeforeModelMS: 0.2, AfterModelMS: 0.3, RestMS: float64(i+1) - float64(i)/10 - 0.5}
		if math.Abs(s.RestMS-want.RestMS) > 1e-9 {
			t.Errorf("turn %d: rest %.6f ms, want %.6f", j, s.RestMS, want.RestMS)
		}
		s.RestMS = want.RestMS
		if s != want {
			t.Errorf("turn %d: %+v, want %+v", j, s, want)
		}
	}
	if len(slowest(nil, clock)) != 0 {
		t.Error("no turns: want none split")
	}
}

// A replica's process killed during the load fails the run at once with
// an error naming it, and the bench waits for the other one's exit. The
// replicas' arguments hold nothing but the command (the store's URL comes
// on stdin).
func TestBenchReplicaDeathFailsTheRun(t *testing.T) {
	dbURL, natsURL, pool := benchTestEnv(t)
	cmd, _, stderr := benchCommand("--users", "20", "--messages", "200", "--replicas", "2", "--store", "postgres:"+dbURL, "--nats", natsURL)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// A child forked but not yet executed shows the bench's own
	// arguments: it is read again until it runs its command (one that
	// never does fails below, with the arguments it shows).
	unexecuted := func(kids map[int][]string) bool {
		for _, args := range kids {
			if slices.Equal(args, cmd.Args) {
				return true
			}
		}
		return false
	}
	var kids map[int][]string
	deadline := time.Now().Add(2 * time.Minute) // the reference on SQLite runs first
	for kids = childrenOf(cmd.Process.Pid); len(kids) < 2 || unexecuted(kids); kids = childrenOf(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			if len(kids) >= 2 {
				break
			}
			t.Fatalf("talon bench has %d child processes after 2 minutes, want 2:\n%s", len(kids), stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for pid, args := range kids {
		if !slices.Equal(args, []string{os.Args[0], benchReplicaCmd}) {
			t.Errorf("replica process %d runs %q; want %q alone", pid, args, []string{os.Args[0], benchReplicaCmd})
		}
	}
	// Kill one once the replicas have accepted messages.
	deadline = time.Now().Add(2 * time.Minute)
	for {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM inbound`).Scan(&n); err == nil && n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message accepted in PostgreSQL after 2 minutes:\n%s", stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pids := slices.Sorted(maps.Keys(kids))
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := waitExit(t, cmd, 2*time.Minute)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("talon bench: %v; want exit status 1", err)
	}
	if want := fmt.Sprintf("(pid %d) exited during the run: signal: killed", pids[0]); !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not say %q:\n%s", want, stderr)
	}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pids[1])); err == nil && bytes.Contains(cmdline, []byte(benchReplicaCmd)) {
		t.Errorf("the other replica, pid %d, still runs after the bench exited", pids[1])
	}
}

// cpuTime reads the process's CPU time: it grows while the process works.
func TestCPUTimeAdvances(t *testing.T) {
	t0 := cpuTime()
	deadline := time.Now().Add(30 * time.Second)
	var x uint64
	for cpuTime() <= t0 {
		if time.Now().After(deadline) {
			t.Fatalf("cpuTime stayed at %s after 30 s of work", t0)
		}
		for i := range 1 << 20 {
			x += uint64(i) * x
		}
	}
	_ = x
}

// A replica's stderr reaches the bench's line by line, each line after the
// replica's prefix, a last line without its newline too.
func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	w := &prefixWriter{w: &out, mu: &mu, prefix: "replica 1: "}
	for _, chunk := range []string{"one\ntw", "o\n", "", "three\nfour\nfi", "ve"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	if got, want := out.String(), "replica 1: one\nreplica 1: two\nreplica 1: three\nreplica 1: four\n"; got != want {
		t.Errorf("before flush: %q, want %q", got, want)
	}
	w.flush()
	if got, want := out.String(), "replica 1: one\nreplica 1: two\nreplica 1: three\nreplica 1: four\nreplica 1: five\n"; got != want {
		t.Errorf("after flush: %q, want %q", got, want)
	}
}

// talon bench-replica is the bench's own: it takes no arguments and
// refuses a stdin that does not start with the bench's options, before it
// opens anything.
func TestBenchReplicaRefusesWhatIsNotTheBench(t *testing.T) {
	if res := runMain(t, env{}, benchReplicaCmd, "--store", "x"); res.code != 2 || !strings.Contains(res.stderr, "takes no arguments") {
		t.Errorf("with arguments: exit %d, stderr %s; want a usage error", res.code, res.stderr)
	}
	for _, in := range []string{"", "not json\n", `{"op":"accept","text":"hi"}` + "\n"} {
		res := runMain(t, env{stdin: strings.NewReader(in)}, benchReplicaCmd)
		if res.code != 1 || !strings.Contains(res.stderr, "want the bench's options on stdin") || res.stdout != "" {
			t.Errorf("stdin %q: exit %d, stdout %q, stderr %s; want exit 1 saying it wants the options", in, res.code, res.stdout, res.stderr)
		}
	}
}
