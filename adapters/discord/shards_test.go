package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/cluster"
	"github.com/talonhq/talon/cluster/natstest"
)

// shardReplica is one replica's Discord adapter with its shard leases.
type shardReplica struct {
	id     string
	a      *Adapter
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	state  string // the last OnState
}

const shardTTL = 2 * time.Second

func startShardReplica(t *testing.T, f *fakeDiscord, url, id string, rt Runtime) *shardReplica {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	sh, err := cluster.OpenShards(ctx, nc, cluster.ShardsConfig{Replica: id, LeaseTTL: shardTTL, IdentifyEvery: 500 * time.Millisecond}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Token = "test-token"
	cfg.AllowedGuilds = []string{guildID}
	cfg.Shards = ShardsAuto
	cfg.Commands = false
	cfg.BackfillWindow = -1
	r := &shardReplica{id: id, nc: nc, cancel: cancel, done: make(chan error, 1)}
	r.a = &Adapter{Config: cfg, Runtime: rt, Shards: clusterShards{sh}, APIBase: f.srv.URL, Log: zerolog.Nop(),
		reconnectBase: 5 * time.Millisecond, reconnectMax: 50 * time.Millisecond,
		OnState: func(s string) { r.mu.Lock(); r.state = s; r.mu.Unlock() }}
	go func() { r.done <- r.a.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// clusterShards is cluster.Shards as a ShardClaimer (cmd/talon's
// appShards does the same).
type clusterShards struct{ *cluster.Shards }

func (c clusterShards) Serve(ctx context.Context, count int, work func(ctx context.Context, shard int, hold ShardHold)) error {
	return c.Shards.Serve(ctx, count, func(ctx context.Context, shard int, h *cluster.ShardHold) { work(ctx, shard, h) })
}

func (r *shardReplica) stop() {
	r.cancel()
	if err := <-r.done; err != nil {
		panic(fmt.Sprintf("replica %s: Run: %v", r.id, err))
	}
	r.done <- nil
}

func (r *shardReplica) lastState() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// liveShards returns the shards the fake has a connection of, and checks
// none had two.
func (f *fakeDiscord) liveShards() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for s, n := range f.shardLive {
		if n > 0 {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fakeDiscord) shardOverlaps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.overlaps...)
}

// TestShardsAcrossReplicas runs three replicas of the adapter on a bot
// Discord wants in 4 shards: every shard is connected once, by one of
// them, shard 0 (DMs) included; events of every shard reach the runtime;
// a replica cut off from NATS (as if it died) disconnects its shards by
// itself and the others connect them within 30 s; and the fake never saw
// two connections of one shard at once.
func TestShardsAcrossReplicas(t *testing.T) {
	t.Parallel()
	url := natstest.Server(t)
	f := newFake(t)
	f.mu.Lock()
	f.recShards, f.maxConcurrency = 4, 2
	// A heartbeat of 1 s: a claim after the dead replica waits until
	// Discord would have dropped its connections (2 intervals, less the
	// lease's margin of 1.2 s: 0.8 s).
	f.heartbeat = 1000
	f.mu.Unlock()
	frt := &fakeRuntime{}
	var reps []*shardReplica
	for i := range 3 {
		reps = append(reps, startShardReplica(t, f, url, fmt.Sprintf("r%d", i), frt))
	}
	all := []int{0, 1, 2, 3}
	held := func(rs []*shardReplica) map[int][]string {
		out := map[int][]string{}
		for _, r := range rs {
			for _, s := range r.a.ShardsHeld() {
				out[s] = append(out[s], r.id)
			}
		}
		return out
	}
	waitShards := func(what string, rs []*shardReplica, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			h := held(rs)
			ok := slices.Equal(f.liveShards(), all) && len(h) == len(all)
			for _, owners := range h {
				ok = ok && len(owners) == 1
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: after %s the fake has shards %v connected, the replicas hold %v", what, within, f.liveShards(), h)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitShards("start", reps, 30*time.Second)
	// Every replica says its shards are connected (a READY, not a
	// session being taken over) or that it stands by.
	statesReported := func(rs []*shardReplica) bool {
		for _, r := range rs {
			s := r.lastState()
			if n := len(r.a.ShardsHeld()); n == 0 && s != "standing by (none of 4 shards held)" ||
				n > 0 && (!strings.HasPrefix(s, "connected (shards ") || !strings.HasSuffix(s, " of 4)")) {
				return false
			}
		}
		return true
	}
	waitFor(t, "the states reported", func() bool { return statesReported(reps) })
	for _, r := range reps {
		// The fair share is ceil(4/3) = 2: a replica that joined last
		// may hold none and stand by.
		if n := len(r.a.ShardsHeld()); n > 2 {
			t.Errorf("%s holds %d shards, more than its fair share of 4 over 3 (2)", r.id, n)
		}
	}
	f.mu.Lock()
	for _, id := range f.identifies {
		if id.count != 4 || id.shard < 0 || id.shard > 3 {
			t.Errorf("IDENTIFY with shard [%d, %d], want [0–3, 4]", id.shard, id.count)
		}
	}
	f.mu.Unlock()

	// Events of every shard reach the runtime: a DM on shard 0, a
	// mention on each shard.
	if err := f.dispatchTo(0, "MESSAGE_CREATE", dmFrom("9000", "7", "hello")); err != nil {
		t.Fatal(err)
	}
	for s := range 4 {
		if err := f.dispatchTo(s, "MESSAGE_CREATE", inGuild(fmt.Sprint(9100+s), channelID, "7", "<@100> hi", true)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every shard's message accepted", func() bool {
		frt.mu.Lock()
		defer frt.mu.Unlock()
		return len(frt.accepted) == 5
	})

	// The replica holding shard 0 dies: cut off from NATS it renews
	// nothing, closes its shards' sockets at its fence, and the others
	// connect them once the leases expire.
	var dead *shardReplica
	var rest []*shardReplica
	for _, r := range reps {
		if slices.Contains(r.a.ShardsHeld(), 0) {
			dead = r
		} else {
			rest = append(rest, r)
		}
	}
	lost := dead.a.ShardsHeld()
	died := time.Now()
	f.mu.Lock()
	f.shardEvents = append(f.shardEvents, fmt.Sprintf("replica %s, holding shards %v, cut off from NATS at %s", dead.id, lost, died.Format("15:04:05.000")))
	f.mu.Unlock()
	dead.nc.Close()
	waitFor(t, "the cut-off replica disconnects its shards", func() bool { return len(dead.a.ShardsHeld()) == 0 })
	waitShards("takeover", rest, 30*time.Second)
	t.Logf("shards %v of the dead replica connected again by the others %s after it died (lease TTL %s)",
		lost, time.Since(died).Round(time.Millisecond), shardTTL)
	// Until then an event may reach the connection that takes the dead
	// replica's session over, which reads it back after its READY
	// (read back is off here).
	waitFor(t, "the states reported after the takeover", func() bool { return statesReported(rest) })
	if err := f.dispatchTo(0, "MESSAGE_CREATE", dmFrom("9200", "7", "still there?")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a DM after the takeover accepted", func() bool {
		frt.mu.Lock()
		defer frt.mu.Unlock()
		return len(frt.accepted) == 6
	})
	for _, o := range f.shardOverlaps() {
		t.Error(o)
	}
	f.mu.Lock()
	if len(f.overlaps) > 0 {
		t.Logf("the shards' connections:\n%s", strings.Join(f.shardEvents, "\n"))
	}
	for s, n := range f.shardMost {
		if n > 1 {
			t.Errorf("shard %d had %d connections at once", s, n)
		}
	}
	// IDENTIFYs of one bucket (shard mod max_concurrency) were spaced.
	last := map[int]time.Time{}
	for _, id := range f.identifies {
		b := id.shard % 2
		// The turn is taken before the dial and HELLO, whose time varies
		// on a loaded machine: a fifth of the interval as the bound.
		if at, ok := last[b]; ok && id.at.Sub(at) < 100*time.Millisecond {
			t.Errorf("bucket %d: two IDENTIFYs %s apart, want about 500ms", b, id.at.Sub(at))
		}
		last[b] = id.at
	}
	f.mu.Unlock()
}

// TestShardsInOneProcess connects every shard of a fixed count from one
// adapter without NATS, identifying one shard per bucket at a time; a
// message and an interaction on shards other than 0 are handled.
func TestShardsInOneProcess(t *testing.T) {
	frt := &fakeRuntime{}
	e := func() *fakeDiscord {
		f := newFake(t)
		f.maxConcurrency = 1
		return f
	}()
	var states []string
	var smu sync.Mutex
	cfg := DefaultConfig()
	cfg.Token, cfg.AllowedGuilds, cfg.Shards, cfg.Commands, cfg.BackfillWindow = "test-token", []string{guildID}, 3, false, -1
	a := &Adapter{Config: cfg, Runtime: frt, APIBase: e.srv.URL, Log: zerolog.Nop(), identifyEvery: 200 * time.Millisecond,
		OnState: func(s string) { smu.Lock(); states = append(states, s); smu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "three shards connected", func() bool { return slices.Equal(e.liveShards(), []int{0, 1, 2}) })
	if err := e.dispatchTo(2, "MESSAGE_CREATE", dmFrom("9300", "7", "hello")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message accepted", func() bool {
		frt.mu.Lock()
		defer frt.mu.Unlock()
		return len(frt.accepted) == 1
	})
	// An interaction arriving on another shard is answered.
	if err := e.dispatchTo(1, "INTERACTION_CREATE", command("950", "help")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the interaction on shard 1 answered", func() bool {
		for _, c := range e.callbacksSnapshot() {
			if c.interaction == "950" {
				return true
			}
		}
		return false
	})
	waitFor(t, "state connected", func() bool {
		smu.Lock()
		defer smu.Unlock()
		return len(states) > 0 && states[len(states)-1] == "connected (shards 0, 1, 2 of 3)"
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.identifies) != 3 {
		t.Fatalf("%d IDENTIFYs, want 3", len(e.identifies))
	}
	for i := 1; i < 3; i++ {
		if gap := e.identifies[i].at.Sub(e.identifies[i-1].at); gap < 150*time.Millisecond {
			t.Errorf("IDENTIFYs %d and %d %s apart; max_concurrency 1 wants 200ms here", i-1, i, gap)
		}
		if e.identifies[i].count != 3 {
			t.Errorf("IDENTIFY shard count %d, want 3", e.identifies[i].count)
		}
	}
	for _, o := range e.overlaps {
		t.Error(o)
	}
}

// heldClaimer grants shard 0 of 1 and never ends its hold's context: only
// the hold's Held says when it is over, as for a process that slept past
// its lease and whose timers have not run yet.
type heldClaimer struct{ held atomic.Bool }

func (c *heldClaimer) ShardCount(_ context.Context, want int, _ bool) (int, error) { return want, nil }
func (c *heldClaimer) Identify(context.Context, int) error                         { return nil }
func (c *heldClaimer) Held() bool                                                  { return c.held.Load() }
func (c *heldClaimer) BeforeIdentify(context.Context, time.Duration) (time.Duration, error) {
	return 0, nil
}
func (c *heldClaimer) Handover(context.Context) (string, string, int64, bool) {
	return "", "", 0, false
}
func (c *heldClaimer) BeforeResume(context.Context) error { return nil }
func (c *heldClaimer) Taken()                             {}
func (c *heldClaimer) Serving(string, string, int64)      {}
func (c *heldClaimer) Serve(ctx context.Context, _ int, work func(ctx context.Context, shard int, hold ShardHold)) error {
	work(ctx, 0, c)
	return nil
}

// TestShardDroppedWithoutAWordOnceNotHeld: once the shard's hold is over
// by the clock, the gateway sends nothing more on its connection (no
// heartbeat, no close frame), handles no event read from it, and drops
// it; what it connects next sends nothing either.
func TestShardDroppedWithoutAWordOnceNotHeld(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.heartbeat = 50
	f.mu.Unlock()
	c := &heldClaimer{}
	c.held.Store(true)
	frt := runClaimed(t, f, c, -1)
	waitFor(t, "the shard connected and heartbeating", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.connected == 1 && len(f.beats) >= 2
	})

	c.held.Store(false)
	over := time.Now()
	// The adapter may drop the socket (its next check of the hold) before
	// the event is written: then there is nothing to read, which is what
	// the rest of the test asks too.
	if err := f.dispatchTo(0, "MESSAGE_CREATE", dmFrom("9300", "7", "to the sleeper")); err != nil &&
		!errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	waitFor(t, "the connection dropped", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.shardLive[0] == 0
	})
	time.Sleep(300 * time.Millisecond) // six heartbeat intervals: what would follow
	f.mu.Lock()
	defer f.mu.Unlock()
	late := 0
	for _, at := range f.beats {
		if at.After(over) {
			late++
		}
	}
	// One heartbeat may have been on its way at the flip.
	if late > 1 {
		t.Errorf("%d heartbeats after the hold ended, want at most one in flight", late)
	}
	for _, fr := range f.frames {
		if fr.at.After(over) {
			t.Errorf("op %d sent after the hold ended", fr.Op)
		}
	}
	for _, code := range f.closes {
		if code != websocket.CloseAbnormalClosure { // 1006: the socket ended without a close frame
			t.Errorf("a close frame with %d sent after the hold ended, want the socket dropped without one", code)
		}
	}
	if f.connected != 1 {
		t.Errorf("%d sessions made ready, want only the first", f.connected)
	}
	frt.mu.Lock()
	defer frt.mu.Unlock()
	if len(frt.accepted) != 0 {
		t.Errorf("an event read after the hold ended was handled: %d accepted", len(frt.accepted))
	}
}

// handoverClaimer is heldClaimer with a session left by the shard's
// previous owner to hand over, and a record of what the gateway tells it.
type handoverClaimer struct {
	heldClaimer
	session string

	mu      sync.Mutex
	calls   []string // "resume", "taken", "identify", "serving <id>", in order
	serving string   // the last session Serving named
}

func (c *handoverClaimer) note(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, s)
}

func (c *handoverClaimer) Handover(context.Context) (string, string, int64, bool) {
	return c.session, "", 1, c.session != ""
}
func (c *handoverClaimer) BeforeResume(context.Context) error { c.note("resume"); return nil }
func (c *handoverClaimer) Taken()                             { c.note("taken") }
func (c *handoverClaimer) BeforeIdentify(context.Context, time.Duration) (time.Duration, error) {
	c.note("identify")
	return 0, nil
}
func (c *handoverClaimer) Serving(id, _ string, _ int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id != c.serving {
		c.calls = append(c.calls, "serving "+id)
		c.serving = id
	}
}
func (c *handoverClaimer) Serve(ctx context.Context, _ int, work func(ctx context.Context, shard int, hold ShardHold)) error {
	work(ctx, 0, c)
	return nil
}

// TestShardTakesItsPreviousOwnersSessionOver: a claim handed the session
// of the shard's previous owner (paused, or its host lost, its socket
// maybe still open in Discord's view) resumes it first, which moves it
// here, then ends it with a clean close and identifies at once. A message
// the session replays, which its owner never read, is read back once the
// new session is ready, and accepted. The IDENTIFY waits until Discord
// has answered the close, so that the shard is never connected twice.
// This fake replays after RESUMED, where Discord replays before: the
// gateway waits for a heartbeat's acknowledgement, which follows both.
func TestShardTakesItsPreviousOwnersSessionOver(t *testing.T) {
	f := newFake(t)
	missed := dmFrom("1000061", "7", "sent while its owner slept")
	missed.Timestamp = at(time.Now())
	f.mu.Lock()
	f.sessionShard["sess-old"] = 0
	f.replay = []event{{"MESSAGE_CREATE", missed}}
	f.history[dmChannel] = []msg{missed}
	// Discord takes its time to end the session on the close: the
	// IDENTIFY that follows waits for its answer.
	f.closeDelay = 300 * time.Millisecond
	f.mu.Unlock()
	c := &handoverClaimer{session: "sess-old", serving: "(none yet)"}
	c.held.Store(true)
	frt := runClaimed(t, f, c, time.Hour)
	waitFor(t, "the replayed message accepted", func() bool {
		frt.mu.Lock()
		defer frt.mu.Unlock()
		return len(frt.accepted) == 1
	})

	f.mu.Lock()
	var ops []int
	var resumed string
	for _, fr := range f.frames {
		ops = append(ops, fr.Op)
		if fr.Op == 6 {
			var d struct {
				SessionID string `json:"session_id"`
			}
			_ = json.Unmarshal(fr.D, &d)
			resumed = d.SessionID
		}
	}
	closes := slices.Clone(f.closes)
	overlaps := slices.Clone(f.overlaps)
	f.mu.Unlock()
	for _, o := range overlaps {
		t.Errorf("%s: the IDENTIFY did not wait for the session taken over to end", o)
	}
	if !slices.Equal(ops, []int{6, 2}) || resumed != "sess-old" {
		t.Errorf("frames sent: ops %v resuming %q; want a RESUME of sess-old, then an IDENTIFY", ops, resumed)
	}
	if !slices.Contains(closes, websocket.CloseNormalClosure) {
		t.Errorf("closes %v: the session taken over was not ended with a clean close (1000)", closes)
	}
	c.mu.Lock()
	calls := slices.Clone(c.calls)
	c.mu.Unlock()
	if want := []string{"resume", "taken", "serving ", "identify", "serving sess-1"}; !slices.Equal(calls, want) {
		t.Errorf("the hold was told %q, want %q", calls, want)
	}
	frt.mu.Lock()
	defer frt.mu.Unlock()
	if in := frt.accepted[0]; in.DedupeKey != "discord:1000061" {
		t.Errorf("accepted %q, want the message the session replayed", in.DedupeKey)
	}
}

// TestTrustedResumeURL: a resume URL recorded by another replica (in NATS,
// which anyone with write access to its buckets can change) is sent the
// bot's token only on the gateway's own host or Discord's domain.
func TestTrustedResumeURL(t *testing.T) {
	const gw = "wss://gateway.discord.gg/?v=10&encoding=json"
	for _, tc := range []struct {
		resume, gateway string
		want            bool
	}{
		{"wss://gateway-us-east1-b.discord.gg", gw, true},
		{"wss://gateway.discord.gg/", gw, true},
		{"wss://DISCORD.GG", gw, true},
		{"ws://127.0.0.1:4000/ws/", "ws://127.0.0.1:4000/ws/?v=10", true},
		{"wss://evil.example", gw, false},
		{"wss://discord.gg.evil.example", gw, false},
		{"wss://evildiscord.gg", gw, false},
		{"ws://gateway.discord.gg", gw, false},                   // plain text to Discord's domain
		{"wss://127.0.0.1:4000/", "ws://127.0.0.1:4000/", false}, // another scheme than the gateway's
		{"wss://user:pw@gateway.discord.gg", gw, false},
		{"https://gateway.discord.gg", gw, false},
		{"::not a url", gw, false},
		{"", gw, false},
	} {
		if got := trustedResumeURL(tc.resume, tc.gateway); got != tc.want {
			t.Errorf("trustedResumeURL(%q, %q) = %v, want %v", tc.resume, tc.gateway, got, tc.want)
		}
	}
}

// runClaimed runs an adapter against f whose shards c grants, with the
// read back window backfill (-1: off), until the test ends; it returns the
// runtime the adapter hands its messages to.
func runClaimed(t *testing.T, f *fakeDiscord, c ShardClaimer, backfill time.Duration) *fakeRuntime {
	frt := &fakeRuntime{}
	cfg := DefaultConfig()
	cfg.Token = "test-token"
	cfg.Commands = false
	cfg.BackfillWindow = backfill
	a := &Adapter{Config: cfg, Runtime: frt, Shards: c, APIBase: f.srv.URL, Log: zerolog.Nop(),
		reconnectBase: 5 * time.Millisecond, reconnectMax: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return frt
}
