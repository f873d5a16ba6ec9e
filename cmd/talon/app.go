package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/talonhq/talon/adapters/terminal"
	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/cluster"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/console"
	"github.com/talonhq/talon/mcp"
	"github.com/talonhq/talon/memory"
	"github.com/talonhq/talon/routines"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/vault"
)

// app is everything a gateway process holds open. openApp builds it in
// order: data directory lock, store, vault (vault.go), model provider,
// runtime, tools (tools.go); channels (channels.go) are started by cmdRun.
type app struct {
	cfg     *config.Config
	env     env
	log     zerolog.Logger
	lock    *os.File
	db      openedStore
	files   *store.FileDir
	llm     llm.Provider
	rt      *agent.Runtime
	metrics *metrics
	// sandboxTools are the tools openTools was given (the console lists
	// them).
	sandboxTools []sandbox.Tool
	// broker is the egress broker of the sandbox and the MCP client, set
	// by startSandbox.
	broker *egress.Broker
	// mcp is the MCP client, set by newMCP; nil without mcp.servers.
	mcp *mcp.Client

	// memory is what the model remembers (openMemory); nil when
	// memory.enabled is false.
	memory *memory.Service
	// Set by openRoutines; nil when routines are disabled.
	routines *routines.Service
	router   *routineRouter

	// console is the operator's console (mountConsole); nil when
	// console.enabled is false.
	console *console.Server

	// node distributes turns over replicas (cluster.go); nil without
	// nats.url.
	node *cluster.Node
	// shards are the Discord gateway's shard leases (cluster.go); nil
	// without nats.url or Discord.
	shards *cluster.Shards

	// Set by openVault; nil when no vault is configured.
	redactor agent.Redactor
	secrets  agent.Secrets

	// closers run in reverse order in Close.
	closers []func()
}

// loadConfig reads the configuration the command line and environment name.
func loadConfig(e env, flagPath string) (*config.Config, error) {
	cfg, err := config.Load(config.Path(flagPath, e.getenv), e.getenv)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// newLogger builds the process logger: JSON, or console lines on a terminal.
func newLogger(cfg *config.Config, w io.Writer, minLevel zerolog.Level) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.Log.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	level = max(level, minLevel)
	format := cfg.Log.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// openApp takes the data directory, opens the store and builds the runtime.
// The tools' manifests are read and parsed while the store opens, on
// another core; no module is read or compiled (see sandbox.Runtime).
func openApp(ctx context.Context, e env, cfg *config.Config, log zerolog.Logger) (*app, error) {
	var (
		tools    []sandbox.Tool
		toolsErr error
	)
	toolsDone := make(chan struct{})
	if e.tools == nil {
		go func() {
			defer close(toolsDone)
			tools, toolsErr = loadTools(cfg.ToolsDir(), cfg.CacheDir())
		}()
	} else {
		close(toolsDone)
	}
	defer func() { <-toolsDone }() // on every path, so the goroutine never outlives openApp

	a := &app{cfg: cfg, env: e, log: log, metrics: newMetrics()}
	a.warnShortConfigSecrets()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w (set data_dir or TALON_DATA_DIR to a writable directory)", cfg.DataDir, err)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a.lock = lock
	a.files = &store.FileDir{Dir: cfg.FilesDir()}
	a.db, err = openStore(ctx, cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	if err := a.openVault(ctx); err != nil {
		a.Close()
		return nil, err
	}
	a.llm, err = newProvider(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	ac := cfg.Agent
	a.rt = &agent.Runtime{
		Store:        a.db,
		Usage:        a.db,
		Access:       a.db,
		UsageLog:     a.db,
		Budgets:      budgets(cfg),
		LLM:          a.llm,
		Log:          log,
		Metrics:      a.metrics,
		SystemPrompt: ac.SystemPrompt,
		Limits: agent.Limits{
			MaxSteps:           ac.MaxSteps,
			TurnTimeout:        ac.TurnTimeout.Std(),
			HistoryMessages:    ac.HistoryMessages,
			HistoryTokenBudget: ac.HistoryTokenBudget,
			ThreadMessages:     threadMessages(cfg.Context.ThreadMessages),
			ThreadTokens:       cfg.Context.ThreadTokens,
			MaxConcurrentTurns: ac.MaxConcurrentTurns,
			MaxTurnsPerUser:    ac.MaxTurnsPerUser,
			RatePerMinute:      ac.RatePerMinute,
			ToolParallelism:    ac.ToolParallelism,
			DeliveryAttempts:   ac.DeliveryAttempts,
			ShutdownGrace:      ac.ShutdownGrace.Std(),
			Files: agent.FileLimits{
				MaxBytes:     cfg.Files.MaxBytes,
				MaxFiles:     cfg.Files.MaxFiles,
				TextTokens:   cfg.Files.TextTokens,
				Timeout:      cfg.Files.Timeout.Std(),
				ImageMaxSide: imageMaxSide(cfg.LLM.Provider),
			},
		},
		Files:           a.files,
		Vision:          agent.Vision(cfg.LLM.Vision),
		Redactor:        a.redactor,
		Secrets:         a.secrets,
		ApprovalTimeout: cfg.Sandbox.ApprovalTimeout.Std(),
	}
	if e.tools != nil {
		a.rt.Tools = e.tools
	} else {
		<-toolsDone
		if toolsErr == nil {
			toolsErr = a.openTools(ctx, tools)
		}
		if toolsErr != nil {
			a.Close()
			return nil, toolsErr
		}
	}
	a.openMemory()
	a.openRoutines()
	return a, nil
}

// Close releases what openApp took, in reverse order.
func (a *app) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
	if a.db.gatewayStore != nil {
		if err := a.db.Close(); err != nil {
			a.log.Error().Err(err).Msg("close database")
		}
	}
	if a.lock != nil {
		a.lock.Close()
	}
}

// imageMaxSide is the longest side of an image shown to the provider's
// models: Anthropic recommends 1,568 pixels; OpenAI's high detail scales
// to 2,048 (then 768 on the short side).
func imageMaxSide(provider string) int {
	if provider == config.ProviderAnthropic {
		return 1568
	}
	return 2048
}

// sweepFiles removes, every hour until ctx ends, the attached files no
// turn has used for the retention period.
func (a *app) sweepFiles(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := a.files.Sweep(ctx, a.cfg.Files.Retention.Std())
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.Warn().Err(err).Msg("sweep attached files")
		case n > 0:
			a.log.Info().Int("removed", n).Dur("retention", a.cfg.Files.Retention.Std()).Msg("removed attached files past their retention")
		}
		if _, err := a.db.SweepOAuthStates(ctx, time.Now().Add(-time.Hour)); err != nil && ctx.Err() == nil {
			a.log.Warn().Err(err).Msg("sweep expired connect links")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newProvider builds the configured model provider.
func newProvider(cfg *config.Config) (llm.Provider, error) {
	l := cfg.LLM
	retries := l.MaxRetries
	if retries == 0 {
		retries = -1 // llm.Config: zero means the default, negative means none
	}
	lc := llm.Config{
		BaseURL:    l.EffectiveBaseURL(),
		APIKey:     l.APIKey.Reveal(),
		Model:      l.EffectiveModel(),
		Headers:    l.RevealHeaders(),
		Timeout:    l.Timeout.Std(),
		MaxRetries: retries,
		MaxTokens:  l.MaxTokens,
	}
	var (
		p   llm.Provider
		err error
	)
	if l.Provider == config.ProviderAnthropic {
		p, err = llm.NewAnthropic(lc)
	} else {
		p, err = llm.NewOpenAI(lc)
	}
	if err != nil {
		return nil, fmt.Errorf("llm: %w", err)
	}
	return p, nil
}

// errDataDirLocked is wrapped when another process holds the data
// directory.
var errDataDirLocked = errors.New("data directory in use")

// lockDataDir makes sure one process at a time serves a data directory:
// two would both recover and answer the same queued messages.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "talon.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another talon process is using the data directory %s; stop it first, or give this one another data_dir: %w", dir, errDataDirLocked)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return f, nil
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// forceWait is how long a second signal lets the stop finish before
// cmdRun returns without it (and the process exits): every part stops at
// once when told, so this is only a bound for one that does not.
const forceWait = 5 * time.Second

// cmdRun serves the gateway (run) or a terminal conversation (chat).
//
// It stops on SIGINT or SIGTERM (ctx), when a part fails, or when the
// terminal conversation ends, in this order: the runtime's intake (no new
// message is accepted, so the platforms deliver them again later), the
// drain (running turns may finish for agent.shutdown_grace; a second
// signal, e.stopNow, ends it at once), the channels and the HTTP listener,
// and last the store.
func cmdRun(ctx context.Context, e env, args []string, chat bool) error {
	name := "run"
	if chat {
		name = "chat"
	}
	flagPath, err := parseFlags(name, e, args, nil)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(e, flagPath)
	if err != nil {
		return err
	}
	minLevel := zerolog.TraceLevel
	if chat {
		minLevel = zerolog.WarnLevel // keep the conversation readable
	}
	log := newLogger(cfg, e.stderr, minLevel)
	a, err := openApp(ctx, e, cfg, log)
	if err != nil {
		return err
	}
	closeApp := true
	defer func() {
		if closeApp {
			a.Close()
		}
	}()

	var chans []channel
	if !chat {
		if chans, err = a.channels(); err != nil {
			return err
		}
		if len(chans) > 0 {
			if err := a.openCluster(ctx); err != nil {
				return err
			}
		} else if cfg.NATS.Enabled() {
			log.Warn().Msg("nats.url is set but only the terminal channel runs, in this process; it takes no part in the cluster")
		}
	}
	lockLost := make(chan error, 1)
	if err := a.lockRuntime(ctx, name, lockLost); err != nil {
		return err
	}
	a.warmStore(ctx)
	var ops *opsListener
	var states channelStates
	for _, ch := range chans {
		states.set(ch.name, "starting")
		if ch.onState != nil {
			ch.onState(func(state string) { states.set(ch.name, state) })
		}
	}
	if !chat && cfg.HTTP.Listen != "" {
		mux := http.NewServeMux()
		for _, ch := range chans {
			if ch.mount != nil {
				ch.mount(mux)
			}
		}
		if err := a.mountConsole(mux, &states); err != nil {
			return err
		}
		a.mountOAuth(mux)
		if ops, err = a.opsServer(cfg.HTTP.Listen, mux); err != nil {
			return err
		}
	}
	var term *terminal.Adapter
	if len(chans) == 0 {
		interactive := isTerminal(e.stdin)
		term = &terminal.Adapter{In: e.stdin, Out: e.stdout, User: cfg.Terminal.User, Interactive: interactive, Runtime: a.rt}
		a.register(term)
		if !chat {
			log.Info().Msg("no Slack or Discord channel is configured, so the terminal channel is running; " +
				"add a slack: or discord: section to the configuration to serve them (see README.md)")
		}
	}
	log.Info().Str("provider", a.llm.Name()).Str("model", a.llm.Model()).Str("data_dir", cfg.DataDir).Msg("starting")

	// Every part sends on ended when it ends by itself: a failure, or the
	// end of the terminal conversation (nil). The first starts the stop.
	ended := make(chan error, len(chans)+4)
	runDone := make(chan error, 1)
	go func() { runDone <- a.rt.Run(context.Background()) }()
	// The node takes part in the deployment once the runtime is ready, and
	// gives its partitions up after the runtime has stopped.
	nodeCtx, stopNode := context.WithCancel(context.Background())
	defer stopNode()
	nodeDone := make(chan error, 1)
	if a.node != nil {
		go func() {
			select {
			case <-a.rt.Ready():
			case <-nodeCtx.Done():
				nodeDone <- nil
				return
			}
			err := a.node.Run(nodeCtx)
			if err != nil {
				ended <- err
			}
			nodeDone <- err
		}()
	} else {
		nodeDone <- nil
	}
	opsCtx, stopOps := context.WithCancel(context.Background())
	defer stopOps()
	opsDone := make(chan error, 1)
	if ops != nil {
		go func() {
			err := ops.run(opsCtx)
			if err != nil {
				ended <- err
			}
			opsDone <- err
		}()
	} else {
		opsDone <- nil
	}
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		a.sweepFiles(opsCtx)
	}()
	// The console's default usage period, kept ahead of the first load of
	// each day (console.Server.Precompute); it stops with the run, before
	// the store closes.
	precomputeDone := make(chan struct{})
	go func() {
		defer close(precomputeDone)
		if a.console != nil {
			a.console.Precompute(opsCtx)
		}
	}()
	// The scheduler stops with the intake: a run it records meanwhile is
	// handed in at the next start.
	schedCtx, stopSched := context.WithCancel(context.Background())
	defer stopSched()
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		a.runRoutines(schedCtx)
	}()
	chanCtx, stopChannels := context.WithCancel(context.Background())
	defer stopChannels()
	var chanWG sync.WaitGroup
	for _, ch := range chans {
		chanWG.Go(func() {
			states.set(ch.name, "running")
			err := ch.run(chanCtx)
			states.set(ch.name, "stopped")
			if err != nil && chanCtx.Err() == nil {
				ended <- err // the adapters name themselves
			}
		})
	}
	if term != nil {
		chanWG.Go(func() {
			select {
			case <-a.rt.Ready():
			case <-chanCtx.Done():
				return
			}
			if term.Interactive {
				fmt.Fprintf(e.stdout, "Talon %s, model %s. Type a message, /help for commands, Ctrl-D to quit.\n", versionString(), a.llm.Model())
			}
			err := term.Run(chanCtx)
			if chanCtx.Err() == nil {
				ended <- err // the conversation is over: stop the gateway
			}
		})
	}

	var failure error
	select {
	case <-ctx.Done():
	case failure = <-ended:
	case failure = <-lockLost:
	case failure = <-runDone:
		runDone <- failure
		if failure == nil {
			failure = errors.New("agent: the runtime stopped by itself")
		}
	}

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		grace := cfg.Agent.ShutdownGrace.Std()
		gctx, endGrace := context.WithTimeout(context.Background(), grace)
		defer endGrace()
		go func() {
			select {
			case <-e.stopNow:
				log.Warn().Msg("second signal: stopping now; running turns resume at the next start")
				endGrace()
			case <-gctx.Done():
			}
		}()
		stopSched()
		<-schedDone
		log.Info().Dur("grace", grace).Msg("stopping: running turns may finish; a second Ctrl-C or SIGTERM stops at once")
		if err := a.rt.Shutdown(gctx); err != nil {
			log.Warn().Msg("running turns were interrupted; they resume at the next start")
		}
		if err := <-runDone; err != nil && failure == nil {
			failure = err
		}
		stopNode()
		<-nodeDone
		stopChannels()
		chanWG.Wait()
		stopOps()
		<-opsDone
		<-sweepDone
		<-precomputeDone
	}()
	select {
	case <-stopped:
	case <-e.stopNow:
		select {
		case <-stopped:
		case <-time.After(forceWait):
			closeApp = false // a part still holds the store; the process exits around it
			log.Error().Dur("waited", forceWait).Msg("the stop did not finish after the second signal; exiting without it")
			return errors.New("stopped without finishing the stop: a part did not end in time (see the log)")
		}
	}
	log.Info().Msg("stopped")
	if failure != nil && !errors.Is(failure, context.Canceled) {
		return failure
	}
	return nil
}

// cmdDoctor checks that the gateway can start and reach its model and, for
// each enabled channel, that its credentials and settings work.
func cmdDoctor(ctx context.Context, e env, args []string) error {
	flagPath, err := parseFlags("doctor", e, args, nil)
	if err != nil {
		return err
	}
	ok := true
	check := func(name string, err error, detail string) {
		if err != nil {
			ok = false
			fmt.Fprintf(e.stdout, "FAIL  %s: %v\n", name, err)
			return
		}
		fmt.Fprintf(e.stdout, "ok    %s%s\n", name, detail)
	}
	cfg, err := loadConfig(e, flagPath)
	check("configuration", err, "")
	if err != nil {
		return errors.New("doctor found problems")
	}
	check("data directory", checkWritable(cfg.DataDir), " "+cfg.DataDir)
	doctorStore(ctx, e, cfg, check)
	doctorNATS(ctx, cfg, check)
	p, err := newProvider(cfg)
	check("model provider", err, fmt.Sprintf(" %s at %s, model %s", cfg.LLM.Provider, cfg.LLM.EffectiveBaseURL(), cfg.LLM.EffectiveModel()))
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		// The one request that does not take the runtime's model path
		// (agent.Runtime's complete): a fixed prompt with no user, history
		// or secret in it, so nothing to scrub and no one to meter.
		_, err := p.Complete(cctx, llm.Request{Messages: []llm.Message{{Role: llm.RoleUser, Content: "Reply with the word ok."}}, MaxTokens: 16})
		check("model answers", err, fmt.Sprintf(" in %s", time.Since(start).Round(time.Millisecond)))
	}
	doctorChannels(ctx, cfg, check)
	doctorMCP(ctx, e, cfg, check)
	if !ok {
		return errors.New("doctor found problems")
	}
	return nil
}

// doctorStore checks, read-only, what openApp would stop on in the
// database and the vault: a schema of a newer Talon, a wrong or missing
// vault key. It says when the next start upgrades the database, which an
// older Talon then cannot open.
func doctorStore(ctx context.Context, e env, cfg *config.Config, check checkFunc) {
	if cfg.Store.Driver == config.StorePostgres {
		doctorPostgres(ctx, e, cfg, check)
		return
	}
	in, err := store.Inspect(ctx, cfg.DBPath())
	var detail string
	switch {
	case err != nil:
	case !in.Exists:
		detail = " (created at the first start)"
	case in.Version > in.Latest:
		err = fmt.Errorf("%s has schema version %d, this Talon knows up to %d: run a newer Talon or restore a backup", cfg.DBPath(), in.Version, in.Latest)
	case in.Version < in.Latest:
		detail = fmt.Sprintf(" %s: schema version %d; the next start upgrades it to %d, which an older Talon cannot open: back up %s first",
			cfg.DBPath(), in.Version, in.Latest, cfg.DataDir)
	default:
		detail = fmt.Sprintf(" %s, schema version %d", cfg.DBPath(), in.Version)
	}
	check("database", err, detail)
	if err == nil {
		check("vault key", vault.CheckKeyInDir(cfg.DataDir, e.getenv, in.VaultKeyCheck, in.VaultEntries), "")
	}
}

// doctorPostgres checks, read-only, that PostgreSQL at store.url answers
// and what its schema version is, then the vault key against it.
func doctorPostgres(ctx context.Context, e env, cfg *config.Config, check checkFunc) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	in, err := postgres.Inspect(cctx, cfg.Store.URL.Reveal())
	var detail string
	switch {
	case errors.Is(err, postgres.ErrCannotCreate): // it says what to do
	case err != nil:
		err = fmt.Errorf("%w (check store.url and that the server accepts this host)", err)
	case in.Version == 0:
		detail = fmt.Sprintf(" (postgres) answers; empty: the first start creates schema version %d", in.Latest)
	case in.Version > in.Latest:
		err = fmt.Errorf("postgres: schema version %d, this Talon knows up to %d: run a newer Talon on every replica, or restore a backup", in.Version, in.Latest)
	case in.Version < in.Latest:
		detail = fmt.Sprintf(" (postgres): schema version %d; the next start upgrades it to %d, which an older Talon cannot open: back up the database and upgrade every replica", in.Version, in.Latest)
	default:
		detail = fmt.Sprintf(" (postgres) answers, schema version %d", in.Version)
	}
	check("database", err, detail)
	if err == nil {
		check("vault key", sharedKeyHint(cfg, vault.CheckKeyInDir(cfg.DataDir, e.getenv, in.VaultKeyCheck, in.VaultEntries)), "")
		running := ": no process runs turns on this database now"
		if in.Runtimes != "" {
			running = ": turns run here, the runtime lock " + in.Runtimes + " (beside a process without nats.url nothing else may run turns; " +
				"beside replicas, only replicas of the same deployment)"
		}
		check("runtime", nil, running)
	}
}

func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// versionString is the version stamped at build time, or the module's.
func versionString() string {
	if version != "" {
		return version
	}
	return strings.TrimSpace(buildVersion())
}

// threadMessages is context.thread_messages as agent.Limits takes it: 0
// (read no thread) is negative there, where 0 is the default.
func threadMessages(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
