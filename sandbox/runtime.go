package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/sandbox/internal/interrupt"
)

// Egress makes a tool's HTTP requests under its policy. egress.Broker
// implements it.
type Egress interface {
	Do(ctx context.Context, c egress.Caller, r egress.Request) (*egress.Response, error)
}

// Secrets says whether a user has a vault entry of a name. It never
// returns a value.
type Secrets interface {
	Has(ctx context.Context, p agent.Principal, name string) bool
}

// Redactor finds secrets in text: the principal's own vault values (and
// their encodings) and well-known token formats. agent.Redactor is one.
type Redactor interface {
	// Redact returns text with every finding replaced by a marker, and the
	// number of findings.
	Redact(ctx context.Context, p agent.Principal, text string) (string, int)
}

// Approver asks the user whether a call or request may go ahead.
type Approver interface {
	Approve(ctx context.Context, req ApprovalRequest) (bool, error)
}

// ApprovalRequest is what the user is asked to approve.
type ApprovalRequest struct {
	Tool      string
	Principal agent.Principal
	// Key and Turn are the session and turn of the call (agent.ToolCall),
	// so an approver can pause that turn and ask that session's owner.
	Key    agent.SessionKey
	Turn   agent.TurnID
	CallID string
	// Description is short and human, e.g. "POST https://api.github.com/repos/x/y/issues"
	// or "run tool deploy".
	Description string
	// Method, Host and Path describe the HTTP request to approve
	// (approval=non_get only): Host with its port when the URL names one,
	// Path with the query's names but not their values, never the user
	// info.
	Method, Host, Path string
	// Args are the call's arguments (approval=always only), to show the
	// user. Never log them.
	Args json.RawMessage
	// Reason is set for a request asked because the turn read untrusted
	// content (agent.ToolCall.Taint): why it is asked. Path then holds the
	// query's values too (the data that would leave); URLBytes and
	// BodyBytes are the whole URL's and body's lengths.
	Reason              string
	URLBytes, BodyBytes int
}

// Config configures a Runtime. Only Tools is required.
type Config struct {
	// Tools are the tools to serve, as LoadTools returns them. Disabled
	// tools are not compiled.
	Tools []Tool
	// Eager compiles and checks every enabled tool in New, so that a
	// broken module stops the start. The default (false) compiles a tool
	// on its first use (or Load): start-up then costs milliseconds instead
	// of seconds per tool on a cold cache, and a broken module fails its
	// calls (ErrLoad) and drops out of Tools.
	Eager bool
	// CacheDir holds instrumented modules and compiled code across
	// restarts, each verified before use (see diskCache). Empty, or a
	// directory Talon cannot write (a warning is logged), means an
	// in-memory cache: every start instruments and compiles.
	CacheDir string
	// PoolSize is the number of pre-initialised instances kept per tool
	// once the tool has been used. Zero (or negative) means no pool:
	// every call instantiates its own instance.
	PoolSize int
	// MaxMemoryMiB bounds the memory of all instances together: linear
	// memory and tables at their reserved size, pooled idle instances
	// included. A call that would exceed it waits (users served in turn)
	// until its deadline; idle pooled instances are closed first. Zero
	// means DefaultMaxMemoryMiB.
	MaxMemoryMiB int
	// PoolIdle is how long a tool's pool keeps its instances after the
	// tool's last call; they are closed then, and made again on its next
	// call. Zero means DefaultPoolIdle; negative keeps them for good.
	PoolIdle time.Duration
	// Egress makes the tools' HTTP requests; nil refuses every request.
	Egress Egress
	// Secrets answers has_secret; nil answers no.
	Secrets Secrets
	// Approver is asked before calls of approval=always tools and before
	// non-GET requests of approval=non_get tools; nil denies.
	Approver Approver
	// Logger receives the guests' log messages at debug level and, once
	// per tool, why a tool failed to load, at warn level. The zero value
	// discards them.
	Logger zerolog.Logger
	// Redactor scans the guests' log messages for the calling user's
	// secrets and well-known token formats before they are logged; nil
	// withholds their text (the log line says only that the tool logged).
	Redactor Redactor
	// Now is the clock of the per-minute rate limits; nil means time.Now.
	Now func() time.Time
	// Taint says which requests of a tainted turn (agent.ToolCall.Taint)
	// need the owner's approval, and which responses taint a turn; give
	// the broker the same. nil trusts no host.
	Taint *egress.Taint
}

// Runtime runs tool calls, each in a fresh WebAssembly instance. It is safe
// for concurrent use. Close it to stop the pools and free the runtime.
//
// Nothing is compiled or instantiated until a tool is first used: the
// wazero runtime, WASI and the host module are built then (see engine), so
// an idle gateway holds neither them nor any module's binary.
type Runtime struct {
	cache    wazero.CompilationCache
	disk     *diskCache // nil without a usable CacheDir
	memPages uint32     // the runtime's memory limit, in 64 KiB pages
	host     *host
	tools    map[string]*loaded // read-only after New
	names    []string           // enabled tools, sorted
	poolSize int
	poolIdle time.Duration // < 0: never
	limiter  *rateLimiter
	quota    *quota
	slots    *slots // linear memories kept for reuse

	// ctx is cancelled by Close; it stops the pool fillers.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // pool fillers and compilations in progress
	// calls is the calls in progress; Add only under mu while !closed.
	// Close waits for them before it closes any instance: an instance's
	// memory is unmapped when it is closed.
	calls sync.WaitGroup

	mu     sync.Mutex
	pools  map[string]*pool // guarded by mu
	closed bool             // guarded by mu

	instances    atomic.Int64 // instances made so far
	instrumented atomic.Int64 // modules instrumented (not found in the disk cache)
	compiled     atomic.Int64 // modules compiled (not found in the disk cache)
	loadedN      atomic.Int64 // tools loaded and ready for calls
	poolMisses   atomic.Int64 // calls that made their own instance

	// noSnapshots makes every instance run _initialize (tests and
	// benchmarks compare).
	noSnapshots bool

	engMu  sync.Mutex
	eng    *engine // guarded by engMu; nil until the first compilation
	engErr error   // guarded by engMu; why the engine could not be built
}

// engine is the wazero runtime with WASI and the host module instantiated,
// and the host's ABI to check modules against.
type engine struct {
	rt  wazero.Runtime
	abi *abi
}

var _ agent.ToolRunner = (*Runtime)(nil)

// loaded is an enabled tool, compiled and checked on first use.
type loaded struct {
	manifest *Manifest
	policy   *egress.Policy
	memLimit uint64 // bytes
	source   string

	// What the tool's instances held at the end of _initialize: linear
	// memory and tables, in bytes (the highest seen). An instance is
	// charged this much before it is made. Zero until the first one.
	initMem, initTables atomic.Uint64

	// failed is set once loading failed, so Tools can skip the tool
	// without waiting for a compilation in progress.
	failed atomic.Bool

	mu sync.Mutex
	// done is closed when the tool's compilation has ended; nil until it
	// starts. Guarded by mu.
	done chan struct{}

	// Written once, by the compilation, before done is closed; read only
	// after done is closed.
	tool     Tool                  // where to read the module from; Wasm dropped once compiled
	compiled wazero.CompiledModule // nil if loading failed
	err      error                 // why loading failed, for good
	// state is the number of state globals the module exports if its
	// instances can be restored from a snapshot, else -1.
	state int

	// snap is the snapshot new instances are restored from, nil until
	// an instance has taken it; snapping is set while one does.
	snap     atomic.Pointer[snapshot]
	snapping atomic.Bool
}

const mib = 1 << 20

// Defaults of Config.
const (
	// DefaultMaxMemoryMiB is sized so that a gateway with the default
	// configuration stays within 512 MB of resident memory: about 75
	// instances of a built-in tool (3.3 MiB each) at once.
	DefaultMaxMemoryMiB = 256
	// DefaultPoolIdle is how long a tool's pooled instances outlive its
	// last call.
	DefaultPoolIdle = 5 * time.Minute
)

// New returns a Runtime serving the enabled tools. Tools are compiled and
// checked on first use, or here when cfg.Eager is set; every problem New
// finds is reported at once.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	maxMiB := defaultLimits.MemoryMiB
	for _, t := range cfg.Tools {
		if t.Manifest == nil {
			return nil, errors.New("sandbox: tool without manifest")
		}
		if t.Manifest.Enabled {
			maxMiB = max(maxMiB, t.Manifest.Limits.MemoryMiB)
		}
	}
	var (
		cache wazero.CompilationCache
		err   error
	)
	var disk *diskCache
	if cfg.CacheDir != "" {
		disk = openDiskCache(cfg.CacheDir, cfg.Logger)
	}
	if disk != nil {
		if cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("sandbox: compilation cache: %w", err)
		}
	} else {
		cache = wazero.NewCompilationCache()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	maxMem := cfg.MaxMemoryMiB
	if maxMem <= 0 {
		maxMem = DefaultMaxMemoryMiB
	}
	poolIdle := cfg.PoolIdle
	if poolIdle == 0 {
		poolIdle = DefaultPoolIdle
	}
	r := &Runtime{
		cache:    cache,
		disk:     disk,
		memPages: uint32(maxMiB * (mib / 65536)),
		host: &host{egress: cfg.Egress, secrets: cfg.Secrets, approver: cfg.Approver, logger: cfg.Logger, taint: cfg.Taint,
			redactor: cfg.Redactor},
		tools:    map[string]*loaded{},
		poolSize: cfg.PoolSize,
		poolIdle: poolIdle,
		limiter:  newRateLimiter(now),
		quota:    newQuota(uint64(maxMem) * mib),
		pools:    map[string]*pool{},
	}
	// Memories are kept for as many instances as a pool holds, and one
	// call's; none without pools (the operator chose the least memory).
	keep := 0
	if r.poolSize > 0 {
		keep = r.poolSize + 1
	}
	r.slots = newSlots(r.quota, keep)
	r.quota.evict = r.evict
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	fail := func(err error) (*Runtime, error) {
		r.cancel()
		r.closeEngine(ctx)
		cache.Close(ctx)
		return nil, err
	}

	var errs []error
	for _, t := range cfg.Tools {
		m := t.Manifest
		if !m.Enabled {
			continue
		}
		if _, dup := r.tools[m.Name]; dup {
			errs = append(errs, fmt.Errorf("tool %s: listed twice", m.Name))
			continue
		}
		r.tools[m.Name] = &loaded{manifest: m, policy: m.policy(), memLimit: uint64(m.Limits.MemoryMiB) * mib, source: t.Source, tool: t}
		r.names = append(r.names, m.Name)
	}
	if cfg.Eager {
		for _, n := range r.names {
			if _, err := r.module(ctx, r.tools[n]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fail(fmt.Errorf("sandbox: %w", err))
	}
	sort.Strings(r.names)
	return r, nil
}

// Load compiles and checks the named tool now, as its first call would;
// calls reuse the result, and a failure is kept. It returns the full reason
// a tool cannot load, for the operator, or ErrCompiling if ctx ends first
// (the compilation goes on).
func (r *Runtime) Load(ctx context.Context, name string) error {
	t, ok := r.tools[name]
	if !ok {
		return &CallError{Tool: name, Kind: ErrUnknownTool, Reason: "unknown tool"}
	}
	if _, err := r.module(ctx, t); err != nil {
		if errors.Is(err, ErrCompiling) {
			return err
		}
		return fmt.Errorf("sandbox: %w", err)
	}
	return nil
}

// WarmAfter loads every enabled tool in the background once ready is
// closed, one after the other, as their first calls would (see Load), so
// that their first calls find them ready: an instantiation instead of a
// load (wazero decodes and validates a module again before it looks in its
// cache, some 60 ms of CPU for a built-in tool). The tools an earlier
// process over the same cache directory loaded, whose compiled code the
// cache holds, are loaded delay after ready, in name order; the others
// must be compiled (seconds of CPU each: the first start, or a tool newly
// enabled), and are compiled compileDelay after ready, so that a first
// start's own first minutes are not slowed by it. It returns at once and
// never delays readiness; Close stops the warming. The channel returned
// is closed when the warming is over: every tool loaded (or failed), or
// stopped by Close. A call that comes during the warming waits for the
// same load instead of loading its tool again, and a call of a tool the
// warming has not reached yet loads it at once: the warming waits for
// that load before it starts its next one.
//
// Once a phase's tools are loaded, the warming makes one instance of each
// for its pool (with a pool, see warmPool): the tool's first call takes it
// instead of making its own. It is charged to the memory budget, and
// closed like any pooled instance after PoolIdle without a call.
//
// Each loaded tool holds its compiled code and decoded module for good:
// about 21 MB of RSS for a Go-built tool (README, Performance).
func (r *Runtime) WarmAfter(ready <-chan struct{}, delay, compileDelay time.Duration) <-chan struct{} {
	done := make(chan struct{})
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		close(done)
		return done
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer close(done)
		select {
		case <-ready:
		case <-r.ctx.Done():
			return
		}
		readyAt := time.Now()
		used, others := r.warmOrder()
		for _, phase := range []struct {
			at    time.Duration
			tools []string
		}{{delay, used}, {compileDelay, others}} {
			if len(phase.tools) == 0 {
				continue
			}
			t := time.NewTimer(time.Until(readyAt.Add(phase.at)))
			select {
			case <-t.C:
			case <-r.ctx.Done():
				t.Stop()
				return
			}
			before := r.loadedN.Load()
			for _, n := range phase.tools {
				if !r.awaitLoads() {
					return
				}
				_, _ = r.module(r.ctx, r.tools[n]) // a failure is logged by load, and kept
			}
			// Then one instance of each, for its first call (see pool):
			// milliseconds each, after every load (tens of milliseconds
			// each), so that a call finds its tool loaded sooner.
			for _, n := range phase.tools {
				if r.ctx.Err() != nil {
					return
				}
				if t := r.tools[n]; !t.failed.Load() {
					r.warmPool(t)
				}
			}
			if r.loadedN.Load() > before {
				// Loading left megabytes of garbage per tool (its binary
				// and its instrumented form read whole, wazero's decoding,
				// a compilation's work): give the pages back now rather
				// than over minutes, so that an idle gateway's RSS is what
				// it holds (15 MB less with the three built-ins enabled by
				// default).
				debug.FreeOSMemory()
			}
		}
	}()
	return done
}

// awaitLoads waits for the loads in progress, which calls started (the
// warming's own are over when it calls this): a call's tool jumps the
// warming's queue, and its load does not share the CPU with the
// warming's next one. It returns false once r is closed.
func (r *Runtime) awaitLoads() bool {
	for _, n := range r.names {
		t := r.tools[n]
		t.mu.Lock()
		done := t.done
		t.mu.Unlock()
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-r.ctx.Done():
			return false
		}
	}
	return r.ctx.Err() == nil
}

// warmOrder splits the enabled tools for WarmAfter: those an earlier
// process loaded (their compiled code is in the cache), and the others,
// each in name order.
func (r *Runtime) warmOrder() (used, others []string) {
	var loaded map[string]bool
	if r.disk != nil {
		loaded = r.disk.used()
	}
	for _, n := range r.names {
		if loaded[n] {
			used = append(used, n)
		} else {
			others = append(others, n)
		}
	}
	return used, others
}

// errClosed is returned for work asked of a closed Runtime.
var errClosed = errors.New("sandbox: runtime closed")

// module returns t's compiled module, compiling and checking it on first
// use. The compilation runs in a goroutine of its own, owned by the
// Runtime: concurrent first calls wait for the same one, each only as long
// as its ctx allows (it then gets ErrCompiling, and the compilation goes
// on), and no lock is held while it runs, so it delays neither other tools
// nor Close. Close stops it between two functions; the limits of the
// module's shape (interrupt.DefaultLimits) bound how long one function
// takes.
func (r *Runtime) module(ctx context.Context, t *loaded) (wazero.CompiledModule, error) {
	t.mu.Lock()
	if t.done == nil {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			t.mu.Unlock()
			return nil, errClosed
		}
		r.wg.Add(1)
		r.mu.Unlock()
		t.done = make(chan struct{})
		go func() {
			defer r.wg.Done()
			r.load(t)
		}()
	}
	done := t.done
	t.mu.Unlock()
	select {
	case <-done:
		return t.compiled, t.err
	default:
	}
	select {
	case <-done:
		return t.compiled, t.err
	case <-ctx.Done():
		return nil, &CallError{Tool: t.manifest.Name, Kind: ErrCompiling, cause: context.Cause(ctx),
			Reason: "the tool is being prepared for its first use and the call ran out of time; try again in a moment"}
	}
}

// load compiles and checks t, under r.ctx, then closes t.done.
func (r *Runtime) load(t *loaded) {
	defer close(t.done)
	cm, state, err := r.compile(r.ctx, t)
	if err != nil {
		if r.ctx.Err() != nil {
			err = errClosed // stopped by Close, not the module's fault
		} else {
			r.host.logger.Warn().Str("tool", t.manifest.Name).Str("source", t.source).Err(err).Msg("tool failed to load")
		}
		t.err = err
		t.failed.Store(true)
		return
	}
	t.compiled = cm
	t.state = state
	t.tool.Wasm = nil // compiled; the binary is no longer needed
	r.loadedN.Add(1)
	if r.disk != nil {
		r.disk.markUsed(t.manifest.Name)
	}
}

// engine returns the wazero runtime, building it on first use: the
// runtime, WASI and the host module cost memory and milliseconds that an
// idle gateway, or one whose model never calls a tool, should not pay.
// It is built by a tool's compilation, which holds r.wg (so Close waits
// for a build in progress); instances are made only after it.
func (r *Runtime) engine(ctx context.Context) (*engine, error) {
	r.engMu.Lock()
	defer r.engMu.Unlock()
	if r.eng != nil || r.engErr != nil {
		return r.eng, r.engErr
	}
	ctx = context.WithoutCancel(ctx)
	// Not WithCloseOnContextDone: it leaves the guest at every loop
	// iteration to ask Go whether to stop, which made a Go-built tool ten
	// times slower. Guests are instrumented to stop themselves instead
	// (see interrupt and instance.stopAt).
	rc := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(r.cache).
		WithMemoryLimitPages(r.memPages)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	fail := func(err error) (*engine, error) {
		rt.Close(ctx)
		r.engErr = err
		return nil, err
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return fail(fmt.Errorf("instantiate wasi: %w", err))
	}
	if _, err := hostBuilder(rt, r.host).Instantiate(ctx); err != nil {
		return fail(fmt.Errorf("instantiate host module: %w", err))
	}
	a, err := newABI(ctx, rt)
	if err != nil {
		return fail(err)
	}
	r.eng = &engine{rt: rt, abi: a}
	return r.eng, nil
}

// closeEngine closes the wazero runtime, if it was built.
func (r *Runtime) closeEngine(ctx context.Context) error {
	r.engMu.Lock()
	defer r.engMu.Unlock()
	if r.eng == nil {
		return nil
	}
	err := r.eng.rt.Close(ctx)
	r.eng = nil
	r.engErr = errClosed
	return err
}

// compile compiles t's module and checks it (see prepare). ctx stops it
// between two functions. state is the number of the module's exported
// state globals if its instances can be restored from a snapshot (see
// snapshot), else -1.
func (r *Runtime) compile(ctx context.Context, t *loaded) (cm wazero.CompiledModule, state int, err error) {
	cm, im, err := r.compileModule(ctx, t)
	if err != nil {
		return nil, -1, err
	}
	if !im.Snapshot {
		return cm, -1, nil
	}
	return cm, im.State, nil
}

func (r *Runtime) compileModule(ctx context.Context, t *loaded) (wazero.CompiledModule, *interrupt.Module, error) {
	m := t.manifest
	eng, err := r.engine(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tool %s (%s): %w", m.Name, t.source, err)
	}
	wasm, err := t.tool.Binary()
	if err != nil {
		return nil, nil, fmt.Errorf("tool %s (%s): %w", m.Name, t.source, err)
	}
	var (
		im  *interrupt.Module
		key string // names the compiled files of im in the cache
	)
	if r.disk != nil {
		im, key = r.disk.instrumented(wasm)
	}
	if im == nil {
		if im, err = instrument(wasm); err != nil {
			return nil, nil, fmt.Errorf("tool %s (%s): %w", m.Name, t.source, err)
		}
		r.instrumented.Add(1)
		if r.disk != nil {
			key = r.disk.keepInstrumented(wasm, im)
		}
	}
	if r.disk != nil {
		r.disk.begin(key)
	}
	cm, err := prepare(compileContext(ctx), eng.rt, eng.abi, im, m.Limits.MemoryMiB)
	if r.disk != nil {
		r.compiled.Add(int64(r.disk.end(key)))
	} else if err == nil {
		r.compiled.Add(1)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tool %s (%s): %w", m.Name, t.source, err)
	}
	return cm, im, nil
}

// compileModule is rt.CompileModule with a panic inside wazero turned into
// an error: its v1.12 validator panics on some malformed modules, and a
// hostile module must not take the gateway down.
func compileModule(ctx context.Context, rt wazero.Runtime, wasm []byte) (cm wazero.CompiledModule, err error) {
	defer func() {
		if p := recover(); p != nil {
			cm, err = nil, fmt.Errorf("the WebAssembly runtime failed on the module: %v", p)
		}
	}()
	return rt.CompileModule(ctx, wasm)
}

// Close stops the calls in progress (they fail, as cancelled), the pool
// fillers and the compilations in progress (which stop between two
// functions), waits for them, and closes every instance and the runtime.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	pools := r.pools
	r.pools = nil
	r.mu.Unlock()

	r.cancel()
	r.calls.Wait()
	r.wg.Wait()
	for _, p := range pools {
		p.drain(ctx)
	}
	r.slots.close()
	err := r.closeEngine(ctx)
	if cerr := r.cache.Close(ctx); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sandbox: close: %w", err)
	}
	return nil
}

// Stats is what a Runtime has made, and its memory.
type Stats struct {
	// Instances is the number of instances made so far, for calls and
	// for pools.
	Instances int64
	// Pools is the number of tools with a pool of instances.
	Pools int
	// Pooled is the number of pre-initialised instances ready now.
	Pooled int
	// Memory is the memory of the live instances (linear memory and
	// tables at their reserved size, pooled ones included) and of the
	// linear memories kept for reuse (what they hold resident), MemoryPeak
	// its highest so far, and MemoryLimit the budget (Config.MaxMemoryMiB),
	// in bytes. Memory never exceeds MemoryLimit.
	Memory, MemoryPeak, MemoryLimit uint64
	// MemoryWaiting is the number of calls waiting for memory now;
	// MemoryWaits the number that had to wait so far, and MemoryWaitTime
	// their total time waiting.
	MemoryWaiting  int
	MemoryWaits    int64
	MemoryWaitTime time.Duration
	// Instrumented and Compiled are the modules this Runtime instrumented
	// and compiled: those it did not find in the cache directory.
	Instrumented, Compiled int64
	// Loaded is the number of tools loaded and ready for calls.
	Loaded int64
	// Kept is the number of linear memories of closed instances kept
	// for the next instances, KeptMemory the bytes of Memory they hold,
	// and Reused the number of instances made on one so far (see slots).
	Kept       int
	KeptMemory uint64
	Reused     int64
	// PoolMisses is the number of calls that found their tool's pool
	// empty and made their own instance.
	PoolMisses int64
}

// Stats returns what r has made.
func (r *Runtime) Stats() Stats {
	q := r.quota.stats()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := Stats{Instances: r.instances.Load(), Pools: len(r.pools),
		Memory: q.used, MemoryPeak: q.peak, MemoryLimit: q.limit,
		MemoryWaiting: q.waiting, MemoryWaits: q.waits, MemoryWaitTime: q.waitTotal,
		Instrumented: r.instrumented.Load(), Compiled: r.compiled.Load(), Loaded: r.loadedN.Load()}
	st.Kept, st.KeptMemory, st.Reused = r.slots.count()
	st.PoolMisses = r.poolMisses.Load()
	for _, p := range r.pools {
		st.Pooled += len(p.ch)
	}
	return st
}

// Tools lists the enabled tools, less those that failed to load. Every
// principal sees the same tools. It never compiles.
func (r *Runtime) Tools(ctx context.Context, p agent.Principal) ([]llm.Tool, error) {
	out := make([]llm.Tool, 0, len(r.names))
	for _, n := range r.names {
		if r.tools[n].failed.Load() {
			continue
		}
		m := r.tools[n].manifest
		out = append(out, llm.Tool{Name: m.Name, Description: m.Description, Parameters: m.Parameters})
	}
	return out, nil
}

// Run runs one call for the agent. A tool's own error and every limit or
// guest failure come back as IsError with a short reason for the model; the
// error is non-nil only when the call could not be attempted (the runtime
// is closed, or the approver failed).
func (r *Runtime) Run(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	res, err := r.Call(ctx, call)
	var ce *CallError
	if errors.As(err, &ce) {
		return agent.ToolResult{Content: ce.Reason, IsError: true}, nil
	}
	return res, err
}

// Call is Run with the failure as a typed error: a *CallError whose Kind is
// one of the Err* sentinels. A tool that answers {"error": "…"} returns a
// ToolResult with IsError and a nil error.
func (r *Runtime) Call(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return agent.ToolResult{}, errClosed
	}
	r.calls.Add(1)
	r.mu.Unlock()
	defer r.calls.Done()
	// Close stops the call (an approval or a wait for memory ends, a guest
	// stops within a thousand iterations) and waits for it before it
	// closes the instances.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	defer context.AfterFunc(r.ctx, func() { stop(errClosed) })()
	t, ok := r.tools[call.Name]
	if !ok {
		return agent.ToolResult{}, &CallError{Tool: call.Name, Kind: ErrUnknownTool, Reason: "unknown tool"}
	}
	if _, err := r.module(ctx, t); err != nil {
		if errors.Is(err, errClosed) || errors.Is(err, ErrCompiling) {
			return agent.ToolResult{}, err
		}
		return agent.ToolResult{}, &CallError{Tool: t.manifest.Name, Kind: ErrLoad, cause: err,
			Reason: "the tool could not be loaded; the operator can see why in the log or with talon tool check"}
	}
	name := t.manifest.Name
	p := call.Key.Principal
	if !r.limiter.allow(name, p, t.manifest.Limits.PerMinute) {
		return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrRateLimited,
			Reason: fmt.Sprintf("rate limited: at most %d calls of this tool per minute", t.manifest.Limits.PerMinute)}
	}
	args := call.Args
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	input, err := envelope(name, args)
	if err != nil {
		return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrInput, Reason: "the arguments are not valid JSON"}
	}
	if len(input) > maxHTTPRequestJSON {
		return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrInput, Reason: "the arguments are too large"}
	}
	if t.manifest.Approval == ApproveAlways {
		if r.host.approver == nil {
			return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrNotApproved, Reason: "this tool needs approval and none can be asked"}
		}
		ok, err := r.host.approver.Approve(ctx, ApprovalRequest{
			Tool: name, Principal: p, Key: call.Key, Turn: call.Turn, CallID: call.ID,
			Description: "run tool " + name, Args: args,
		})
		if err != nil {
			return agent.ToolResult{}, fmt.Errorf("sandbox: approve %s: %w", name, err)
		}
		if !ok {
			return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrNotApproved, Reason: "the user did not approve this call"}
		}
	}

	cctx, b := newBudget(ctx, t.manifest.Limits.Deadline)
	defer b.end()
	st := &callState{tool: t, principal: p, key: call.Key, turn: call.Turn, callID: call.ID, budget: b, taint: call.Taint}
	cctx = context.WithValue(cctx, callKey{}, st)

	inst, done, err := r.take(cctx, t, p, ctx, b)
	if err != nil {
		return agent.ToolResult{}, r.classify(cctx, t, st, nil, err)
	}
	defer done()
	defer inst.close(context.WithoutCancel(ctx))
	res, err := r.invoke(cctx, t, st, inst, input)
	switch {
	case st.refused:
		return agent.ToolResult{Content: refusedData, IsError: true}, nil
	case err == nil && st.untrusted != "":
		res.Taint = st.untrusted
	}
	return res, err
}

func (r *Runtime) invoke(ctx context.Context, t *loaded, st *callState, inst *instance, input []byte) (agent.ToolResult, error) {
	name := t.manifest.Name
	defer inst.stopAt(ctx)()
	inst.mem.ctx = ctx // memory.grow waits for the quota within the call's deadline
	res, err := inst.alloc.Call(ctx, uint64(len(input)))
	if err != nil {
		return agent.ToolResult{}, r.classify(ctx, t, st, inst, err)
	}
	ptr := api.DecodeU32(res[0])
	if ptr == 0 || !inst.mod.Memory().Write(ptr, input) {
		return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrGuestFault, Reason: "guest fault: talon_alloc returned no usable memory"}
	}
	res, err = inst.call.Call(ctx, uint64(ptr), uint64(len(input)))
	if err != nil || st.fault != "" || ctx.Err() != nil {
		// A guest may return after its deadline without meeting a check
		// (a cut-short sleep, say): its answer is refused all the same.
		return agent.ToolResult{}, r.classify(ctx, t, st, inst, err)
	}
	outPtr, outLen := uint32(res[0]>>32), uint32(res[0])
	if uint64(outLen) > uint64(t.manifest.Limits.MaxOutputBytes)+fileAllowance(t.manifest.Limits.MaxFileBytes) {
		return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrOutputTooLarge,
			Reason: fmt.Sprintf("the tool's output is larger than its limit of %d bytes", t.manifest.Limits.MaxOutputBytes)}
	}
	out, ok := inst.mod.Memory().Read(outPtr, outLen)
	if !ok {
		return agent.ToolResult{}, &CallError{Tool: name, Kind: ErrBadOutput, Reason: "the tool's output points outside its memory"}
	}
	return decodeOutput(name, out, t.manifest.Limits)
}

// envelope is the input of talon_call: {"tool": name, "args": args}, with
// args compacted but, unlike json.Marshal, without escaping <, > and & (a
// page of HTML would grow by a third, and the guest would decode it slowly).
func envelope(name string, args json.RawMessage) ([]byte, error) {
	quoted, err := json.Marshal(name)
	if err != nil {
		return nil, err
	}
	b := bytes.NewBuffer(make([]byte, 0, len(`{"tool":,"args":}`)+len(quoted)+len(args)))
	b.WriteString(`{"tool":`)
	b.Write(quoted)
	b.WriteString(`,"args":`)
	if err := json.Compact(b, args); err != nil {
		return nil, err
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// classify turns the error of a guest call into a *CallError.
func (r *Runtime) classify(ctx context.Context, t *loaded, st *callState, inst *instance, err error) error {
	name := t.manifest.Name
	if st.fault != "" {
		return &CallError{Tool: name, Kind: ErrGuestFault, Reason: "guest fault: " + st.fault}
	}
	budget := r.quota.limit / mib
	var qw *quotaWaitError
	switch {
	case errors.As(err, &qw) && errors.Is(qw.cause, context.DeadlineExceeded):
		return &CallError{Tool: name, Kind: ErrMemoryBusy, cause: err,
			Reason: fmt.Sprintf("the sandbox's memory (sandbox.max_memory_mib: %d MiB) stayed in use by other calls until this turn ran out of time; "+
				"try again in a moment; the operator can raise sandbox.max_memory_mib or lower agent.tool_parallelism", budget)}
	case errors.Is(err, errQuotaTooSmall):
		return &CallError{Tool: name, Kind: ErrMemoryBusy, cause: err,
			Reason: fmt.Sprintf("the tool needs more memory than the sandbox's whole budget (sandbox.max_memory_mib: %d MiB); the operator can raise it", budget)}
	case errors.Is(err, errQuotaFull) || (inst != nil && inst.mem.full.Load()):
		return &CallError{Tool: name, Kind: ErrMemoryBusy, cause: err,
			Reason: fmt.Sprintf("the sandbox's memory (sandbox.max_memory_mib: %d MiB) was in use by other calls when the tool needed more; "+
				"try again in a moment; the operator can raise sandbox.max_memory_mib or lower agent.tool_parallelism", budget)}
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return &CallError{Tool: name, Kind: ErrDeadline,
				Reason: fmt.Sprintf("the tool ran past its deadline (%s) and was stopped", t.manifest.Limits.Deadline)}
		case sys.ExitCodeContextCanceled:
			return &CallError{Tool: name, Kind: context.Canceled, Reason: "the call was cancelled"}
		}
		return &CallError{Tool: name, Kind: ErrTrap, Reason: fmt.Sprintf("the tool exited with code %d", exit.ExitCode())}
	}
	// A guest stopped at its deadline or on cancellation traps (see
	// instance.stopAt); host functions return the context's error.
	if errors.Is(err, context.DeadlineExceeded) || (ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded)) {
		return &CallError{Tool: name, Kind: ErrDeadline,
			Reason: fmt.Sprintf("the tool ran past its deadline (%s) and was stopped", t.manifest.Limits.Deadline)}
	}
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return &CallError{Tool: name, Kind: context.Canceled, Reason: "the call was cancelled"}
	}
	if inst != nil && (inst.mem.refused.Load() || inst.tableRefused.Get() != 0) {
		return &CallError{Tool: name, Kind: ErrMemory,
			Reason: fmt.Sprintf("the tool needed more than its memory limit of %d MiB", t.manifest.Limits.MemoryMiB)}
	}
	if inst == nil {
		return &CallError{Tool: name, Kind: ErrTrap, Reason: "the tool failed to start"}
	}
	return &CallError{Tool: name, Kind: ErrTrap, Reason: "the tool crashed"}
}

// instance is one instantiated, initialised module, used for one call.
type instance struct {
	mod   api.Module
	mem   *limitedMemory
	alloc api.Function
	call  api.Function
	stop  api.MutableGlobal // the interrupt global
	// tableRefused is 1 once a table.grow was refused for the memory
	// limit.
	tableRefused api.Global

	stopOnce sync.Once
	stopped  chan struct{} // closed when the guest is told to stop
}

// stopAt makes the guest stop once ctx is done: it sets the interrupt
// global (see package interrupt), so the guest traps within a thousand
// function calls or loop iterations, and ends a WASI sleep in progress
// (see sleep). Host functions see ctx's error themselves. Call the returned
// function when the guest has returned.
func (inst *instance) stopAt(ctx context.Context) (release func() bool) {
	return context.AfterFunc(ctx, func() {
		inst.stop.Set(1)
		inst.stopOnce.Do(func() { close(inst.stopped) })
	})
}

// close closes the instance once its call has returned, and gives its
// linear memory to be recycled (see slots).
func (inst *instance) close(ctx context.Context) {
	inst.mem.recycle = true
	inst.mod.Close(ctx)
}

// sleep is the guest's WASI sleep (poll_oneoff on a clock): real time,
// cut short when the guest is told to stop.
func (inst *instance) sleep(ns int64) {
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-inst.stopped:
	}
}

// instantiate makes a fresh instance of t: no filesystem, environment,
// arguments or sockets; real clocks and crypto random; _initialize run.
// Its memory is charged to the quota by charge before it is made (see
// limitedMemory), and given back when the instance is closed.
func (r *Runtime) instantiate(ctx context.Context, t *loaded, charge func(n uint64) error) (*instance, error) {
	cm, err := r.module(ctx, t)
	if err != nil {
		return nil, err
	}
	eng, err := r.engine(ctx)
	if err != nil {
		return nil, err
	}
	// What the tool's instances held after _initialize, and at least the
	// module's initial memory: the first call of Reallocate (the initial
	// memory) must succeed.
	reserve := t.initMem.Load()
	if m, ok := cm.ExportedMemories()[memExport]; ok {
		reserve = max(reserve, uint64(m.Min())*65536)
	}
	reserve = min(reserve, t.memLimit)
	// A kept memory comes with its charge: what it holds resident.
	slot := r.slots.take(t.memLimit)
	var have, floor uint64
	if slot != nil {
		have, floor = slot.resident, slot.resident
	}
	charged := max(reserve, floor) + t.initTables.Load()
	if err := charge(charged - have); err != nil {
		if slot != nil {
			unmapMemory(slot.region)
			r.quota.release(have)
		}
		return nil, err
	}
	mem := &limitedMemory{limit: t.memLimit, reserve: reserve, quota: r.quota, ctx: ctx, slots: r.slots, slot: slot}
	mem.charged.Store(charged)
	inst := &instance{mem: mem, stopped: make(chan struct{})}
	// The instance that takes the tool's snapshot records the random
	// bytes its _initialize reads (see takeSnapshot).
	var random io.Reader = rand.Reader
	var rec *randRecorder
	snap := t.snap.Load()
	if snap == nil && t.state >= 0 && !r.noSnapshots && t.snapping.CompareAndSwap(false, true) {
		rec = &randRecorder{src: rand.Reader, on: true}
		random = rec
	}
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(). // _initialize is called below, under stopAt

		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(inst.sleep).
		WithRandSource(random)
	r.instances.Add(1)
	mod, err := eng.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, mem), cm, cfg)
	if err != nil {
		mem.Free() // wazero does not close a module it failed to make
		return nil, fmt.Errorf("instantiate %s: %w", t.manifest.Name, err)
	}
	stop, ok1 := mod.ExportedGlobal(interrupt.Export).(api.MutableGlobal)
	limit, ok2 := mod.ExportedGlobal(interrupt.MemoryLimitExport).(api.MutableGlobal)
	refs, refused := mod.ExportedGlobal(interrupt.ReferencesExport), mod.ExportedGlobal(interrupt.RefusedExport)
	if !ok1 || !ok2 || refs == nil || refused == nil {
		mod.Close(ctx)
		mem.release()
		return nil, fmt.Errorf("instantiate %s: the module was not instrumented", t.manifest.Name)
	}
	// Table references and linear memory share the limit: table.grow is
	// guarded in the guest against this global, and memory.grow in the
	// allocator against the references.
	limit.Set(t.memLimit)
	mem.refs = refs
	inst.mod, inst.stop, inst.tableRefused = mod, stop, refused
	inst.alloc, inst.call = mod.ExportedFunction(allocExport), mod.ExportedFunction(callExport)
	// The tables exist now: charge them (the first instance of a tool
	// did not know their size).
	if !mem.charge(mem.reserved()) {
		mod.Close(ctx)
		mem.release()
		return nil, errQuotaFull
	}
	// A snapshot of the tool's instances after _initialize stands for it
	// (see snapshot); the first instance that can takes it.
	var (
		gs    []api.MutableGlobal
		fresh []byte
	)
	if snap != nil || rec != nil {
		gs = stateGlobals(mod, t.state)
	}
	unsnappable := false // the module cannot be snapshotted
	if rec != nil {
		// snapping stays set once the snapshot is taken or refused; an
		// _initialize that failed leaves it to the next instance.
		defer func() {
			if t.snap.Load() == nil && !unsnappable {
				t.snapping.Store(false)
			}
		}()
	}
	init := mod.ExportedFunction(initExport)
	if snap != nil && gs != nil {
		if err := snap.restore(inst, gs, rand.Reader); err != nil {
			mod.Close(ctx)
			mem.release()
			if mem.full.Load() {
				return nil, errQuotaFull
			}
			return nil, fmt.Errorf("instantiate %s: %w", t.manifest.Name, err)
		}
		init = nil
	} else if rec != nil {
		if gs != nil {
			fresh = bytes.Clone(mem.buf)
		} else {
			unsnappable = true
			rec.stop()
		}
	}
	if init != nil {
		release := inst.stopAt(ctx)
		_, err := init.Call(ctx)
		if !release() && err == nil {
			// The stop came as _initialize returned: the instance's stop
			// is set for good, so it cannot serve a call.
			err = context.Cause(ctx)
		}
		if err != nil {
			mod.Close(ctx)
			mem.release()
			if mem.full.Load() {
				return nil, errQuotaFull
			}
			return nil, fmt.Errorf("instantiate %s: %s: %w", t.manifest.Name, initExport, err)
		}
	}
	if fresh != nil {
		if s := takeSnapshot(fresh, mem.buf, gs, rec.stop()); s != nil {
			t.snap.Store(s)
		} else {
			unsnappable = true
		}
	}
	learn(&t.initMem, uint64(len(mem.buf)))
	learn(&t.initTables, mem.tableBytes())
	return inst, nil
}

// learn raises v to at least n.
func learn(v *atomic.Uint64, n uint64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

// ToolMemory implements agent.ToolMemoryReporter: the memory budget's use
// and waits, for /status.
func (r *Runtime) ToolMemory() agent.ToolMemory {
	q := r.quota.stats()
	return agent.ToolMemory{Used: q.used, Limit: q.limit, Waiting: q.waiting, Waits: q.waits, WaitTime: q.waitTotal}
}

var _ agent.ToolMemoryReporter = (*Runtime)(nil)
