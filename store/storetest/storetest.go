package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// Store is what the suite tests: every interface a Talon store implements
// for the runtime (agent.Store and the optional ThreadCursors,
// TurnFileStore and UsageMeter), and what the channel adapters keep (the
// threads they follow, the channels they read back).
type Store interface {
	agent.Store
	agent.ThreadCursors
	agent.TurnFileStore
	agent.UsageMeter
	agent.UsageLog
	agent.Fencer
	// PendingInbound loads one message not yet answered (cluster.Store).
	PendingInbound(ctx context.Context, id agent.InboundID) (q agent.QueuedInbound, ok bool, err error)
	// PendingUpTo loads an announced message with the earlier pending
	// ones of its session (cluster.SessionLoader).
	PendingUpTo(ctx context.Context, id agent.InboundID) ([]agent.QueuedInbound, error)

	FollowThread(ctx context.Context, key agent.SessionKey, at time.Time) error
	FollowingThread(ctx context.Context, key agent.SessionKey, since time.Time) (bool, error)
	ForgetThreads(ctx context.Context, platform string, before time.Time, keep int) (int, error)

	SaveChannelCursor(ctx context.Context, platform, workspace, channel, lastID string, at time.Time) error
	ChannelCursors(ctx context.Context, platform string, limit int, fn func(workspace, channel, lastID string, at time.Time)) error
	ForgetChannelCursors(ctx context.Context, platform string, before time.Time, keep int) (int, error)

	agent.AccessList
	SetDenied(ctx context.Context, p agent.Principal, denied bool, a store.ConsoleAction) (bool, error)
	DeniedPrincipals(ctx context.Context) ([]store.DeniedPrincipal, error)

	SeeMCPTool(ctx context.Context, t store.MCPTool) (string, error)
	ApproveMCPTools(ctx context.Context, server string) (int, error)
	MCPTools(ctx context.Context, server string) ([]store.MCPTool, error)

	MemoryStore
	RoutineStore

	Close() error
}

// Harness is one implementation's database for one test.
type Harness struct {
	// Open opens the test's database with the clock now. The first call
	// finds it empty; a call after the store it returned was closed opens
	// the same data again (a restart), and a call while one is open opens
	// a second store on the same data (another replica). Open closes what
	// it opened when the test ends (closing twice must be harmless).
	Open func(tb testing.TB, now func() time.Time) Store
	// Vault returns the vault's storage in s.
	Vault func(s Store) vault.Storage
	// Query runs q on the test's database, seeing everything committed,
	// and scans its one row into dest. q uses ? placeholders and only SQL
	// both implementations accept; the suite uses it for what the
	// interfaces do not return (a row count, a state column).
	Query func(tb testing.TB, q string, args []any, dest ...any)
}

// Run runs the suite, its tests in parallel. newHarness is called once per
// test, for a database of its own.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each test has a database of its own
			tc.fn(t, newEnv(t, newHarness(t)))
		})
	}
}

type test struct {
	name string
	fn   func(t *testing.T, e *env)
}

// tests lists the suite; each file adds its own (see init-free lists in
// the files: inboxTests, historyTests, …).
var tests = concat(inboxTests, historyTests, outboxTests, approvalTests, vaultTests, threadTests, accessTests, mcpTests, replicaTests, fenceTests,
	memoryTests, routineTests,
	consoleTests, oauthTests)

func concat(lists ...[]test) []test {
	var out []test
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// t0 is the clock's time unless a test moves it.
var t0 = time.UnixMilli(1_700_000_000_123).UTC()

// clock is a test's clock, which a test may move.
type clock struct {
	mu sync.Mutex
	at time.Time // guarded by mu
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = t
}

// env is one test's database: the store open now and the harness.
type env struct {
	h   Harness
	clk *clock
	db  Store
}

func newEnv(t *testing.T, h Harness) *env {
	e := &env{h: h, clk: &clock{at: t0}}
	e.db = h.Open(t, e.clk.now)
	return e
}

// reopen closes the store and opens the same data again: a restart.
func (e *env) reopen(tb testing.TB) Store {
	tb.Helper()
	if err := e.db.Close(); err != nil {
		tb.Fatalf("close: %v", err)
	}
	e.db = e.h.Open(tb, e.clk.now)
	return e.db
}

// replica opens a second store on the same data.
func (e *env) replica(tb testing.TB) Store {
	tb.Helper()
	return e.h.Open(tb, e.clk.now)
}

func (e *env) vault() vault.Storage { return e.h.Vault(e.db) }

func (e *env) query(tb testing.TB, q string, args []any, dest ...any) {
	tb.Helper()
	e.h.Query(tb, q, args, dest...)
}

// countedTables are the tables the interfaces write.
var countedTables = []string{"principals", "sessions", "inbound", "turns", "messages",
	"turn_steps", "tool_calls", "outbound", "approvals", "followed_threads", "channel_cursors"}

// counts counts the rows of every table the interfaces write.
func (e *env) counts(tb testing.TB) map[string]int {
	tb.Helper()
	out := map[string]int{}
	for _, table := range countedTables {
		var n int64
		e.query(tb, "SELECT count(*) FROM "+table, nil, &n)
		out[table] = int(n)
	}
	return out
}

func (e *env) count(tb testing.TB, table string) int {
	tb.Helper()
	var n int64
	e.query(tb, "SELECT count(*) FROM "+table, nil, &n)
	return int(n)
}
