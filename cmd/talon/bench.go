package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/console"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/tools"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
)

// benchResult is what `talon bench --json` prints.
type benchResult struct {
	Users        int     `json:"users"`
	Messages     int     `json:"messages"`
	Concurrency  int     `json:"concurrency"`
	Turns        int     `json:"turns"`
	Seconds      float64 `json:"seconds"`
	TurnsPerSec  float64 `json:"turns_per_sec"`
	OverheadMS   pct     `json:"overhead_ms"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	DBBytes      int64   `json:"db_bytes"`
	Errors       int     `json:"errors"`
	OfferedPerS  float64 `json:"offered_turns_per_sec,omitempty"`
	ToolCalls    int64   `json:"tool_calls"`
	// ToolTurns is how many turns asked the model to call the tool
	// (--tool-share); with --llm-url the endpoint's model decides whether
	// it does, and ToolCalls counts the calls that ran.
	ToolTurns int64 `json:"tool_turns"`
	// ToolErrors counts the failed tool calls by why they failed (a
	// sandbox error kind, or "tool error" for a tool that answered with
	// one).
	ToolErrors map[string]int64 `json:"tool_errors,omitempty"`
	// With --llm-url, ToolChoiceForced is how many requests forced the
	// tool through tool_choice (the first of each turn that asks),
	// ToolChoiceIgnored how many of their answers did not call it, and
	// ToolChoiceRefused how many the endpoint refused for tool_choice
	// (HTTP 400), sent again without it (the prompt still asks).
	ToolChoiceForced  int64 `json:"tool_choice_forced,omitempty"`
	ToolChoiceIgnored int64 `json:"tool_choice_ignored,omitempty"`
	ToolChoiceRefused int64 `json:"tool_choice_refused,omitempty"`
	// Warnings say why the figures are not what the flags asked for, such
	// as tool turns the endpoint's model answered without the tool.
	Warnings []string `json:"warnings,omitempty"`
	// ConsolePolls is how many times the console's pages were loaded
	// during the run (--console-poll), ConsoleErrors how many loads failed.
	ConsolePolls  int64 `json:"console_polls,omitempty"`
	ConsoleErrors int64 `json:"console_errors,omitempty"`
	// Replicas is how many replicas shared the load (--replicas), on
	// PostgreSQL and NATS; Reference is then the same load on SQLite in
	// one runtime, measured just before in the same run.
	Replicas  int          `json:"replicas,omitempty"`
	Reference *benchResult `json:"reference,omitempty"`
	// ProcsPerReplica is each replica process's GOMAXPROCS, and
	// PoolPerReplica the size of its PostgreSQL pool: the host's CPUs
	// shared among the replicas, which run on it together. PoolPerReplica
	// is 0 when --store sets pool_max_conns, ProcsPerReplica when the
	// replicas run in this process (--replicas-in-process).
	ProcsPerReplica int `json:"procs_per_replica,omitempty"`
	PoolPerReplica  int `json:"pool_per_replica,omitempty"`
	// Procs are the replicas' processes (--replicas without
	// --replicas-in-process), in the order of their numbers: user u's
	// messages were accepted by replica u mod N. PeakRSSBytes is then the
	// sum of their peak RSS and BenchRSSBytes, this process's own (which
	// drove the load and ran the reference).
	// BenchCPUSeconds is this process's CPU time during the load (the
	// replicas' is in Procs).
	Procs           []benchProcResult `json:"procs,omitempty"`
	BenchRSSBytes   int64             `json:"bench_rss_bytes,omitempty"`
	BenchCPUSeconds float64           `json:"bench_cpu_seconds,omitempty"`
	// GroupedWrites is how many of the replicas' writes were committed
	// in groups of two or more (PostgreSQL's group commit), in Groups
	// transactions.
	GroupedWrites int64 `json:"grouped_writes,omitempty"`
	Groups        int64 `json:"groups,omitempty"`
	// NATSMsgsOut and NATSMsgsIn count the messages the replicas' NATS
	// connections sent and received during the load (announcements and
	// their acknowledgements, deliveries and acks, KV reads, writes and
	// watches, lease renewals).
	NATSMsgsOut int64 `json:"nats_msgs_out,omitempty"`
	NATSMsgsIn  int64 `json:"nats_msgs_in,omitempty"`
	// Stages splits the replicas' overhead: Accept (the message durable
	// in the store and its announcement acknowledged), the turn (from
	// its start to its reply persisted, model time included), and the
	// means of those and of the overhead; the rest of a turn's latency is
	// the wait between them (the announcement's delivery, the session's
	// queue, the turn slots) and the reply's delivery.
	Stages *benchStages `json:"stages,omitempty"`
}

type benchStages struct {
	AcceptMS pct `json:"accept_ms"`
	TurnMS   pct `json:"turn_ms"`
	Mean     struct {
		Overhead float64 `json:"overhead_ms"`
		Accept   float64 `json:"accept_ms"`
		Turn     float64 `json:"turn_ms"`
	} `json:"mean"`
	// Slowest are the turns of the highest overhead (slowestTurns of
	// them, the slowest first), each split where it was spent; with the
	// replicas as processes only.
	Slowest []benchSlowTurn `json:"slowest,omitempty"`
}

// slowestTurns is how many of the slowest turns the bench splits.
const slowestTurns = 10

// benchSlowTurn is one of the slowest turns: user User's Message-th,
// sent AtS seconds after the load started. Its overhead is the accept
// (the message durable and announced, timed in the replica), the time
// from there to the turn's first model call (the announcement's delivery,
// the session's queue, the turn slots, the turn's start written and its
// history read; negative when the turn started before the accept
// returned), from the last model call's end to the reply handed to the
// channel (the reply persisted), and the rest (the pipes between the bench
// and the replica, the bench's own scheduling). The replica's instants are
// on its own clock, so the parts are differences taken there.
type benchSlowTurn struct {
	AtS           float64 `json:"at_s"`
	User          int     `json:"user"`
	Message       int     `json:"message"`
	OverheadMS    float64 `json:"overhead_ms"`
	AcceptMS      float64 `json:"accept_ms"`
	BeforeModelMS float64 `json:"before_model_ms"`
	AfterModelMS  float64 `json:"after_model_ms"`
	RestMS        float64 `json:"rest_ms"`
}

// turnTimes records the turns' durations (agent.Metrics).
type turnTimes struct {
	mu sync.Mutex
	ds []time.Duration // guarded by mu
}

func (t *turnTimes) TurnFinished(_ string, d time.Duration) {
	t.mu.Lock()
	t.ds = append(t.ds, d)
	t.mu.Unlock()
}
func (*turnTimes) ModelUsed(agent.ModelUse) {}
func (*turnTimes) QueueDepth(int)           {}
func (*turnTimes) Redacted(string, int)     {}

func mean(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return float64(sum) / float64(len(ds)) / float64(time.Millisecond)
}

type pct struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// cmdBench drives the real runtime and store with an in-process channel and
// a fake model, and reports throughput and the gateway's own overhead.
func cmdBench(ctx context.Context, e env, args []string) error {
	var (
		users, messages, concurrency int
		toolShare                    float64
		latency, think               time.Duration
		llmURL, llmModel, dataDir    string
		storeArg                     string
		asJSON                       bool
		cpuProfile                   string
		consolePoll                  time.Duration
		replicas                     int
		natsURL                      string
		inProcess                    bool
	)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.IntVar(&users, "users", 100, "number `N` of users, each with one conversation")
	fs.IntVar(&messages, "messages", 10, "messages `M` per user, each sent after the previous one is answered")
	fs.IntVar(&concurrency, "concurrency", 0, "users `C` talking at the same time (default: all)")
	fs.Float64Var(&toolShare, "tool-share", 0, "share `F` of turns that ask the model for one sandboxed tool call (0..1); "+
		"with --llm-url the first request of such a turn forces the html_text tool (tool_choice), and the calls the "+
		"endpoint's model made are reported, with a warning when it ignored or refused tool_choice")
	fs.DurationVar(&latency, "llm-latency", 0, "time `D` the fake model takes per call")
	fs.DurationVar(&think, "think", 0, "mean pause `D` of a user between a reply and its next message (exponential; "+
		"users also start at random offsets within it), so that arrivals are spread as in real use; 0 sends at once")
	fs.StringVar(&llmURL, "llm-url", "", "drive the OpenAI-compatible endpoint at `URL` instead of the in-process fake model")
	fs.StringVar(&llmModel, "llm-model", "bench", "model name `M` sent to --llm-url")
	fs.StringVar(&dataDir, "data-dir", "", "directory `DIR` for the database and the tool cache (default: a new temporary directory, removed after)")
	fs.StringVar(&storeArg, "store", "sqlite", "the store, `sqlite|postgres:URL`: sqlite (a file in the data directory) or postgres:URL (or the postgres:// URL alone; no password in it: use PGPASSWORD); "+
		"the run's users are new to it, so a database with data is fine")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to `FILE` (with --replicas as processes, one of each replica to FILE.0 … FILE.N-1)")
	fs.DurationVar(&consolePoll, "console-poll", 0, "serve the console on loopback and load its Overview, Usage, Conversations and Users "+
		"pages once every `D` during the run, as an operator's open tab would; 0: no console")
	fs.IntVar(&replicas, "replicas", 0, "run `N` replicas, each a process of its own (this executable) with its own PostgreSQL pool and NATS connection, "+
		"its share of this host's CPUs as its GOMAXPROCS and its pool's size (pool_max_conns in --store sets the pool), "+
		"sharing the load (each user's messages accepted by one of them in turn, run by the partition's owner) "+
		"as talon run with nats.url does; needs --store postgres:URL and --nats; the same load on SQLite in one runtime "+
		"is measured first, as the reference")
	fs.BoolVar(&inProcess, "replicas-in-process", false, "run the --replicas in this process instead, as the bench did before 3 December 2026 (for comparison)")
	fs.StringVar(&natsURL, "nats", "", "NATS server `URL` with JetStream for --replicas (nats://host:4222; no password in the URL)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if inProcess && replicas == 0 {
		return &usageError{"bench: --replicas-in-process goes with --replicas N"}
	}
	pgURL, onPostgres := cutPostgres(storeArg)
	if replicas != 0 {
		if replicas < 1 || replicas > 16 || !onPostgres || natsURL == "" || consolePoll > 0 || llmURL != "" {
			return &usageError{"bench: --replicas takes 1 to 16, with --store postgres:URL and --nats nats://host:4222, without --console-poll and --llm-url"}
		}
		if u, err := url.Parse(natsURL); err != nil || u.Scheme != "nats" || u.User != nil {
			return &usageError{"bench: --nats must be nats://host:port, without credentials (the process list shows them)"}
		}
	}
	if users < 1 || messages < 1 || toolShare < 0 || toolShare > 1 {
		return &usageError{"bench: --users and --messages must be ≥ 1, --tool-share within 0..1"}
	}
	if concurrency <= 0 || concurrency > users {
		concurrency = users
	}
	if replicas > 0 {
		load := benchLoad{users: users, messages: messages, concurrency: concurrency, toolShare: toolShare, think: think}
		return benchReplicas(ctx, e, load, replicas, inProcess, pgURL, natsURL, latency, asJSON, cpuProfile)
	}
	if dataDir == "" {
		d, err := os.MkdirTemp("", "talon-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dataDir = d
	}
	var (
		db        agent.Store
		consoleDB console.Store // the console poller reads it
	)
	switch {
	case storeArg == "sqlite":
		sdb, err := store.Open(ctx, filepath.Join(dataDir, "talon.db"))
		if err != nil {
			return err
		}
		defer sdb.Close()
		db, consoleDB = sdb, sdb
	case onPostgres:
		u, err := postgresArg(pgURL)
		if err != nil {
			return fmt.Errorf("bench: --store: %w", err)
		}
		pdb, err := postgres.Open(ctx, u)
		if err != nil {
			return err
		}
		defer pdb.Close()
		if err := pdb.Warm(ctx); err != nil { // as talon run does
			return err
		}
		db, consoleDB = pdb, pdb
	default:
		return &usageError{"bench: --store must be sqlite, postgres:URL or the postgres:// URL alone (postgres://user@host:5432/db; a password goes in PGPASSWORD)"}
	}
	// The run's users and messages are its own, so that a database used
	// before (PostgreSQL's) answers this run's messages as new.
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)

	var model llm.Provider = &benchLLM{latency: latency}
	if llmURL != "" {
		var err error
		if model, err = llm.NewOpenAI(llm.Config{BaseURL: llmURL, Model: llmModel, MaxRetries: -1}); err != nil {
			return err
		}
	}
	var forcer *toolForcer
	if llmURL != "" && toolShare > 0 {
		forcer = &toolForcer{Provider: model}
		model = forcer
	}
	clock := &modelClock{Provider: model}
	var provider llm.Provider = clock
	var tools *countingTools
	var toolRunner agent.ToolRunner
	if toolShare > 0 {
		sb, closeTools, err := benchTools(ctx, dataDir)
		if err != nil {
			return err
		}
		defer closeTools()
		tools = &countingTools{ToolRunner: sb}
		toolRunner = tools
	}
	var toolTurns atomic.Int64 // turns that asked for a tool
	ch := &benchChannel{done: map[string]chan agent.Reply{}}
	rt := &agent.Runtime{Store: db, LLM: provider, Tools: toolRunner, Log: zerolog.Nop(), Limits: benchLimits(concurrency)}
	rt.Register(ch)
	rctx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- rt.Run(rctx) }()
	defer func() { stop(); <-runDone }()
	select {
	case <-rt.Ready():
	case err := <-runDone:
		return err
	}

	total := users * messages
	var errCount atomic.Int64
	var poller *consolePoller
	if consolePoll > 0 {
		var err error
		if poller, err = startConsolePoller(ctx, consoleDB, consolePoll); err != nil {
			return err
		}
		defer poller.stop()
	}
	progress := newProgress(e, total, asJSON)
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	load := benchLoad{users: users, messages: messages, concurrency: concurrency, toolShare: toolShare, think: think, runID: runID}
	out := load.drive(ctx, progress, ch, clock, func(_ int, in agent.Inbound) error {
		_, err := rt.Accept(ctx, in)
		return err
	})
	overheads, elapsed := out.overheads, out.elapsed
	errCount.Add(out.errors)
	toolTurns.Add(out.toolTurns)
	progress.done()
	if poller != nil {
		poller.stop()
	}

	res := benchResult{
		Users: users, Messages: messages, Concurrency: concurrency, Turns: len(overheads),
		Seconds: elapsed.Seconds(), TurnsPerSec: float64(len(overheads)) / elapsed.Seconds(),
		OverheadMS: percentiles(overheads), PeakRSSBytes: peakRSS(), DBBytes: dirSize(dataDir),
		Errors: int(errCount.Load()),
	}
	if tools != nil {
		res.ToolCalls, res.ToolTurns = tools.calls.Load(), toolTurns.Load()
		res.Errors += int(tools.fails.Load())
		res.ToolErrors = tools.failures()
	}
	if poller != nil {
		res.ConsolePolls, res.ConsoleErrors = poller.polls.Load(), poller.errors.Load()
		res.Errors += int(res.ConsoleErrors)
	}
	if think > 0 {
		res.OfferedPerS = float64(concurrency) / (think + latency).Seconds()
	}
	if forcer != nil {
		res.ToolChoiceForced, res.ToolChoiceIgnored, res.ToolChoiceRefused = forcer.forced.Load(), forcer.ignored.Load(), forcer.refused.Load()
	}
	res.Warnings = benchWarnings(res)
	for _, w := range res.Warnings {
		fmt.Fprintf(e.stderr, "talon bench: warning: %s\n", w)
	}
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fmt.Fprintf(e.stdout, "turns:           %d (%d users × %d messages, %d at a time)\n", res.Turns, users, messages, concurrency)
	fmt.Fprintf(e.stdout, "throughput:      %.0f turns/s over %.2f s\n", res.TurnsPerSec, res.Seconds)
	if res.OfferedPerS > 0 {
		fmt.Fprintf(e.stdout, "offered load:    about %.0f turns/s (%d users, think %s, model %s)\n", res.OfferedPerS, concurrency, think, latency)
	}
	fmt.Fprintf(e.stdout, "overhead:        p50 %.2f ms, p95 %.2f ms, p99 %.2f ms (turn latency minus model time)\n", res.OverheadMS.P50, res.OverheadMS.P95, res.OverheadMS.P99)
	fmt.Fprintf(e.stdout, "peak RSS:        %.1f MB\n", float64(res.PeakRSSBytes)/1e6)
	fmt.Fprintf(e.stdout, "database:        %.1f MB\n", float64(res.DBBytes)/1e6)
	fmt.Fprintf(e.stdout, "tool calls:      %d (%d turns asked for one)\n", res.ToolCalls, res.ToolTurns)
	if forcer != nil {
		fmt.Fprintf(e.stdout, "tool_choice:     forced in %d requests, ignored in %d, refused in %d\n", res.ToolChoiceForced, res.ToolChoiceIgnored, res.ToolChoiceRefused)
	}
	if poller != nil {
		fmt.Fprintf(e.stdout, "console:         pages loaded %d times (every %s), %d failed\n", res.ConsolePolls, consolePoll, res.ConsoleErrors)
	}
	fmt.Fprintf(e.stdout, "errors:          %d\n", res.Errors)
	for _, k := range slices.Sorted(maps.Keys(res.ToolErrors)) {
		fmt.Fprintf(e.stdout, "  tool calls failed, %s: %d\n", k, res.ToolErrors[k])
	}
	return nil
}

// benchWarnings says where a run's figures fall short of what its flags
// asked for. Only an endpoint's model can decline the tool: a run whose
// tool turns went without the sandbox is not reported as one with tools.
func benchWarnings(res benchResult) []string {
	var w []string
	if res.ToolChoiceIgnored > 0 {
		w = append(w, fmt.Sprintf("the endpoint ignored tool_choice in %d of %d requests that forced the %s tool", res.ToolChoiceIgnored, res.ToolChoiceForced, benchTool))
	}
	if res.ToolChoiceRefused > 0 {
		w = append(w, fmt.Sprintf("the endpoint refused tool_choice (HTTP 400) in %d requests; they were sent again without it, the prompt alone asking for the tool", res.ToolChoiceRefused))
	}
	if res.ToolCalls < res.ToolTurns {
		w = append(w, fmt.Sprintf("the model at --llm-url made %d tool calls where %d turns asked for one; "+
			"the other turns ran without the sandbox (use a model that calls tools, or drop --llm-url)", res.ToolCalls, res.ToolTurns))
	}
	return w
}

func percentiles(ds []time.Duration) pct {
	if len(ds) == 0 {
		return pct{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(p * float64(len(s)-1))
		return float64(s[i]) / float64(time.Millisecond)
	}
	return pct{P50: at(0.50), P95: at(0.95), P99: at(0.99)}
}

// cpuTime reads the CPU time (user and system) the process used so far
// (Linux; 0 elsewhere), in clock ticks of 10 ms (USER_HZ, 100 on Linux).
func cpuTime() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state … utime stime: the 14th and 15th fields, the 12th
	// and 13th after comm, which may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	user, _ := strconv.ParseInt(f[11], 10, 64)
	sys, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(user+sys) * 10 * time.Millisecond
}

// peakRSS reads the process's high-water resident set size (Linux).
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// benchChannel hands each delivered reply to whoever waits for it.
type benchChannel struct {
	mu   sync.Mutex
	done map[string]chan agent.Reply // by ReplyTo (the dedupe key); guarded by mu
}

func (c *benchChannel) Platform() string { return "bench" }

func (c *benchChannel) expect(key string) <-chan agent.Reply {
	ch := make(chan agent.Reply, 1)
	c.mu.Lock()
	c.done[key] = ch
	c.mu.Unlock()
	return ch
}

func (c *benchChannel) Deliver(_ context.Context, r agent.Reply) (string, error) {
	c.mu.Lock()
	ch := c.done[r.ReplyTo]
	delete(c.done, r.ReplyTo)
	c.mu.Unlock()
	if ch != nil {
		ch <- r
	}
	return r.ReplyTo, nil
}

// benchText is user u's m-th message; benchToolAsk is added to the ones
// that ask for a tool call.
func benchText(u, m int) string { return fmt.Sprintf("message %d of user %d", m, u) }

const benchToolAsk = ". Call the " + benchTool + " tool once on this page, then answer in one word: " + benchPage

// benchTool is the tool the bench's turns ask for.
const benchTool = "html_text"

// benchLLM is an in-process model: it waits latency, then answers; a
// message that asks for the tool (benchToolAsk) gets one tool call first.
type benchLLM struct {
	latency time.Duration
}

func (b *benchLLM) Name() string  { return "bench" }
func (b *benchLLM) Model() string { return "bench" }

func (b *benchLLM) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	if b.latency > 0 {
		t := time.NewTimer(b.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, &llm.Error{Kind: llm.ErrTimeout, Provider: "bench", Err: ctx.Err()}
		}
	}
	last := req.Messages[len(req.Messages)-1]
	if last.Role == llm.RoleUser && strings.HasSuffix(last.Content, benchToolAsk) && len(req.Tools) > 0 {
		return &llm.Response{Message: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{
			ID: "call", Name: req.Tools[0].Name, Arguments: benchToolArgs}}}, StopReason: "tool_calls"}, nil
	}
	return &llm.Response{Message: llm.Message{Role: llm.RoleAssistant, Content: "ok: " + last.Content}, StopReason: "stop"}, nil
}

// toolForcer asks an endpoint's model for the bench's tool through
// tool_choice in the first request of each turn that asks for it (the one
// whose last message is the user's ask; the request after the tool's
// result is left free, or the model would be made to call it again). It
// counts the forced requests, the answers that ignored the choice, and
// the requests the endpoint refused for it, which it sends again without.
type toolForcer struct {
	llm.Provider
	forced, ignored, refused atomic.Int64
}

func (f *toolForcer) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	last := req.Messages[len(req.Messages)-1]
	if last.Role != llm.RoleUser || !strings.HasSuffix(last.Content, benchToolAsk) ||
		!slices.ContainsFunc(req.Tools, func(t llm.Tool) bool { return t.Name == benchTool }) {
		return f.Provider.Complete(ctx, req)
	}
	forced := req
	forced.ToolChoice = benchTool
	r, err := f.Provider.Complete(ctx, forced)
	if llm.KindOf(err) == llm.ErrBadRequest {
		// An endpoint that does not take tool_choice may refuse the
		// request: ask again with the prompt alone, and count it only
		// if that is taken.
		if r, err = f.Provider.Complete(ctx, req); err == nil {
			f.refused.Add(1)
		}
		return r, err
	}
	if err == nil {
		f.forced.Add(1)
		if !slices.ContainsFunc(r.Message.ToolCalls, func(c llm.ToolCall) bool { return c.Name == benchTool }) {
			f.ignored.Add(1)
		}
	}
	return r, err
}

// modelClock records the time its model spends per turn, so that the
// gateway's own overhead can be separated out, whichever model answers.
type modelClock struct {
	llm.Provider
	mu      sync.Mutex
	spentBy map[[2]int]time.Duration // by (user, message); guarded by mu
	// marks, when not nil, records when each turn's model calls ran (a
	// replica's process: benchSlowTurn); by (user, message), guarded by mu.
	marks map[[2]int]turnMarks
}

// turnMarks are, in the process of the replica that ran one turn, when its
// first model call started and its last one ended; in the bench's, what
// the replicas measured of it: when its accept started (in the replica
// that accepted it) and the first model call (in the one that ran it),
// both in Unix nanoseconds, on the host's clock that both share, its
// accept's duration and the time from the last model call's end to the
// reply.
type turnMarks struct {
	modelStart, modelEnd time.Time
	acceptAt, modelAt    int64
	accept, afterModel   time.Duration
}

func (c *modelClock) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	t0 := time.Now()
	r, err := c.Provider.Complete(ctx, req)
	d := time.Since(t0)
	// The turn is found by its last user message, which the bench wrote.
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role != llm.RoleUser {
			continue
		}
		var u, m int
		if _, err := fmt.Sscanf(req.Messages[i].Content, "message %d of user %d", &m, &u); err == nil {
			c.record(u, m, d)
			c.mark(u, m, func(k *turnMarks) {
				if k.modelStart.IsZero() {
					k.modelStart = t0
				}
				k.modelEnd = t0.Add(d)
			})
		}
		break
	}
	return r, err
}

// record adds d to the model time of user u's m-th turn (a replica's
// process measured it).
func (c *modelClock) record(u, m int, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spentBy == nil {
		c.spentBy = map[[2]int]time.Duration{}
	}
	c.spentBy[[2]int{u, m}] += d
}

// mark updates the marks of user u's m-th turn, if they are recorded.
func (c *modelClock) mark(u, m int, f func(*turnMarks)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.marks == nil {
		return
	}
	k := c.marks[[2]int{u, m}]
	f(&k)
	c.marks[[2]int{u, m}] = k
}

// takeMarks returns, and forgets, the marks of user u's m-th turn.
func (c *modelClock) takeMarks(u, m int) turnMarks {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.marks[[2]int{u, m}]
	delete(c.marks, [2]int{u, m})
	return k
}

// spent returns, and forgets, the model time of user u's m-th turn.
func (c *modelClock) spent(u, m int) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.spentBy[[2]int{u, m}]
	delete(c.spentBy, [2]int{u, m})
	return d
}

// countingTools counts the tool calls that ran, and those that failed.
type countingTools struct {
	agent.ToolRunner
	calls, fails atomic.Int64

	mu     sync.Mutex
	byKind map[string]int64 // guarded by mu
}

func (c *countingTools) Run(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	c.calls.Add(1)
	var r agent.ToolResult
	var err error
	var ce *sandbox.CallError
	if sb, ok := c.ToolRunner.(*sandbox.Runtime); ok {
		// Call keeps the failure's kind, which Run turns into text for
		// the model the same way.
		if r, err = sb.Call(ctx, call); errors.As(err, &ce) {
			r, err = agent.ToolResult{Content: ce.Reason, IsError: true}, nil
		}
	} else {
		r, err = c.ToolRunner.Run(ctx, call)
	}
	if err != nil || r.IsError {
		c.fails.Add(1)
		kind := "tool error"
		switch {
		case ce != nil:
			kind = ce.Kind.Error()
		case err != nil:
			kind = "other"
		}
		c.mu.Lock()
		if c.byKind == nil {
			c.byKind = map[string]int64{}
		}
		c.byKind[kind]++
		c.mu.Unlock()
	}
	return r, err
}

// failures returns the failed calls by kind.
func (c *countingTools) failures() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.byKind)
}

// progress draws a bar on a terminal's stderr.
type progress struct {
	e     env
	total int
	on    bool
	last  atomic.Int64
}

func newProgress(e env, total int, quiet bool) *progress {
	f, ok := e.stderr.(*os.File)
	return &progress{e: e, total: total, on: !quiet && ok && isTerminal(f)}
}

func (p *progress) set(n int) {
	if !p.on {
		return
	}
	now := time.Now().UnixMilli()
	if last := p.last.Load(); now-last < 100 && n < p.total {
		return
	}
	p.last.Store(now)
	width := 40
	filled := n * width / p.total
	fmt.Fprintf(p.e.stderr, "\r[%s%s] %d/%d turns", strings.Repeat("#", filled), strings.Repeat(" ", width-filled), n, p.total)
}

func (p *progress) done() {
	if p.on {
		fmt.Fprintln(p.e.stderr)
	}
}

// benchToolArgs are the arguments of the bench's tool call: a small page
// for the built-in html_text tool, which needs no network.
const (
	benchPage     = `<html><head><title>Bench</title></head><body><nav>menu</nav><p>Hello &amp; welcome.</p><script>x()</script><p>Second paragraph.</p></body></html>`
	benchToolArgs = `{"html":"` + benchPage + `"}`
)

// benchTools returns a sandbox serving only the built-in html_text tool,
// compiled before the run starts so the measurement sees calls, not the
// first compilation.
func benchTools(ctx context.Context, dataDir string) (agent.ToolRunner, func(), error) {
	all, err := sandbox.LoadTools(tools.FS, "")
	if err != nil {
		return nil, nil, err
	}
	var only []sandbox.Tool
	for _, t := range all {
		if t.Manifest.Name == benchTool {
			t.Manifest.Limits.PerMinute = 1 << 30 // the bench's one user per session calls it often
			only = append(only, t)
		}
	}
	if len(only) == 0 {
		return nil, nil, errors.New("bench: the built-in html_text tool is missing")
	}
	sb, err := sandbox.New(ctx, sandbox.Config{Tools: only, CacheDir: filepath.Join(dataDir, "cache"), PoolSize: 4})
	if err != nil {
		return nil, nil, err
	}
	if err := sb.Load(ctx, benchTool); err != nil {
		sb.Close(context.WithoutCancel(ctx))
		return nil, nil, err
	}
	return sb, func() { sb.Close(context.WithoutCancel(ctx)) }, nil
}

// benchLimits are the runtime's limits in the bench. History compaction is
// off: its model calls cannot be told apart from the turn's own, and would
// count as gateway overhead.
func benchLimits(concurrency int) agent.Limits {
	return agent.Limits{MaxConcurrentTurns: max(concurrency, 64), MaxTurnsPerUser: 2, RatePerMinute: 0,
		HistoryMessages: 1000, HistoryTokenBudget: 1 << 30}
}

// benchLoad is the bench's users and what they send.
type benchLoad struct {
	users, messages, concurrency int
	toolShare                    float64
	think                        time.Duration
	runID                        string
}

// benchOutcome is what one drive measured.
type benchOutcome struct {
	overheads         []time.Duration
	turns             []benchTurn // each turn's, in the order of overheads
	errors, toolTurns int64
	elapsed           time.Duration
}

// benchTurn is one turn the drive measured: user u's m-th message, sent
// at since the load's start.
type benchTurn struct {
	u, m     int
	at       time.Duration
	overhead time.Duration
}

// drive sends the load, each user's next message once the previous one is
// answered, through accept (u is the user), and measures each turn's
// latency minus its model time.
func (l benchLoad) drive(ctx context.Context, progress *progress, ch *benchChannel, clock *modelClock, accept func(u int, in agent.Inbound) error) benchOutcome {
	users, messages, concurrency, think, toolShare, runID := l.users, l.messages, l.concurrency, l.think, l.toolShare, l.runID
	overheads := make([]time.Duration, 0, users*messages)
	turns := make([]benchTurn, 0, users*messages)
	var (
		mu                  sync.Mutex // guards overheads and turns
		errCount, toolTurns atomic.Int64
		finished            atomic.Int64
		turnsSent           atomic.Int64 // turns so far, to pick which ask for a tool
	)
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			key := agent.SessionKey{Principal: agent.Principal{Platform: "bench", User: runID + "-u" + strconv.Itoa(u)}}
			if think > 0 && !agent.Sleep(ctx, time.Duration(rand.Float64()*float64(think))) {
				return
			}
			for m := range messages {
				if think > 0 && m > 0 && !agent.Sleep(ctx, time.Duration(rand.ExpFloat64()*float64(think))) {
					return
				}
				dk := fmt.Sprintf("bench:%s:%d:%d", runID, u, m)
				wait := ch.expect(dk)
				t0 := time.Now()
				text := benchText(u, m)
				// The n-th turn sent asks when it brings the share's count
				// up by one: asks are spread evenly, at any run length.
				if n := float64(turnsSent.Add(1)); math.Floor(n*toolShare) > math.Floor((n-1)*toolShare) {
					text += benchToolAsk
					toolTurns.Add(1)
				}
				err := accept(u, agent.Inbound{DedupeKey: dk, Key: key, Text: text, ReplyTo: dk})
				if err != nil {
					errCount.Add(1)
					continue
				}
				select {
				case rep := <-wait:
					d := time.Since(t0) - clock.spent(u, m)
					if rep.Kind == agent.ReplyError {
						errCount.Add(1)
					}
					mu.Lock()
					overheads = append(overheads, d)
					turns = append(turns, benchTurn{u: u, m: m, at: t0.Sub(start), overhead: d})
					mu.Unlock()
				case <-ctx.Done():
					return
				}
				progress.set(int(finished.Add(1)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	return benchOutcome{overheads: overheads, turns: turns, errors: errCount.Load(), toolTurns: toolTurns.Load(), elapsed: elapsed}
}

// benchReplicas measures the load on SQLite in one runtime (the
// reference), then on n replicas sharing a PostgreSQL database and a NATS
// server, each a process of its own (or, inProcess, in this process), and
// reports both. A cpuProfile names the file for a CPU profile of the
// replicas' run (not the reference's): with processes, each replica's
// own, FILE.N.
func benchReplicas(ctx context.Context, e env, load benchLoad, n int, inProcess bool, pgURL, natsURL string, latency time.Duration, asJSON bool, cpuProfile string) error {
	u, err := postgresArg(pgURL)
	if err != nil {
		return fmt.Errorf("bench: --store: %w", err)
	}
	var refOut bytes.Buffer
	refEnv := e
	refEnv.stdout = &refOut
	if err := cmdBench(ctx, refEnv, []string{"--json", "--users", strconv.Itoa(load.users), "--messages", strconv.Itoa(load.messages),
		"--concurrency", strconv.Itoa(load.concurrency), "--tool-share", strconv.FormatFloat(load.toolShare, 'g', -1, 64),
		"--llm-latency", latency.String(), "--think", load.think.String()}); err != nil {
		return fmt.Errorf("bench: the reference run on SQLite: %w", err)
	}
	var ref benchResult
	if err := json.Unmarshal(refOut.Bytes(), &ref); err != nil {
		return fmt.Errorf("bench: the reference run on SQLite: %w", err)
	}
	// The replicas share this host, and PostgreSQL with them: each one
	// has its share of the host's CPUs, as its GOMAXPROCS and its pool's
	// size (talon run's defaults are all of them, for a replica with a
	// host of its own), as docs/scale.md advises for replicas that share
	// one. On 2 cores, three replicas with 2 each ran 0.65–0.75× one
	// replica's turns/s, with 1 each 0.70–0.93×, median 0.86 (3 December).
	share := max(1, runtime.GOMAXPROCS(0)/n)
	pool := share
	u, set := postgres.WithPoolSize(u, pool)
	if set {
		pool = 0
	}
	load.runID = strconv.FormatInt(time.Now().UnixNano(), 36)
	o := benchReplicaOptions{Store: u, NATS: natsURL, Prefix: "talonbench_" + load.runID, Concurrency: load.concurrency,
		ToolShare: load.toolShare, Latency: latency}
	run, where := benchProcs, "processes"
	if inProcess {
		run, where = benchCluster, "in one process"
	} else {
		o.Procs = share
	}
	res, err := run(ctx, e, load, o, n, asJSON, cpuProfile)
	if err != nil {
		return err
	}
	res.Reference = &ref
	res.PoolPerReplica, res.ProcsPerReplica = pool, o.Procs
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fmt.Fprintf(e.stdout, "turns:           %d (%d users × %d messages, %d at a time)\n", res.Turns, load.users, load.messages, load.concurrency)
	for _, r := range []struct {
		name string
		b    *benchResult
	}{{"SQLite, 1 runtime (reference)", &ref}, {fmt.Sprintf("PostgreSQL + NATS, %d replicas (%s)", n, where), &res}} {
		fmt.Fprintf(e.stdout, "%s:\n", r.name)
		fmt.Fprintf(e.stdout, "  throughput:    %.0f turns/s over %.2f s\n", r.b.TurnsPerSec, r.b.Seconds)
		fmt.Fprintf(e.stdout, "  overhead:      p50 %.2f ms, p95 %.2f ms, p99 %.2f ms (turn latency minus model time)\n", r.b.OverheadMS.P50, r.b.OverheadMS.P95, r.b.OverheadMS.P99)
		fmt.Fprintf(e.stdout, "  tool calls:    %d (%d turns asked for one)\n", r.b.ToolCalls, r.b.ToolTurns)
		fmt.Fprintf(e.stdout, "  errors:        %d\n", r.b.Errors)
	}
	if ref.TurnsPerSec > 0 {
		fmt.Fprintf(e.stdout, "ratio:           %.2f× the reference's turns/s\n", res.TurnsPerSec/ref.TurnsPerSec)
	}
	if o.Procs > 0 {
		fmt.Fprintf(e.stdout, "each replica:    GOMAXPROCS %d (this host's %d CPUs shared among the replicas)\n", o.Procs, runtime.GOMAXPROCS(0))
	}
	if pool > 0 {
		fmt.Fprintf(e.stdout, "PostgreSQL pool: %d connections a replica (its share of this host's CPUs; pool_max_conns in --store sets it)\n", pool)
	}
	fmt.Fprintf(e.stdout, "group commit:    %d of the replicas' writes committed in %d groups of two or more\n", res.GroupedWrites, res.Groups)
	if st := res.Stages; st != nil {
		fmt.Fprintf(e.stdout, "stages:          accept p50 %.2f ms, p99 %.2f ms; turn p50 %.2f ms, p99 %.2f ms; means: overhead %.2f ms, accept %.2f, turn %.2f, the rest waiting and delivery\n",
			st.AcceptMS.P50, st.AcceptMS.P99, st.TurnMS.P50, st.TurnMS.P99, st.Mean.Overhead, st.Mean.Accept, st.Mean.Turn)
	}
	if res.Turns > 0 {
		fmt.Fprintf(e.stdout, "NATS:            %.1f messages sent and %.1f received a turn (the replicas' connections)\n",
			float64(res.NATSMsgsOut)/float64(res.Turns), float64(res.NATSMsgsIn)/float64(res.Turns))
	}
	if inProcess {
		fmt.Fprintf(e.stdout, "peak RSS:        %.1f MB (the whole process, both runs)\n", float64(res.PeakRSSBytes)/1e6)
		return nil
	}
	fmt.Fprintf(e.stdout, "peak RSS:        %.1f MB, the sum of the replicas' processes and the bench's own (%.1f MB: the reference run and the load's driver)\n",
		float64(res.PeakRSSBytes)/1e6, float64(res.BenchRSSBytes)/1e6)
	var cpu float64
	for i, p := range res.Procs {
		fmt.Fprintf(e.stdout, "  replica %d:     pid %d, %d messages accepted, %d turns run, peak RSS %.1f MB, CPU %.2f s\n", i, p.PID, p.Accepted, p.Turns, float64(p.PeakRSSBytes)/1e6, p.CPUSeconds)
		cpu += p.CPUSeconds
	}
	if res.Turns > 0 {
		fmt.Fprintf(e.stdout, "CPU:             %.2f ms a turn in the replicas' processes, %.2f ms in the bench's (PostgreSQL's and NATS's not counted)\n",
			cpu*1000/float64(res.Turns), res.BenchCPUSeconds*1000/float64(res.Turns))
	}
	return nil
}
