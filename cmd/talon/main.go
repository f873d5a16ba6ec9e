// Command talon is the Talon gateway: it wires configuration, storage, the
// model provider, the sandbox and the channels, and offers the operator's
// commands (run, chat, doctor, version).
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox/egress"
)

func main() {
	os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// env is the process environment a command runs with; tests fake it.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// tools, when set, replaces the tool runner (tests use a scripted one).
	tools agent.ToolRunner
	// resolver and rootCAs, when set, replace the egress broker's DNS
	// resolver and TLS roots (tests serve tools' hosts on loopback).
	resolver egress.Resolver
	rootCAs  *x509.CertPool
	// now, when set, is the routines' clock, and routineTick the longest
	// wait of their scheduler (tests move time on).
	now         func() time.Time
	routineTick time.Duration
	// stopNow is closed by a second SIGINT or SIGTERM: a stopping gateway
	// stops at once instead of letting running turns finish. nil means
	// never.
	stopNow <-chan struct{}
	// warmCompileDelay, when set, replaces warmCompileDelay (tests).
	warmCompileDelay time.Duration
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

const usage = `talon: a self-hosted AI agent gateway for Slack and Discord

Usage:
  talon run     [--config FILE]   run the gateway with every configured channel
  talon chat    [--config FILE]   talk to the agent in this terminal
  talon doctor  [--config FILE]   check the configuration, data directory, model and channels
  talon tool    list|run|check    list, run and check sandboxed tools
  talon vault   set|list|rm|audit|rotate-key   manage users' credentials
  talon mcp     list|test|approve   list, test and approve remote MCP servers' tools
  talon user    deny|allow|list   turn a user away (no model call) or serve them again
  talon memory  list|rm|export    list and delete what the model remembers; export a user's
  talon routine list|add|rm|pause|resume|run-now   manage scheduled routines
  talon discord invite-url        print the link that adds the bot to a server
  talon migrate-store --from sqlite:PATH --to postgres[:URL]
                                  copy a stopped gateway's SQLite database into PostgreSQL
  talon bench   --users N --messages M [--store sqlite|postgres:URL] [--concurrency C]
                [--tool-share F] [--llm-latency D] [--think D]
                [--llm-url URL [--llm-model M]] [--console-poll D] [--json]
                [--data-dir DIR] [--cpuprofile FILE]
                [--replicas N --nats URL [--replicas-in-process]]
                                  (with --store postgres:URL; replicas as processes)
                                  measure throughput and the gateway's own overhead;
                                  --think D: users' mean pause between messages;
                                  --tool-share F: share of turns asking for a tool call
                                  (with --llm-url, forced by tool_choice; a warning says
                                  when the endpoint ignored or refused it);
                                  --console-poll D: load the console's pages every D meanwhile
  talon version                   print the version

The configuration file is --config, or $TALON_CONFIG; without one, built-in
defaults apply (see config.example.yaml).
`

// Main runs the talon command with args and returns the exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	return env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}.main(ctx, args)
}

func (e env) main(ctx context.Context, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stopNow, stop := notifySignals(ctx)
	defer stop()
	e.stopNow = stopNow

	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		err = cmdRun(ctx, e, rest, false)
	case "chat":
		err = cmdRun(ctx, e, rest, true)
	case "doctor":
		err = cmdDoctor(ctx, e, rest)
	case "tool":
		err = cmdTool(ctx, e, rest)
	case "vault":
		err = cmdVault(ctx, e, rest)
	case "discord":
		err = cmdDiscord(ctx, e, rest)
	case "mcp":
		err = cmdMCP(ctx, e, rest)
	case "user":
		err = cmdUser(ctx, e, rest)
	case "memory":
		err = cmdMemory(ctx, e, rest)
	case "migrate-store":
		err = cmdMigrateStore(ctx, e, rest)
	case "routine":
		err = cmdRoutine(ctx, e, rest)
	case "bench":
		err = cmdBench(ctx, e, rest)
	case benchReplicaCmd: // internal: a replica process of talon bench --replicas
		err = cmdBenchReplica(ctx, e, rest)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = &usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "talon: %s\n\n%s", ue.msg, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "talon: %v\n", err)
	return 1
}

// notifySignals turns the first SIGINT or SIGTERM into the end of ctx (a
// graceful stop) and the second into the closing of now (stop at once).
// stop releases the signals and ends the goroutine that watches them.
func notifySignals(parent context.Context) (ctx context.Context, now <-chan struct{}, stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(parent)
	second := make(chan struct{})
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-sigs:
			cancel()
		case <-quit:
			return
		}
		select {
		case <-sigs:
			close(second)
		case <-quit:
		}
	}()
	return ctx, second, func() {
		signal.Stop(sigs)
		close(quit)
		<-done
		cancel()
	}
}

// parseFlags parses the common --config flag and any extra flags.
func parseFlags(name string, e env, args []string, extra func(*flag.FlagSet)) (configPath string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&configPath, "config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return "", &usageError{fmt.Sprintf("%s: unexpected argument %q", name, fs.Arg(0))}
	}
	return configPath, nil
}
