package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/sandbox/tools"
)

// warmDelay is how long after ready the enabled tools start loading in
// the background: their burst of work (reading, verifying, decoding the
// modules) would otherwise slow the start's last steps and the first
// health checks; a first tool call, which follows a model's answer, rarely
// comes sooner.
const warmDelay = 200 * time.Millisecond

// warmCompileDelay is how long after ready the enabled tools that no
// earlier process loaded (the first start, a tool newly enabled) are
// compiled in the background: seconds of both cores per tool, which the
// first turns of a first start should not share. A call before then
// compiles its own tool, as without warming.
const warmCompileDelay = 10 * time.Second

// openTools builds the sandbox for ts (as loadTools found them), the
// egress broker and the MCP client, and sets a.rt.Tools. Approvals go to the runtime, which
// persists them and asks the session's channel. Nothing is compiled before
// the runtime is ready, so start-up stays fast; then the enabled tools are
// loaded in the background (from the verified compilation cache after a
// restart), so that their first calls do not pay for it. Pools fill on
// first use.
func (a *app) openTools(ctx context.Context, ts []sandbox.Tool) error {
	a.sandboxTools = ts
	sb, err := a.startSandbox(ctx, runtimeApprover{rt: a.rt}, ts)
	if err != nil {
		return err
	}
	if a.cfg.Sandbox.Warm {
		compileDelay := warmCompileDelay
		if a.env.warmCompileDelay != 0 {
			compileDelay = a.env.warmCompileDelay
		}
		sb.WarmAfter(a.rt.Ready(), warmDelay, compileDelay)
	}
	stat := func(f func(sandbox.Stats) int64) func() float64 {
		return func() float64 { return float64(f(sb.Stats())) }
	}
	a.metrics.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "talon_sandbox_tools_loaded",
			Help: "Tools compiled and ready for calls (loaded in the background after start-up, or by a first call)."},
			stat(func(s sandbox.Stats) int64 { return s.Loaded })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "talon_sandbox_modules_instrumented_total",
			Help: "Tool modules instrumented since start, i.e. not found in the compilation cache."},
			stat(func(s sandbox.Stats) int64 { return s.Instrumented })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "talon_sandbox_modules_compiled_total",
			Help: "Tool modules compiled since start, i.e. not found in the compilation cache."},
			stat(func(s sandbox.Stats) int64 { return s.Compiled })),
	)
	// The MCP servers' tools go through the same broker: the same SSRF
	// rules, leak checks and credential injection.
	if c := a.newMCP(a.broker, a.rt); c != nil {
		a.rt.Tools = toolSet{sandbox: sb, mcp: c}
	}
	return nil
}

// startSandbox builds the egress broker and the sandbox for ts with
// approver, sets a.rt.Tools and registers the sandbox's Close.
func (a *app) startSandbox(ctx context.Context, approver sandbox.Approver, ts []sandbox.Tool) (*sandbox.Runtime, error) {
	broker, err := a.newBroker()
	if err != nil {
		return nil, err
	}
	sb, err := sandbox.New(ctx, sandbox.Config{
		Taint:        broker.Taint,
		Tools:        ts,
		CacheDir:     a.cfg.CacheDir(),
		PoolSize:     a.cfg.Sandbox.PoolSize,
		MaxMemoryMiB: a.cfg.Sandbox.MaxMemoryMiB,
		PoolIdle:     a.cfg.Sandbox.PoolIdle.Std(),
		Egress:       broker,
		Secrets:      a.toolSecrets(),
		Approver:     approver,
		Logger:       a.log.With().Str("component", "sandbox").Logger(),
		Redactor:     a.redactor, // the guests' log messages are scanned too
	})
	if err != nil {
		return nil, err
	}
	a.rt.Tools = sb
	a.broker = broker
	a.metrics.sandbox(sb)
	a.closers = append(a.closers, func() {
		if err := sb.Close(context.Background()); err != nil {
			a.log.Error().Err(err).Msg("close sandbox")
		}
		broker.CloseIdleConnections()
	})
	return sb, nil
}

// loadTools finds the built-in tools and the operator's tools directory; a
// missing directory means built-ins only. It parses the manifests and
// reads no module. A built-in module is decompressed on its first use and
// kept decompressed under cacheDir for the next processes.
func loadTools(dir, cacheDir string) ([]sandbox.Tool, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		dir = ""
	}
	return sandbox.LoadTools(tools.CachedFS(filepath.Join(cacheDir, "builtin-tools")), dir)
}

// newBroker builds the egress broker from the configuration, the vault
// hooks and the env's test seams.
func (a *app) newBroker() (*egress.Broker, error) {
	trusted, err := agent.ParseTrustedHosts(a.cfg.Egress.TrustedHosts)
	if err != nil {
		return nil, fmt.Errorf("egress.trusted_hosts: %w", err)
	}
	taint := &egress.Taint{Trusted: trusted, MaxURLData: a.cfg.Egress.TaintedURLBytes}
	if taint.MaxURLData == 0 {
		taint.MaxURLData = -1 // nothing unasked
	}
	b := &egress.Broker{
		Credentials: a.egressCredentials(),
		Checker:     a.egressChecker(),
		Taint:       taint,
	}
	var errs []error
	for _, s := range a.cfg.Sandbox.AllowPrivate {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("sandbox.allow_private: %q: %w", s, err))
			continue
		}
		b.AllowPrivate = append(b.AllowPrivate, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if a.env.resolver != nil {
		b.Resolver = a.env.resolver
	}
	if a.env.rootCAs != nil {
		b.TLSConfig = &tls.Config{RootCAs: a.env.rootCAs, MinVersion: tls.VersionTLS12}
	}
	return b, nil
}

// runtimeApprover hands the sandbox's approval requests to the agent
// runtime: it persists the approval, asks the session's channel and waits
// for the owner's decision or the expiry.
type runtimeApprover struct{ rt *agent.Runtime }

func (r runtimeApprover) Approve(ctx context.Context, req sandbox.ApprovalRequest) (bool, error) {
	return r.rt.RequestApproval(ctx, agent.ApprovalRequest{
		Key: req.Key, Turn: req.Turn, CallID: req.CallID, Tool: req.Tool, Description: req.Description,
		Method: req.Method, Host: req.Host, Path: req.Path, Args: req.Args,
		Reason: req.Reason, URLBytes: req.URLBytes, BodyBytes: req.BodyBytes,
	})
}

// cliApprover answers approvals for `talon tool run`, where there is no
// channel to ask: yes with --approve, otherwise no, remembering what was
// refused so the command can say so.
type cliApprover struct {
	approve bool

	mu      sync.Mutex
	refused []string // guarded by mu; descriptions of refused requests
}

func (c *cliApprover) Approve(ctx context.Context, req sandbox.ApprovalRequest) (bool, error) {
	if c.approve {
		return true, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused = append(c.refused, req.Description)
	return false, nil
}

func (c *cliApprover) refusals() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.refused...)
}

// skipTools stands in for the tool runner while `tool run` builds its own
// sandbox with its own approver.
type skipTools struct{ agent.ToolRunner }

const toolUsage = `Usage:
  talon tool list  [--config FILE]
      list the tools: origin (built-in, tools dir, overridden), enabled,
      and what each is granted (hosts, credentials, approval)
  talon tool run   NAME [--args JSON] [--user PRINCIPAL] [--approve] [--config FILE]
      run one call in the sandbox exactly as the agent would, as PRINCIPAL
      (platform:workspace:user, default terminal::<terminal.user>), and print
      the result JSON. Nobody can be asked to approve from here: a call that
      needs approval is refused unless --approve approves it (and every
      request in it) on the principal's behalf.
  talon tool check FILE.wasm [MANIFEST.yaml]
      load a module as the gateway would (limits, compilation, tool ABI,
      memory at start against the manifest's limits.memory_mib), and check
      that a manifest is valid
`

// cmdTool runs the tool subcommands.
func cmdTool(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"tool: list, run or check?\n" + toolUsage}
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "list":
		return cmdToolList(e, rest)
	case "run":
		return cmdToolRun(ctx, e, rest)
	case "check":
		return cmdToolCheck(ctx, e, rest)
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, toolUsage)
		return nil
	default:
		return &usageError{fmt.Sprintf("tool: unknown subcommand %q\n%s", sub, toolUsage)}
	}
}

// cmdToolList prints every tool with its origin and grants.
func cmdToolList(e env, args []string) error {
	flagPath, err := parseFlags("tool list", e, args, nil)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(e, flagPath)
	if err != nil {
		return err
	}
	dir := cfg.ToolsDir()
	ts, err := loadTools(dir, cfg.CacheDir())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tORIGIN\tENABLED\tAPPROVAL\tHOSTS\tCREDENTIALS")
	for _, t := range ts {
		m := t.Manifest
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, origin(t, dir), yesNo(m.Enabled), m.Approval,
			orNone(hostsOf(m.HTTP)), orNone(strings.Join(m.Credentials, ",")))
	}
	return tw.Flush()
}

// origin says where a tool's module and manifest come from.
func origin(t sandbox.Tool, dir string) string {
	name := t.Manifest.Name
	_, notBuiltin := fs.Stat(tools.FS, name+".wasm")
	switch {
	case t.Source == "builtin":
		if _, err := os.Stat(filepath.Join(dir, name+".yaml")); err == nil {
			return "built-in (manifest overridden)"
		}
		return "built-in"
	case notBuiltin == nil:
		return "tools dir (replaces built-in)"
	default:
		return "tools dir"
	}
}

// hostsOf writes an allowlist as scheme://host[methods] entries.
func hostsOf(rules []egress.Rule) string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		scheme := r.Scheme
		if scheme == "" {
			scheme = "https"
		}
		methods := r.Methods
		if len(methods) == 0 {
			methods = []string{"GET", "HEAD"}
		}
		s := scheme + "://" + r.Host
		if len(r.PathPrefixes) > 0 {
			s += "{" + strings.Join(r.PathPrefixes, ",") + "}"
		}
		out = append(out, s+"["+strings.Join(methods, ",")+"]")
	}
	return strings.Join(out, " ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cmdToolRun runs one call of a tool in the sandbox, as the agent would.
func cmdToolRun(ctx context.Context, e env, args []string) error {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("tool run", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	flagPath := fs.String("config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	argsJSON := fs.String("args", "{}", "the call's arguments, a JSON object")
	user := fs.String("user", "", "the principal to run as, platform:workspace:user (default terminal::<terminal.user>)")
	approve := fs.Bool("approve", false, "approve, on the principal's behalf, a call or request that needs approval")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return &usageError{err.Error()}
		}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("tool run: unexpected argument %q", fs.Arg(0))}
	}
	if name == "" {
		return &usageError{"tool run: which tool? talon tool run NAME --args JSON"}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(*argsJSON), &obj); err != nil {
		return &usageError{"tool run: --args must be a JSON object"}
	}
	cfg, err := loadConfig(e, *flagPath)
	if err != nil {
		return err
	}
	principal := "terminal::" + cfg.Terminal.User
	if *user != "" {
		principal = *user
	}
	p, err := agent.ParsePrincipal(principal)
	if err != nil {
		return &usageError{"tool run: --user: " + err.Error()}
	}

	log := newLogger(cfg, e.stderr, zerolog.WarnLevel)
	ae := e
	ae.tools = skipTools{}
	a, err := openApp(ctx, ae, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	approver := &cliApprover{approve: *approve}
	ts, err := loadTools(cfg.ToolsDir(), cfg.CacheDir())
	if err != nil {
		return err
	}
	sb, err := a.startSandbox(ctx, approver, ts)
	if err != nil {
		return err
	}
	if err := sb.Load(ctx, name); err != nil {
		var ce *sandbox.CallError
		if errors.As(err, &ce) && errors.Is(err, sandbox.ErrUnknownTool) {
			return fmt.Errorf("tool run: no enabled tool %q (see talon tool list)", name)
		}
		return fmt.Errorf("tool run: %w", err)
	}
	res, err := sb.Call(ctx, agent.ToolCall{
		ID: "cli-" + randomID(), Name: name, Args: json.RawMessage(*argsJSON), Key: agent.SessionKey{Principal: p},
	})
	if refused := approver.refusals(); len(refused) > 0 {
		fmt.Fprintf(e.stderr, "talon: tool %s needs approval (%s) and nobody can be asked from the command line; "+
			"run again with --approve to approve it as %s\n", name, strings.Join(refused, "; "), p)
	}
	var ce *sandbox.CallError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("tool %s: %s", name, ce.Reason)
	case err != nil:
		return fmt.Errorf("tool %s: %w", name, err)
	case res.IsError:
		return fmt.Errorf("tool %s: %s", name, res.Content)
	}
	fmt.Fprintln(e.stdout, res.Content)
	return nil
}

// randomID is a short random hex id.
func randomID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// cmdToolCheck checks a module against the tool ABI and, when given, its
// manifest.
func cmdToolCheck(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || len(args) > 2 || strings.HasPrefix(args[0], "-") {
		return &usageError{"tool check: talon tool check FILE.wasm [MANIFEST.yaml]"}
	}
	var problems []string
	add := func(prefix string, err error) {
		for _, line := range strings.Split(err.Error(), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				problems = append(problems, prefix+line)
			}
		}
	}
	wasm, err := os.ReadFile(args[0])
	if err != nil {
		return fmt.Errorf("tool check: %w", err)
	}
	var m *sandbox.Manifest // the memory limit to check against; nil: the default
	if len(args) == 2 {
		y, err := os.ReadFile(args[1])
		if err != nil {
			return fmt.Errorf("tool check: %w", err)
		}
		if m, err = sandbox.ParseManifest(args[1], y); err != nil {
			add("", err) // each problem names the file and key
		}
	}
	// The checks of a tool's first use, compilation included.
	if err := sandbox.Check(ctx, wasm, m); err != nil {
		add(args[0]+": ", err)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		for _, p := range problems {
			fmt.Fprintln(e.stdout, p)
		}
		return fmt.Errorf("tool check: %d problem(s)", len(problems))
	}
	fmt.Fprintln(e.stdout, "ok")
	return nil
}

// toolsDigest is a digest of the tools, so that replicas can tell whether
// they have the same (cluster.Config.Tools): SHA-256 over each tool, in
// name order, of its name, its manifest as parsed and its module's
// SHA-256. A built-in module's is the one its build recorded (its FS's
// Sum: nothing is decompressed); an operator's module is read and hashed.
func toolsDigest(ts []sandbox.Tool) (string, error) {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b sandbox.Tool) int { return strings.Compare(a.Manifest.Name, b.Manifest.Name) })
	h := sha256.New()
	for _, t := range ts {
		m, err := json.Marshal(t.Manifest)
		if err != nil {
			return "", fmt.Errorf("tool %s: digest of its manifest: %w", t.Manifest.Name, err)
		}
		mod, err := moduleSum(t)
		if err != nil {
			return "", fmt.Errorf("tool %s: digest of its module: %w", t.Manifest.Name, err)
		}
		fmt.Fprintf(h, "%d:%s%d:%s%s\n", len(t.Manifest.Name), t.Manifest.Name, len(m), m, mod)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// moduleSum is the SHA-256, in hex, of t's module.
func moduleSum(t sandbox.Tool) (string, error) {
	if s, ok := t.FS.(interface{ Sum(string) (string, error) }); ok && t.Wasm == nil {
		return s.Sum(t.Path)
	}
	b, err := t.Binary()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
