package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/cluster"
	"github.com/talonhq/talon/store/postgres"
)

// benchReplicaCmd is the internal command a replica of `talon bench
// --replicas N` runs as, in a process of its own that the bench starts from
// its own executable. It is not in the usage: it takes its options and the
// load on stdin and answers on stdout (replicaFrame), for the bench alone.
const benchReplicaCmd = "bench-replica"

// benchReplicaOptions is what a replica of the bench is opened with, in
// the bench's process or in a process of its own; there it comes on stdin,
// so that the PostgreSQL URL is never in argv (a password is refused in it
// anyway; PGPASSWORD comes through the environment, which the replica
// inherits).
type benchReplicaOptions struct {
	Replica     int           `json:"replica"`
	Store       string        `json:"store"` // the PostgreSQL URL
	NATS        string        `json:"nats"`
	Prefix      string        `json:"prefix"` // the run's stream and buckets
	Concurrency int           `json:"concurrency"`
	ToolShare   float64       `json:"tool_share"`
	Latency     time.Duration `json:"latency"`  // the fake model's, per call
	DataDir     string        `json:"data_dir"` // the tool cache
	CPUProfile  string        `json:"cpu_profile,omitempty"`
	// Procs, when not 0, is the replica process's GOMAXPROCS: its share
	// of the host's CPUs, which the replicas share.
	Procs int `json:"procs,omitempty"`
}

// benchReplica is one replica of the bench: a runtime with its own
// PostgreSQL pool, NATS connection and cluster node, as `talon run` with
// nats.url.
type benchReplica struct {
	rt       *agent.Runtime
	node     *cluster.Node
	db       *postgres.DB
	nc       *nats.Conn
	tools    *countingTools // nil without --tool-share
	turns    *turnTimes
	accepted atomic.Int64
	// natsOut0 and natsIn0 are the connection's counts when the load
	// started (resetStats); only the load's goroutine uses them.
	natsOut0, natsIn0 int64

	stop    context.CancelFunc
	wg      sync.WaitGroup // the runtime's and the node's Run
	closers []func()
}

// startBenchReplica opens a replica and runs it until close; ch delivers
// its replies, model answers its turns.
func startBenchReplica(ctx context.Context, o benchReplicaOptions, ch agent.Channel, model llm.Provider) (_ *benchReplica, err error) {
	r := &benchReplica{turns: &turnTimes{}, stop: func() {}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.db, err = postgres.Open(ctx, o.Store); err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { r.db.Close() })
	if err := r.db.Warm(ctx); err != nil {
		return nil, err
	}
	var runner agent.ToolRunner
	if o.ToolShare > 0 {
		sb, closeTools, err := benchTools(ctx, o.DataDir)
		if err != nil {
			return nil, err
		}
		r.closers = append(r.closers, closeTools)
		r.tools = &countingTools{ToolRunner: sb}
		runner = r.tools
	}
	if r.nc, err = nats.Connect(o.NATS, nats.Name("talon bench"), nats.Timeout(5*time.Second), nats.MaxReconnects(-1)); err != nil {
		return nil, fmt.Errorf("bench: --nats: %w", err)
	}
	r.closers = append(r.closers, r.nc.Close)
	rt := &agent.Runtime{Store: r.db, LLM: model, Tools: runner, Log: zerolog.Nop(), Limits: benchLimits(o.Concurrency), Metrics: r.turns}
	rt.Register(ch)
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := cluster.Open(octx, r.nc, cluster.Config{Replica: fmt.Sprintf("bench-%d", o.Replica), Prefix: o.Prefix}, rt, r.db, zerolog.Nop())
	cancel()
	if err != nil {
		return nil, err
	}
	rt.Dispatch = node
	rt.Limiter = node.Limiter() // as talon run: the turn limits hold across the replicas
	r.rt, r.node = rt, node
	rctx, stop := context.WithCancel(ctx)
	r.stop = stop
	runDone := make(chan struct{})
	r.wg.Go(func() {
		defer close(runDone)
		_ = rt.Run(rctx)
	})
	select {
	case <-rt.Ready():
	case <-runDone:
		return nil, errors.New("bench: a replica's runtime stopped before it was ready")
	}
	r.wg.Go(func() { _ = node.Run(rctx) })
	return r, nil
}

// close stops the replica and releases what it opened.
func (r *benchReplica) close() {
	r.stop()
	r.wg.Wait()
	for _, c := range slices.Backward(r.closers) {
		c()
	}
}

// accept accepts in and returns how long that took (the message durable
// and its announcement acknowledged).
func (r *benchReplica) accept(ctx context.Context, in agent.Inbound) (time.Duration, error) {
	r.accepted.Add(1)
	t0 := time.Now()
	_, err := r.rt.Accept(ctx, in)
	return time.Since(t0), err
}

// resetStats starts the load's counts.
func (r *benchReplica) resetStats() {
	r.accepted.Store(0)
	r.turns.mu.Lock()
	r.turns.ds = r.turns.ds[:0]
	r.turns.mu.Unlock()
	st := r.nc.Stats()
	r.natsOut0, r.natsIn0 = int64(st.OutMsgs), int64(st.InMsgs)
}

// benchReplicaStats is what one replica did during the load.
type benchReplicaStats struct {
	Accepted  int64           `json:"accepted"`
	TurnTimes []time.Duration `json:"turn_times"` // of the turns it ran
	// Groups and GroupedWrites are its pool's group commits since it
	// opened (postgres.DB.GroupStats).
	Groups        int64            `json:"groups"`
	GroupedWrites int64            `json:"grouped_writes"`
	NATSMsgsOut   int64            `json:"nats_msgs_out"`
	NATSMsgsIn    int64            `json:"nats_msgs_in"`
	ToolCalls     int64            `json:"tool_calls"`
	ToolFails     int64            `json:"tool_fails"`
	ToolErrors    map[string]int64 `json:"tool_errors,omitempty"`
	PeakRSSBytes  int64            `json:"peak_rss_bytes,omitempty"`
	// CPUSeconds is the CPU time its process used during the load (user
	// and system; a process of its own only).
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// GOMAXPROCS is its process's, as it ran.
	GOMAXPROCS int `json:"gomaxprocs,omitempty"`
}

// stats returns what the replica did since resetStats.
func (r *benchReplica) stats() benchReplicaStats {
	st := benchReplicaStats{Accepted: r.accepted.Load()}
	r.turns.mu.Lock()
	st.TurnTimes = slices.Clone(r.turns.ds)
	r.turns.mu.Unlock()
	st.Groups, st.GroupedWrites = r.db.GroupStats()
	ns := r.nc.Stats()
	st.NATSMsgsOut, st.NATSMsgsIn = int64(ns.OutMsgs)-r.natsOut0, int64(ns.InMsgs)-r.natsIn0
	if r.tools != nil {
		st.ToolCalls, st.ToolFails, st.ToolErrors = r.tools.calls.Load(), r.tools.fails.Load(), r.tools.failures()
	}
	return st
}

// benchProcResult is one replica's process in `talon bench --json`.
type benchProcResult struct {
	PID          int   `json:"pid"`
	Accepted     int   `json:"accepted"` // messages it accepted
	Turns        int   `json:"turns"`    // turns it ran
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// CPUSeconds is the CPU time it used during the load (Linux's
	// /proc/self/stat, in its clock ticks: 10 ms here).
	CPUSeconds float64 `json:"cpu_seconds"`
	GOMAXPROCS int     `json:"gomaxprocs"`
}

// clusterResult sums the replicas' load: out is the drive's, accepts the
// accepts' durations.
func clusterResult(load benchLoad, n int, latency time.Duration, out benchOutcome, accepts []time.Duration, stats []benchReplicaStats) benchResult {
	res := benchResult{
		Users: load.users, Messages: load.messages, Concurrency: load.concurrency, Turns: len(out.overheads),
		Seconds: out.elapsed.Seconds(), TurnsPerSec: float64(len(out.overheads)) / out.elapsed.Seconds(),
		OverheadMS: percentiles(out.overheads), Errors: int(out.errors), Replicas: n, ToolTurns: out.toolTurns,
	}
	var turns []time.Duration
	for _, s := range stats {
		turns = append(turns, s.TurnTimes...)
		res.Groups += s.Groups
		res.GroupedWrites += s.GroupedWrites
		res.NATSMsgsOut += s.NATSMsgsOut
		res.NATSMsgsIn += s.NATSMsgsIn
		res.ToolCalls += s.ToolCalls
		res.Errors += int(s.ToolFails)
		for k, v := range s.ToolErrors {
			if res.ToolErrors == nil {
				res.ToolErrors = map[string]int64{}
			}
			res.ToolErrors[k] += v
		}
	}
	st := &benchStages{AcceptMS: percentiles(accepts), TurnMS: percentiles(turns)}
	st.Mean.Overhead, st.Mean.Accept, st.Mean.Turn = mean(out.overheads), mean(accepts), mean(turns)
	res.Stages = st
	if load.think > 0 {
		res.OfferedPerS = float64(load.concurrency) / (load.think + latency).Seconds()
	}
	return res
}

// slowest returns the slowestTurns turns of the highest overhead, the
// slowest first, split with the parts the replicas measured (clock's
// marks).
func slowest(turns []benchTurn, clock *modelClock) []benchSlowTurn {
	s := slices.Clone(turns)
	slices.SortFunc(s, func(a, b benchTurn) int { return cmp.Compare(b.overhead, a.overhead) })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	var out []benchSlowTurn
	for _, t := range s[:min(len(s), slowestTurns)] {
		k := clock.takeMarks(t.u, t.m)
		before := time.Duration(k.modelAt-k.acceptAt) - k.accept
		out = append(out, benchSlowTurn{AtS: t.at.Seconds(), User: t.u, Message: t.m, OverheadMS: ms(t.overhead),
			AcceptMS: ms(k.accept), BeforeModelMS: ms(before), AfterModelMS: ms(k.afterModel),
			RestMS: ms(t.overhead - k.accept - before - k.afterModel)})
	}
	return out
}

// waitSpread returns once the replicas hold every partition, spread
// evenly (held says how many each holds), or after a minute.
func waitSpread(ctx context.Context, held func(ctx context.Context) ([]int, error)) error {
	deadline := time.Now().Add(time.Minute)
	for {
		hs, err := held(ctx)
		if err != nil {
			return err
		}
		sum, most, least := 0, 0, cluster.DefaultPartitions
		for _, h := range hs {
			sum, most, least = sum+h, max(most, h), min(least, h)
		}
		if sum == cluster.DefaultPartitions && most-least <= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: the replicas hold %d of %d partitions after a minute", sum, cluster.DefaultPartitions)
		}
		if !agent.Sleep(ctx, 50*time.Millisecond) {
			return context.Cause(ctx)
		}
	}
}

// deleteBenchCluster deletes the run's stream and buckets.
func deleteBenchCluster(ctx context.Context, natsURL, prefix string) {
	nc, err := nats.Connect(natsURL, nats.Name("talon bench"), nats.Timeout(5*time.Second))
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = js.DeleteStream(dctx, strings.ToUpper(prefix)+"_IN")
	for _, b := range []string{"_partitions", "_cluster", "_slots", "_rates"} {
		_ = js.DeleteKeyValue(dctx, prefix+b)
	}
}

// benchCluster runs the load on n replicas in this process
// (--replicas-in-process): user u's messages are accepted by replica u mod
// n and run by the replica that holds their partition. The stream and
// buckets are the run's own and deleted after it.
func benchCluster(ctx context.Context, e env, load benchLoad, o benchReplicaOptions, n int, asJSON bool, cpuProfile string) (benchResult, error) {
	dataDir, err := os.MkdirTemp("", "talon-bench-")
	if err != nil {
		return benchResult{}, err
	}
	defer os.RemoveAll(dataDir)
	defer deleteBenchCluster(ctx, o.NATS, o.Prefix)
	clock := &modelClock{Provider: &benchLLM{latency: o.Latency}}
	ch := &benchChannel{done: map[string]chan agent.Reply{}}
	var reps []*benchReplica
	defer func() {
		for _, r := range reps {
			r.stop()
		}
		for _, r := range reps {
			r.close()
		}
	}()
	for i := range n {
		o := o
		o.Replica, o.DataDir = i, filepath.Join(dataDir, strconv.Itoa(i))
		r, err := startBenchReplica(ctx, o, ch, clock)
		if err != nil {
			return benchResult{}, err
		}
		reps = append(reps, r)
	}
	if err := waitSpread(ctx, func(context.Context) ([]int, error) {
		var hs []int
		for _, r := range reps {
			hs = append(hs, len(r.node.Held()))
		}
		return hs, nil
	}); err != nil {
		return benchResult{}, err
	}
	progress := newProgress(e, load.users*load.messages, asJSON)
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return benchResult{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return benchResult{}, err
		}
	}
	for _, r := range reps {
		r.resetStats()
	}
	var (
		acceptMu sync.Mutex
		accepts  []time.Duration // guarded by acceptMu
	)
	out := load.drive(ctx, progress, ch, clock, func(u int, in agent.Inbound) error {
		d, err := reps[u%n].accept(ctx, in)
		acceptMu.Lock()
		accepts = append(accepts, d)
		acceptMu.Unlock()
		return err
	})
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	progress.done()
	var stats []benchReplicaStats
	for _, r := range reps {
		stats = append(stats, r.stats())
	}
	acceptMu.Lock()
	defer acceptMu.Unlock()
	res := clusterResult(load, n, o.Latency, out, accepts, stats)
	res.PeakRSSBytes = peakRSS()
	return res, nil
}

// replicaFrame is one line between the bench and a replica's process, in
// either direction; Op says what it is:
//
//   - bench → replica: "options" (first, with Options), "held" (how many
//     partitions do you hold?), "start" (the load starts: reset the
//     counts), "accept" (accept this message of User), "stop" (report and
//     exit);
//   - replica → bench: "ready", "held" (Held), "accepted"
//     (NS: how long the accept took; AtNS; Failed), "reply" (a turn's reply,
//     ReplyTo its message's dedupe key; NS: the turn's model time; Failed:
//     an error reply; AtNS, AfterModelNS), "stats".
//
// Requests that are answered carry an ID, which the answer repeats. No
// message text comes back: only the bench's own keys and timings.
type replicaFrame struct {
	Op        string               `json:"op"`
	ID        int64                `json:"id,omitempty"`
	Options   *benchReplicaOptions `json:"options,omitempty"`
	DedupeKey string               `json:"dedupe_key,omitempty"`
	User      string               `json:"user,omitempty"`
	Text      string               `json:"text,omitempty"`
	ReplyTo   string               `json:"reply_to,omitempty"`
	NS        int64                `json:"ns,omitempty"`
	Failed    bool                 `json:"failed,omitempty"`
	Held      int                  `json:"held,omitempty"`
	Stats     *benchReplicaStats   `json:"stats,omitempty"`
	// AtNS is, in Unix nanoseconds, when an accept started or a reply's
	// turn made its first model call; AfterModelNS, the time from the
	// turn's last model call's end to the reply (benchSlowTurn).
	AtNS         int64 `json:"at_ns,omitempty"`
	AfterModelNS int64 `json:"after_model_ns,omitempty"`
}

// frameWriter writes frames, one a line, from several goroutines.
type frameWriter struct {
	mu  sync.Mutex
	enc *json.Encoder // guarded by mu
}

func (w *frameWriter) write(f replicaFrame) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(f)
}

// benchTurnOf returns the user and message numbers of a bench message's
// dedupe key (bench:RUN:U:M).
func benchTurnOf(dk string) (u, m int, ok bool) {
	f := strings.Split(dk, ":")
	if len(f) != 4 || f[0] != "bench" {
		return 0, 0, false
	}
	u, err1 := strconv.Atoi(f[2])
	m, err2 := strconv.Atoi(f[3])
	return u, m, err1 == nil && err2 == nil
}

// replicaChannel is a replica process's channel: it hands each reply to
// the bench, with the model time its turn took here.
type replicaChannel struct {
	out   *frameWriter
	clock *modelClock
}

func (c *replicaChannel) Platform() string { return "bench" }

func (c *replicaChannel) Deliver(_ context.Context, r agent.Reply) (string, error) {
	now := time.Now()
	f := replicaFrame{Op: "reply", ReplyTo: r.ReplyTo, Failed: r.Kind == agent.ReplyError}
	if u, m, ok := benchTurnOf(r.ReplyTo); ok {
		f.NS = int64(c.clock.spent(u, m))
		if k := c.clock.takeMarks(u, m); !k.modelStart.IsZero() {
			f.AtNS, f.AfterModelNS = k.modelStart.UnixNano(), int64(now.Sub(k.modelEnd))
		}
	}
	if err := c.out.write(f); err != nil {
		return "", fmt.Errorf("bench-replica: hand the reply to the bench: %w", err)
	}
	return r.ReplyTo, nil
}

// cmdBenchReplica is `talon bench-replica`, one replica of `talon bench
// --replicas N` in a process of its own: it reads its options and then
// the bench's requests on stdin, and answers on stdout (replicaFrame).
// stdin's end (the bench gone) stops it.
func cmdBenchReplica(ctx context.Context, e env, args []string) error {
	if len(args) > 0 {
		return &usageError{benchReplicaCmd + ": takes no arguments (it is talon bench's own replica process)"}
	}
	dec := json.NewDecoder(e.stdin)
	var first replicaFrame
	if err := dec.Decode(&first); err != nil || first.Options == nil {
		why := "its first line carries none"
		if err != nil {
			why = err.Error()
		}
		return fmt.Errorf("%s: want the bench's options on stdin (this command is talon bench's own): %s", benchReplicaCmd, why)
	}
	o := *first.Options
	if o.Procs > 0 {
		runtime.GOMAXPROCS(o.Procs)
	}
	out := &frameWriter{enc: json.NewEncoder(e.stdout)}
	clock := &modelClock{Provider: &benchLLM{latency: o.Latency}, marks: map[[2]int]turnMarks{}}
	r, err := startBenchReplica(ctx, o, &replicaChannel{out: out, clock: clock}, clock)
	if err != nil {
		return err
	}
	defer r.close()
	var accepts sync.WaitGroup
	defer accepts.Wait()
	if err := out.write(replicaFrame{Op: "ready"}); err != nil {
		return err
	}
	var (
		profile    *os.File
		failedOnce sync.Once
		cpu0       time.Duration // at the load's start
	)
	defer func() {
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
		}
	}()
	for {
		var f replicaFrame
		if err := dec.Decode(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the bench ended the run
			}
			return fmt.Errorf("%s: the bench's requests: %w", benchReplicaCmd, err)
		}
		switch f.Op {
		case "held":
			if err := out.write(replicaFrame{Op: "held", ID: f.ID, Held: len(r.node.Held())}); err != nil {
				return err
			}
		case "start":
			r.resetStats()
			cpu0 = cpuTime()
			if o.CPUProfile != "" && profile == nil {
				if profile, err = os.Create(o.CPUProfile); err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(profile); err != nil {
					return err
				}
			}
		case "accept":
			in := agent.Inbound{DedupeKey: f.DedupeKey, Key: agent.SessionKey{Principal: agent.Principal{Platform: "bench", User: f.User}},
				Text: f.Text, ReplyTo: f.DedupeKey}
			accepts.Go(func() {
				at := time.Now()
				d, err := r.accept(ctx, in)
				if err != nil {
					failedOnce.Do(func() { fmt.Fprintf(e.stderr, "accept failed (the first; others not shown): %v\n", err) })
				}
				_ = out.write(replicaFrame{Op: "accepted", ID: f.ID, NS: int64(d), AtNS: at.UnixNano(), Failed: err != nil})
			})
		case "stop":
			accepts.Wait()
			if profile != nil {
				pprof.StopCPUProfile()
				profile.Close()
				profile = nil
			}
			st := r.stats()
			st.PeakRSSBytes, st.CPUSeconds, st.GOMAXPROCS = peakRSS(), (cpuTime() - cpu0).Seconds(), runtime.GOMAXPROCS(0)
			return out.write(replicaFrame{Op: "stats", Stats: &st})
		default:
			return fmt.Errorf("%s: unknown request %q", benchReplicaCmd, f.Op)
		}
	}
}

// benchProc is a replica's process, as the bench sees it.
type benchProc struct {
	i   int
	cmd *exec.Cmd

	mu      sync.Mutex
	stdin   io.WriteCloser
	enc     *json.Encoder               // on stdin; guarded by mu
	next    int64                       // the last request's ID; guarded by mu
	pending map[int64]chan replicaFrame // by ID; guarded by mu

	ready    chan struct{} // sent once its replica runs
	stats    chan *benchReplicaStats
	stopping atomic.Bool   // its exit is expected from now on
	exited   chan struct{} // closed once it was waited for
	err      error         // how it exited; written before exited is closed
	stderr   *prefixWriter
}

// procDeadline bounds each step of a replica process's life outside the
// load: opening, reporting, exiting; stallDeadline is the longest the load
// goes on without any reply.
const (
	procDeadline  = time.Minute
	stallDeadline = 2 * time.Minute
)

// startBenchProc starts replica o.Replica as a process of exe; died is
// called if it exits before it is asked to.
func startBenchProc(exe string, o benchReplicaOptions, stderr io.Writer, stderrMu *sync.Mutex, ch *benchChannel, clock *modelClock, replies *atomic.Int64, died func(error)) (*benchProc, error) {
	p := &benchProc{i: o.Replica, pending: map[int64]chan replicaFrame{}, ready: make(chan struct{}, 1),
		stats: make(chan *benchReplicaStats, 1), exited: make(chan struct{})}
	p.cmd = exec.Command(exe, benchReplicaCmd)
	p.stderr = &prefixWriter{w: stderr, mu: stderrMu, prefix: fmt.Sprintf("talon bench: replica %d: ", o.Replica)}
	p.cmd.Stderr = p.stderr
	p.cmd.WaitDelay = 10 * time.Second // a descendant holding its stderr does not keep Wait
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start replica %d: %w", o.Replica, err)
	}
	p.stdin, p.enc = stdin, json.NewEncoder(stdin)
	go p.read(stdout, ch, clock, replies, died)
	if err := p.send(replicaFrame{Op: "options", Options: &o}); err != nil {
		return p, err
	}
	return p, nil
}

// read takes the replica's frames until its stdout ends, then waits for
// its exit.
func (p *benchProc) read(stdout io.Reader, ch *benchChannel, clock *modelClock, replies *atomic.Int64, died func(error)) {
	dec := json.NewDecoder(stdout)
	for {
		var f replicaFrame
		if err := dec.Decode(&f); err != nil {
			if !errors.Is(err, io.EOF) {
				// Not a frame: the process is not a replica that can
				// be talked to; it would block on a full pipe.
				_ = p.cmd.Process.Kill()
			}
			break
		}
		switch f.Op {
		case "ready":
			p.ready <- struct{}{}
		case "reply":
			replies.Add(1)
			if u, m, ok := benchTurnOf(f.ReplyTo); ok {
				clock.record(u, m, time.Duration(f.NS))
				clock.mark(u, m, func(k *turnMarks) {
					k.modelAt, k.afterModel = f.AtNS, time.Duration(f.AfterModelNS)
				})
			}
			kind := agent.ReplyAnswer
			if f.Failed {
				kind = agent.ReplyError
			}
			_, _ = ch.Deliver(context.Background(), agent.Reply{ReplyTo: f.ReplyTo, Kind: kind})
		case "accepted", "held":
			p.mu.Lock()
			c := p.pending[f.ID]
			delete(p.pending, f.ID)
			p.mu.Unlock()
			if c != nil {
				c <- f
			}
		case "stats":
			if f.Stats != nil {
				p.stats <- f.Stats
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	p.err = p.cmd.Wait()
	p.stderr.flush()
	close(p.exited)
	if !p.stopping.Load() {
		died(p.exitError("during the run"))
	}
}

func (p *benchProc) exitError(when string) error {
	how := "exit status 0"
	if p.err != nil {
		how = p.err.Error()
	}
	return fmt.Errorf("bench: replica %d (pid %d) exited %s: %s", p.i, p.cmd.Process.Pid, when, how)
}

func (p *benchProc) send(f replicaFrame) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.enc.Encode(f); err != nil {
		return fmt.Errorf("bench: write to replica %d: %w", p.i, err)
	}
	return nil
}

// call sends f and returns the replica's answer.
func (p *benchProc) call(ctx context.Context, f replicaFrame) (replicaFrame, error) {
	c := make(chan replicaFrame, 1)
	p.mu.Lock()
	p.next++
	f.ID = p.next
	p.pending[f.ID] = c
	err := p.enc.Encode(f)
	p.mu.Unlock()
	if err == nil {
		select {
		case r := <-c:
			return r, nil
		case <-p.exited:
			err = p.exitError("before it answered")
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
	} else {
		err = fmt.Errorf("bench: write to replica %d: %w", p.i, err)
	}
	p.mu.Lock()
	delete(p.pending, f.ID)
	p.mu.Unlock()
	return replicaFrame{}, err
}

// end closes the replica's stdin, which stops it, and waits for its exit,
// killing it after procDeadline.
func (p *benchProc) end() {
	p.stopping.Store(true)
	p.mu.Lock()
	_ = p.stdin.Close()
	p.mu.Unlock()
	t := time.NewTimer(procDeadline)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// prefixWriter writes each line written to it to w after prefix, under mu
// (several processes' lines to one stream).
type prefixWriter struct {
	w      io.Writer
	mu     *sync.Mutex
	prefix string
	part   []byte // a line not ended yet; only exec's copying goroutine, then flush after Wait, use it
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	p.part = append(p.part, b...)
	for {
		i := bytes.IndexByte(p.part, '\n')
		if i < 0 {
			break
		}
		p.line(p.part[:i+1])
		p.part = p.part[i+1:]
	}
	return n, nil
}

func (p *prefixWriter) line(l []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(p.w, p.prefix)
	_, _ = p.w.Write(l)
}

// flush writes a last line that did not end.
func (p *prefixWriter) flush() {
	if len(p.part) > 0 {
		p.line(append(p.part, '\n'))
		p.part = nil
	}
}

// benchProcs runs the load on n replicas, each a process of this
// executable (talon bench-replica) with its own PostgreSQL pool, NATS
// connection and cluster node; this process drives the load through their
// stdin and stdout: user u's messages are accepted by replica u mod n, and
// run by the replica that holds their partition, which hands the reply
// back. A replica that exits before the end fails the run. With
// cpuProfile each replica writes its own profile, cpuProfile.N.
func benchProcs(ctx context.Context, e env, load benchLoad, o benchReplicaOptions, n int, asJSON bool, cpuProfile string) (benchResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return benchResult{}, fmt.Errorf("bench: find this executable for the replicas: %w", err)
	}
	dataDir, err := os.MkdirTemp("", "talon-bench-")
	if err != nil {
		return benchResult{}, err
	}
	defer os.RemoveAll(dataDir)
	defer deleteBenchCluster(ctx, o.NATS, o.Prefix)
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ch := &benchChannel{done: map[string]chan agent.Reply{}}
	clock := &modelClock{marks: map[[2]int]turnMarks{}}
	var (
		stderrMu sync.Mutex
		replies  atomic.Int64
		procs    []*benchProc
	)
	defer func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(p.end)
		}
		wg.Wait()
	}()
	// One after the other, as in one process: their start is not what
	// the bench measures (replicas starting at once are
	// TestReplicasStartingTogether's, in the cluster package).
	for i := range n {
		o := o
		o.Replica, o.DataDir = i, filepath.Join(dataDir, strconv.Itoa(i))
		if cpuProfile != "" {
			o.CPUProfile = fmt.Sprintf("%s.%d", cpuProfile, i)
		}
		p, err := startBenchProc(exe, o, e.stderr, &stderrMu, ch, clock, &replies, func(err error) { cancel(err) })
		if p != nil {
			procs = append(procs, p)
		}
		if err != nil {
			return benchResult{}, err
		}
		t := time.NewTimer(procDeadline)
		select {
		case <-p.ready:
		case <-rctx.Done():
		case <-t.C:
			cancel(fmt.Errorf("bench: replica %d (pid %d) not ready after %s", i, p.cmd.Process.Pid, procDeadline))
		}
		t.Stop()
		if err := context.Cause(rctx); err != nil {
			return benchResult{}, err
		}
	}
	if err := waitSpread(rctx, func(ctx context.Context) ([]int, error) {
		var hs []int
		for _, p := range procs {
			f, err := p.call(ctx, replicaFrame{Op: "held"})
			if err != nil {
				return nil, err
			}
			hs = append(hs, f.Held)
		}
		return hs, nil
	}); err != nil {
		return benchResult{}, err
	}
	for _, p := range procs {
		if err := p.send(replicaFrame{Op: "start"}); err != nil {
			return benchResult{}, err
		}
	}
	// A load that stops getting replies fails instead of hanging.
	watchDone := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		last, since := replies.Load(), time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-watchDone:
				return
			case <-tick.C:
			}
			if r := replies.Load(); r != last {
				last, since = r, time.Now()
			} else if time.Since(since) > stallDeadline {
				cancel(fmt.Errorf("bench: no reply from the replicas for %s", stallDeadline))
				return
			}
		}
	})
	progress := newProgress(e, load.users*load.messages, asJSON)
	var (
		acceptMu sync.Mutex
		accepts  []time.Duration // guarded by acceptMu
	)
	cpu0 := cpuTime()
	out := load.drive(rctx, progress, ch, clock, func(u int, in agent.Inbound) error {
		f, err := procs[u%n].call(rctx, replicaFrame{Op: "accept", DedupeKey: in.DedupeKey, User: in.Key.Principal.User, Text: in.Text})
		if err != nil {
			return err
		}
		acceptMu.Lock()
		accepts = append(accepts, time.Duration(f.NS))
		acceptMu.Unlock()
		if u, m, ok := benchTurnOf(in.DedupeKey); ok {
			clock.mark(u, m, func(k *turnMarks) { k.accept, k.acceptAt = time.Duration(f.NS), f.AtNS })
		}
		if f.Failed {
			return errors.New("bench: a replica failed to accept a message")
		}
		return nil
	})
	benchCPU := cpuTime() - cpu0
	close(watchDone)
	watch.Wait()
	progress.done()
	if err := context.Cause(rctx); err != nil {
		return benchResult{}, err
	}
	// The replicas report and exit: from here their exits are expected.
	stats := make([]benchReplicaStats, n)
	for _, p := range procs {
		p.stopping.Store(true)
		if err := p.send(replicaFrame{Op: "stop"}); err != nil {
			return benchResult{}, err
		}
	}
	for i, p := range procs {
		t := time.NewTimer(procDeadline)
		select {
		case st := <-p.stats:
			stats[i] = *st
		case <-p.exited:
			err = p.exitError("before its report")
		case <-t.C:
			err = fmt.Errorf("bench: replica %d (pid %d) did not report within %s", i, p.cmd.Process.Pid, procDeadline)
		}
		t.Stop()
		if err != nil {
			return benchResult{}, err
		}
	}
	for _, p := range procs {
		p.end()
		if p.err != nil {
			return benchResult{}, p.exitError("after its report")
		}
	}
	acceptMu.Lock()
	defer acceptMu.Unlock()
	res := clusterResult(load, n, o.Latency, out, accepts, stats)
	res.Stages.Slowest = slowest(out.turns, clock)
	res.BenchRSSBytes, res.BenchCPUSeconds = peakRSS(), benchCPU.Seconds()
	res.PeakRSSBytes = res.BenchRSSBytes
	for i, st := range stats {
		res.Procs = append(res.Procs, benchProcResult{PID: procs[i].cmd.Process.Pid, Accepted: int(st.Accepted), Turns: len(st.TurnTimes),
			PeakRSSBytes: st.PeakRSSBytes, CPUSeconds: st.CPUSeconds, GOMAXPROCS: st.GOMAXPROCS})
		res.PeakRSSBytes += st.PeakRSSBytes
	}
	return res, nil
}
