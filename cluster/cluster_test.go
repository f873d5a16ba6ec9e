package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// echo is a model that answers with the user's last message.
type echo struct{}

func (echo) Name() string  { return "echo" }
func (echo) Model() string { return "echo-1" }
func (echo) Complete(ctx context.Context, req llm.Request) (*llm.Response, error) {
	last := ""
	for _, m := range req.Messages {
		if m.Role == llm.RoleUser {
			last = m.Content
		}
	}
	return &llm.Response{Message: llm.Message{Role: llm.RoleAssistant, Content: "re: " + last}}, nil
}

// delivered records every reply every replica delivered.
type delivered struct {
	mu      sync.Mutex
	by      map[agent.InboundID][]string // replicas that delivered a reply to it; guarded by mu
	session map[agent.SessionKey][]agent.InboundID
	text    map[agent.InboundID]string // the last reply's text; guarded by mu
	asked   int                        // approval prompts shown; guarded by mu
}

func newDelivered() *delivered {
	return &delivered{by: map[agent.InboundID][]string{}, session: map[agent.SessionKey][]agent.InboundID{}, text: map[agent.InboundID]string{}}
}

// channel is one replica's channel on the shared platform "test".
type channel struct {
	d       *delivered
	replica string
}

func (c channel) Platform() string { return "test" }
func (c channel) Deliver(_ context.Context, r agent.Reply) (string, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	c.d.by[r.Inbound] = append(c.d.by[r.Inbound], c.replica)
	c.d.session[r.Key] = append(c.d.session[r.Key], r.Inbound)
	c.d.text[r.Inbound] = r.Text
	return fmt.Sprint(r.ID), nil
}

// AskApproval and ApprovalDone make the channel an agent.Asker that shows
// nothing.
func (c channel) AskApproval(context.Context, agent.ApprovalPrompt) (string, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	c.d.asked++
	return "", nil
}
func (c channel) ApprovalDone(context.Context, agent.ApprovalPrompt, agent.ApprovalState, agent.Principal) error {
	return nil
}

func (d *delivered) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.by)
}

// replica is one gateway process: a runtime and a node on a connection
// of its own, sharing the store.
type replica struct {
	id     string
	rt     *agent.Runtime
	node   *Node
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

// sharedStore is the store every replica of a fixture shares.
type sharedStore interface {
	agent.Store
	Close() error
}

type fixture struct {
	t      *testing.T
	url    string
	prefix string
	db     sharedStore
	d      *delivered
	cfg    Config
	// model answers on every replica (echo when nil); limits are every
	// replica's runtime limits.
	model  llm.Provider
	limits agent.Limits
	now    func() time.Time // every replica's clock (time.Now when nil)
}

func newFixture(t *testing.T, url, prefix string) *fixture {
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureOn(t, url, prefix, db)
}

// newFixtureOn is newFixture on another store.
func newFixtureOn(t *testing.T, url, prefix string, db sharedStore) *fixture {
	t.Cleanup(func() { db.Close() })
	return &fixture{t: t, url: url, prefix: prefix, db: db, d: newDelivered(),
		cfg: Config{Partitions: 8, LeaseTTL: testTTL, Sweep: 300 * time.Millisecond, Prefix: prefix}}
}

func (f *fixture) start(id string) *replica {
	t := f.t
	t.Helper()
	nc := connect(t, f.url)
	var model llm.Provider = echo{}
	if f.model != nil {
		model = f.model
	}
	limits := f.limits
	limits.ShutdownGrace = time.Second
	rt := &agent.Runtime{Store: f.db, LLM: model, Log: zerolog.Nop(), Limits: limits,
		ApprovalTimeout: 10 * time.Minute, Now: f.now}
	rt.Register(channel{d: f.d, replica: id})
	cfg := f.cfg
	cfg.Replica = id
	ctx, cancel := context.WithCancel(context.Background())
	node, err := Open(ctx, nc, cfg, rt, f.db, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	rt.Dispatch = node
	rt.Limiter = node.Limiter()
	node.Limiter().Now = f.now
	r := &replica{id: id, rt: rt, node: node, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		var wg sync.WaitGroup
		wg.Go(func() { _ = rt.Run(ctx) })
		<-rt.Ready()
		_ = node.Run(ctx)
		wg.Wait()
	}()
	<-rt.Ready()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func key(user int, thread int) agent.SessionKey {
	return agent.SessionKey{Principal: agent.Principal{Platform: "test", User: fmt.Sprint("u", user)},
		Conversation: agent.Conversation{Channel: "c", Thread: fmt.Sprint(thread)}}
}

// checkAnswered waits until every id has a reply, and checks there is
// exactly one each and that each session's replies came in the order its
// messages were accepted.
func (f *fixture) checkAnswered(ids []agent.InboundID, within time.Duration) {
	t := f.t
	t.Helper()
	eventually(t, within, fmt.Sprintf("all %d messages answered", len(ids)), func() bool { return f.d.count() >= len(ids) })
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	for _, id := range ids {
		if got := f.d.by[id]; len(got) != 1 {
			t.Errorf("inbound %d: delivered by %v, want exactly one replica", id, got)
		}
	}
	for k, got := range f.d.session {
		if !slices.IsSorted(got) {
			t.Errorf("session %s: replies to %v, want them in the order the messages were accepted", k, got)
		}
	}
}

// TestNodeRunsEachSessionOnOneReplicaInOrder accepts messages of many
// sessions on three replicas in turn and checks each is answered once, in
// order per session, and that the partitions are spread.
func TestNodeRunsEachSessionOnOneReplicaInOrder(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	rs := []*replica{f.start("a"), f.start("b"), f.start("c")}
	eventually(t, 10*testTTL, "8 partitions spread over 3 replicas (at most 3 each)", func() bool {
		total := 0
		for _, r := range rs {
			n := len(r.node.Held())
			if n > 3 {
				return false
			}
			total += n
		}
		return total == 8
	})
	var ids []agent.InboundID
	ctx := context.Background()
	for i := range 120 {
		r := rs[i%len(rs)]
		q, err := r.rt.Accept(ctx, agent.Inbound{DedupeKey: fmt.Sprint("m", i), Key: key(i%10, i%3), Text: fmt.Sprint("hello ", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, q.ID)
	}
	f.checkAnswered(ids, 60*time.Second)
	served := map[string]bool{}
	f.d.mu.Lock()
	for _, by := range f.d.by {
		served[by[0]] = true
	}
	f.d.mu.Unlock()
	if len(served) < 2 {
		t.Errorf("replicas that answered: %v, want the work spread", served)
	}
}

// TestNodeFindsMessagesWhoseAnnouncementWasLost: a message accepted in the
// store without an announcement (its replica died between the two) is
// answered, by the adoption of its partition and by the sweep.
func TestNodeFindsMessagesWhoseAnnouncementWasLost(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	ctx := context.Background()
	var ids []agent.InboundID
	accept := func(i int) {
		q, dup, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: fmt.Sprint("lost", i), Key: key(i, 0), Text: "hi", ReceivedAt: time.Now()})
		if err != nil || dup {
			t.Fatal(err, dup)
		}
		ids = append(ids, q.ID)
	}
	for i := range 5 {
		accept(i) // before any replica runs: the adoption finds them
	}
	a := f.start("a")
	f.checkAnswered(ids, 30*time.Second)
	eventually(t, 10*testTTL, "a holds every partition", func() bool { return len(a.node.Held()) == 8 })
	for i := 5; i < 10; i++ {
		accept(i) // while a serves: the sweep finds them
	}
	f.checkAnswered(ids, 30*time.Second)
}

// TestNodeRunsAnEarlierMessageWhoseAnnouncementIsLate: a session's first
// message is in the store but not announced (its replica died before
// publishing, or a dead owner's pull request took the announcement); the
// second, announced, brings it along, and they are answered in order, long
// before any sweep.
func TestNodeRunsAnEarlierMessageWhoseAnnouncementIsLate(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	f.cfg.Sweep = time.Hour
	a := f.start("a")
	eventually(t, 10*testTTL, "a holds every partition", func() bool { return len(a.node.Held()) == 8 })
	ctx := context.Background()
	first, dup, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "late-1", Key: key(3, 0), Text: "first", ReceivedAt: time.Now()})
	if err != nil || dup {
		t.Fatal(err, dup)
	}
	second, err := a.rt.Accept(ctx, agent.Inbound{DedupeKey: "late-2", Key: key(3, 0), Text: "second"})
	if err != nil {
		t.Fatal(err)
	}
	f.checkAnswered([]agent.InboundID{first.ID, second.ID}, 30*time.Second)
}

// TestNodeTakesOverADeadReplicasWork: a replica dies (its connection
// cut) with messages accepted in its partitions; the survivor answers
// each of them once.
func TestNodeTakesOverADeadReplicasWork(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	f.cfg.Sweep = time.Hour // the takeover, not the sweep, finds the messages
	a, b := f.start("a"), f.start("b")
	eventually(t, 10*testTTL, "a and b hold 4 partitions each", func() bool {
		return len(a.node.Held()) == 4 && len(b.node.Held()) == 4
	})
	held := a.node.Held()
	a.nc.Close() // a dies: it can announce nothing, and its leases lapse
	ctx := context.Background()
	var ids []agent.InboundID
	for i := 0; len(ids) < 6; i++ {
		k := key(i, 1)
		if !slices.Contains(held, f.cfg.partition(k)) {
			continue
		}
		// Accepted through a: the store has it, the announcement fails.
		q, err := a.rt.Accept(ctx, agent.Inbound{DedupeKey: fmt.Sprint("dead", i), Key: k, Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, q.ID)
	}
	start := time.Now()
	f.checkAnswered(ids, 15*testTTL)
	t.Logf("b answered a's messages %s after a died (lease TTL %s)", time.Since(start).Round(time.Millisecond), testTTL)
	if got := len(b.node.Held()); got != 8 {
		t.Errorf("b holds %d partitions, want 8", got)
	}
}

func (c Config) partition(k agent.SessionKey) int { return Partition(k, c.Partitions) }

func TestPartitionIsStable(t *testing.T) {
	// A change of the hash would move sessions between replicas running
	// different versions: these values must never change.
	for _, tc := range []struct {
		k    agent.SessionKey
		p    int
		want int
	}{
		{key(1, 1), 32, 29}, // "test::u1/c/1"
		{key(42, 0), 32, 3}, // "test::u42/c/0"
		{key(1, 1), 7, 0},
		{key(42, 0), 7, 0},
	} {
		if got := Partition(tc.k, tc.p); got != tc.want {
			t.Errorf("Partition(%s, %d) = %d, want %d", tc.k, tc.p, got, tc.want)
		}
	}
}

func TestOpenRefusesAnotherPartitionCount(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	f.start("a")
	nc := connect(t, url)
	rt := &agent.Runtime{Store: f.db, LLM: echo{}}
	_, err := Open(context.Background(), nc, Config{Partitions: 16, Prefix: "talon", LeaseTTL: testTTL}, rt, f.db, zerolog.Nop())
	if err == nil {
		t.Fatal("Open with 16 partitions where 8 are recorded: nil error")
	}
	t.Log(err)
}

// A replica whose lease TTL is not the running replicas' is refused: it
// would have made the buckets' MaxAge shorter than the others' fences, so
// that their leases could be taken while they still use them. Once every
// replica has stopped, the next start sets the new TTL.
func TestOpenRefusesAnotherLeaseTTLWhileReplicasRun(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	a := f.start("a")
	eventually(t, 10*testTTL, "a holds its partitions", func() bool { return len(a.node.Held()) == 8 })
	nc := connect(t, url)
	rt := &agent.Runtime{Store: f.db, LLM: echo{}}
	ctx := context.Background()
	shorter := testTTL / 2
	_, err := Open(ctx, nc, Config{Partitions: 8, Prefix: "talon", LeaseTTL: shorter, Replica: "b"}, rt, f.db, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "nats.lease_ttl is "+shorter.String()+" here but "+testTTL.String()) {
		t.Fatalf("Open with a lease TTL of %s while a runs with %s: %v", shorter, testTTL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ttl := func() time.Duration {
		kv, err := js.KeyValue(ctx, "talon_partitions")
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.TTL()
	}
	if got := ttl(); got != testTTL {
		t.Errorf("the lease bucket's TTL is %s after the refused start, want a's %s", got, testTTL)
	}
	// The same TTL is welcome.
	c, err := Open(ctx, nc, Config{Partitions: 8, Prefix: "talon", LeaseTTL: testTTL, Replica: "c"}, rt, f.db, zerolog.Nop())
	if err != nil {
		t.Fatalf("Open with the running replicas' TTL: %v", err)
	}
	c.Abandon() // c will not run: its starting key goes
	a.stop()    // a clean stop deletes a's keys
	if _, err := Open(ctx, nc, Config{Partitions: 8, Prefix: "talon", LeaseTTL: shorter, Replica: "b"}, rt, f.db, zerolog.Nop()); err != nil {
		t.Fatalf("Open with a new TTL once every replica stopped: %v", err)
	}
	if got := ttl(); got != shorter {
		t.Errorf("the lease bucket's TTL is %s after the start with %s", got, shorter)
	}
}

// A replica whose store is its own (SQLite) runs alone: another replica
// beside it is refused, and it is refused beside another, but not beside
// its own store's dead predecessor.
func TestOpenRefusesAReplicaBesideOneAlone(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	f.cfg.Alone = "store-a"
	a := f.start("a")
	eventually(t, 10*testTTL, "a holds its partitions", func() bool { return len(a.node.Held()) == 8 })
	nc := connect(t, url)
	rt := &agent.Runtime{Store: f.db, LLM: echo{}}
	ctx := context.Background()
	open := func(replica, alone string) error {
		_, err := Open(ctx, nc, Config{Partitions: 8, Prefix: "talon", LeaseTTL: testTTL, Replica: replica, Alone: alone}, rt, f.db, zerolog.Nop())
		return err
	}
	if err := open("b", ""); err == nil || !strings.Contains(err.Error(), "replica a runs in this deployment (nats.url, nats.prefix talon) on a SQLite store of its own") {
		t.Errorf("a shared-store replica beside one alone: %v", err)
	}
	if err := open("c", "store-c"); err == nil || !strings.Contains(err.Error(), "this one has the SQLite store") {
		t.Errorf("a second replica alone: %v", err)
	}
	a.nc.Close() // a dies: its alive key stays until it expires
	if err := open("a2", "store-a"); err != nil {
		t.Errorf("the next process of a's store, a dead: %v", err)
	}
	if err := open("c", "store-c"); err == nil {
		t.Error("another store's replica while a's alive key stays: nil error")
	}

	// A replica alone refused beside a shared-store one.
	g := newFixture(t, url, "shared")
	p := g.start("p")
	eventually(t, 10*testTTL, "p holds its partitions", func() bool { return len(p.node.Held()) == 8 })
	if _, err := Open(ctx, nc, Config{Partitions: 8, Prefix: "shared", LeaseTTL: testTTL, Replica: "q", Alone: "store-q"}, rt, g.db, zerolog.Nop()); err == nil ||
		!strings.Contains(err.Error(), "replica p runs in this deployment (nats.url, nats.prefix shared), and this one has the SQLite store") {
		t.Errorf("a replica alone beside a shared-store one: %v", err)
	}
}

// TestOpenRefusesAReplicaWithOtherTools: a replica whose tools differ from
// a running replica's is refused at start, naming both digests; one with
// the same tools, or of a version that writes no digest, is not.
func TestOpenRefusesAReplicaWithOtherTools(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "tools")
	f.cfg.Tools = "aaaaaaaaaaaaaaaa1111"
	a := f.start("a")
	eventually(t, 10*testTTL, "a holds its partitions", func() bool { return len(a.node.Held()) == 8 })
	nc := connect(t, url)
	rt := &agent.Runtime{Store: f.db, LLM: echo{}}
	open := func(replica, tools string) error {
		_, err := Open(context.Background(), nc, Config{Partitions: 8, Prefix: "tools", LeaseTTL: testTTL, Replica: replica, Tools: tools}, rt, f.db, zerolog.Nop())
		return err
	}
	if err := open("b", "bbbbbbbbbbbbbbbb2222"); err == nil || !strings.Contains(err.Error(), "replica a runs in this deployment (nats.url, nats.prefix tools) with other tools") ||
		!strings.Contains(err.Error(), "digest aaaaaaaaaaaa there, bbbbbbbbbbbb here") {
		t.Errorf("a replica with other tools: %v", err)
	}
	if err := open("c", "aaaaaaaaaaaaaaaa1111"); err != nil {
		t.Errorf("a replica with the same tools: %v", err)
	}
	if err := open("d", ""); err != nil {
		t.Errorf("a replica that tells no digest: %v", err)
	}
}

// TestOpenRefusesAReplicaWithOtherSettings: a replica whose settings
// differ from a running replica's in a setting both have is refused at
// start, naming the settings that differ; one with the same settings, with
// settings the running one has not (a newer version) or without some it
// has, or of a version that tells none, is not.
func TestOpenRefusesAReplicaWithOtherSettings(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "settings")
	base := map[string]string{"agent.rate_per_minute": "20", "llm.model": `"m"`,
		"x.1": "1", "x.2": "1", "x.3": "1", "x.4": "1", "x.5": "1", "x.6": "1"}
	with := func(changes map[string]string) map[string]string {
		m := maps.Clone(base)
		for k, v := range changes {
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	f.cfg.Settings = base
	a := f.start("a")
	eventually(t, 10*testTTL, "a holds its partitions", func() bool { return len(a.node.Held()) == 8 })
	nc := connect(t, url)
	rt := &agent.Runtime{Store: f.db, LLM: echo{}}
	ctx := context.Background()
	open := func(replica string, settings map[string]string) error {
		_, err := Open(ctx, nc, Config{Partitions: 8, Prefix: "settings", LeaseTTL: testTTL, Replica: replica, Settings: settings}, rt, f.db, zerolog.Nop())
		return err
	}

	// a's settings are recorded under their digest, which its alive key names.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	digest, record, err := settingsDigest(base)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := js.KeyValue(ctx, "settings_cluster")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := shared.Get(ctx, "settings."+digest); err != nil || string(e.Value()) != string(record) {
		t.Errorf("a's settings record: %v", err)
	}
	leases, err := js.KeyValue(ctx, "settings_partitions")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := leases.Get(ctx, "alive.a"); err != nil || aliveOf(e.Value()).settings != digest {
		t.Errorf("a's alive key does not name its settings' digest %s: %v", digest, err)
	}

	const advice = ". A turn runs on whichever replica owns its session, and the limits hold across all of them, so every replica needs " +
		"the same talon.yaml apart from its own addresses, data directory, logging and resources (docs/scale.md). Give this one the same settings; " +
		"to change them, stop every replica, then start them all with the new ones (a replica that has just ended is forgotten within nats.lease_ttl, 2s)"
	for _, tc := range []struct {
		name     string
		settings map[string]string
		want     string // the error, "" for none
	}{
		{"another rate", with(map[string]string{"agent.rate_per_minute": "30"}),
			"cluster: replica a runs in this deployment (nats.url, nats.prefix settings) with other settings than this one: " +
				"agent.rate_per_minute is 20 there and 30 here" + advice},
		{"seven differ", with(map[string]string{"agent.rate_per_minute": "30", "llm.model": `"n"`, "x.1": "2", "x.2": "2", "x.3": "2", "x.4": "2", "x.5": "2"}),
			"cluster: replica a runs in this deployment (nats.url, nats.prefix settings) with other settings than this one: " +
				`agent.rate_per_minute is 20 there and 30 here; llm.model is "m" there and "n" here; x.1 is 1 there and 2 here; ` +
				"x.2 is 1 there and 2 here; x.3 is 1 there and 2 here; and 2 more" + advice},
		{"the same", with(nil), ""},
		{"a setting a has not (a newer version)", with(map[string]string{"z.new": "1"}), ""},
		{"without a setting a has (an older version)", with(map[string]string{"x.6": ""}), ""},
		{"a newer version with another rate", with(map[string]string{"z.new": "1", "agent.rate_per_minute": "30"}),
			"cluster: replica a runs in this deployment (nats.url, nats.prefix settings) with other settings than this one: " +
				"agent.rate_per_minute is 20 there and 30 here" + advice},
		{"none told", nil, ""},
	} {
		err := open("b", tc.settings)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("%s:\n got %v\nwant %s", tc.name, err, tc.want)
		}
	}
	// A refused replica records nothing.
	refused, _, _ := settingsDigest(with(map[string]string{"agent.rate_per_minute": "30"}))
	if _, err := shared.Get(ctx, "settings."+refused); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the refused replica's settings record: %v, want none", err)
	}

	// Without a's record, other settings cannot be compared: refused,
	// naming both digests.
	if err := shared.Delete(ctx, "settings."+digest); err != nil {
		t.Fatal(err)
	}
	if err := open("b", with(map[string]string{"agent.rate_per_minute": "30"})); err == nil ||
		!strings.Contains(err.Error(), "with other settings than this one (digest "+short(digest)+" there, "+short(refused)+" here), "+
			"and their record (key settings."+digest+" in bucket settings_cluster) is missing, so they cannot be compared. A turn runs") {
		t.Errorf("other settings without the running replica's record: %v", err)
	}
	if err := open("b", base); err != nil {
		t.Errorf("the same settings without the running replica's record: %v", err)
	}

	// A running replica of a version before the settings' digest is not
	// checked.
	a.stop()
	if _, err := leases.Put(ctx, "alive.old", []byte("tools t1 2026-12-03T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	if err := open("b", with(map[string]string{"agent.rate_per_minute": "30"})); err != nil {
		t.Errorf("beside a replica that tells no settings: %v", err)
	}
}

// aliveOf reads the alive keys of this version and of those before.
func TestAliveOf(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  aliveInfo
	}{
		{"2026-12-03T00:00:00Z", aliveInfo{}},
		{"alone s1 2026-12-03T00:00:00Z", aliveInfo{alone: "s1"}},
		{"tools t1 2026-12-03T00:00:00Z", aliveInfo{tools: "t1"}},
		{"alone s1 tools t1 2026-12-03T00:00:00Z", aliveInfo{alone: "s1", tools: "t1"}},
		{"settings d1 2026-12-03T00:00:00Z", aliveInfo{settings: "d1"}},
		{"tools t1 settings d1 2026-12-03T00:00:00Z", aliveInfo{tools: "t1", settings: "d1"}},
		{"alone s1 tools t1 settings d1 2026-12-03T00:00:00Z", aliveInfo{alone: "s1", tools: "t1", settings: "d1"}},
	} {
		if got := aliveOf([]byte(tc.value)); got != tc.want {
			t.Errorf("aliveOf(%q) = %+v, want %+v", tc.value, got, tc.want)
		}
	}
}

// TestNodeOnRealNATS runs the ordering test against the NATS server of
// TALON_TEST_NATS.
func TestNodeOnRealNATS(t *testing.T) {
	url := realNATS(t)
	f := newFixture(t, url, testPrefix(t, url))
	a, b := f.start("a"), f.start("b")
	eventually(t, 10*testTTL, "8 partitions held", func() bool { return len(a.node.Held())+len(b.node.Held()) == 8 })
	var ids []agent.InboundID
	for i := range 40 {
		r := []*replica{a, b}[i%2]
		q, err := r.rt.Accept(context.Background(), agent.Inbound{DedupeKey: fmt.Sprint("m", i), Key: key(i%5, 0), Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, q.ID)
	}
	f.checkAnswered(ids, 60*time.Second)
}

// TestApprovalDecidedOnAnotherReplicaWakesTheTurn: a turn on b waits for
// an approval; its owner's click reaches a, which decides it; b's turn
// goes on at once, long before the approval would expire.
func TestApprovalDecidedOnAnotherReplicaWakesTheTurn(t *testing.T) {
	url := testNATS(t)
	f := newFixture(t, url, "talon")
	a, b := f.start("a"), f.start("b")
	ctx := context.Background()
	k := key(1, 9)
	q, _, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "approve", Key: k, Text: "deploy", ReceivedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	tid, _, _, err := f.db.StartTurn(ctx, q.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan bool, 1)
	go func() {
		ok, err := b.rt.RequestApproval(ctx, agent.ApprovalRequest{Key: k, Turn: tid, CallID: "c1", Tool: "deploy", Description: "run tool deploy"})
		if err != nil {
			t.Error(err)
		}
		got <- ok
	}()
	var id agent.ApprovalID
	eventually(t, 30*time.Second, "the approval is pending", func() bool {
		pending, err := f.db.PendingApprovals(ctx)
		if err != nil || len(pending) != 1 {
			return false
		}
		id = pending[0].ID
		return true
	})
	// The owner sees the prompt once b waits.
	eventually(t, 30*time.Second, "the prompt is shown", func() bool {
		f.d.mu.Lock()
		defer f.d.mu.Unlock()
		return f.d.asked == 1
	})
	if _, err := a.rt.Decide(ctx, id, k.Principal, true); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-got:
		if !ok {
			t.Error("RequestApproval on b: denied, want approved")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the turn on b still waits 30 s after a decided its approval")
	}
}
