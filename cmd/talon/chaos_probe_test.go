package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestChaosDiscordShardsAtDiscordsHeartbeat: the shards' liveness probe
// against Discord's real heartbeat interval (41.25 s, so Discord's view
// of a silent connection lasts 82.5 s). Three `talon run` processes on
// NATS (SQLite each: no messages flow), a fake Discord that recommends 2
// shards. The owner of shard 0 is killed with SIGKILL: its shards are
// identified again by another within 30 s, without waiting for Discord's
// view (its probe answers "no responders"). Then the owner of a shard is
// paused with SIGSTOP: another claims its shards but does not identify
// them (the paused process may still have them connected in Discord's
// view), for 10 s after the claim at least. The fake sees no shard
// connected twice at any instant.
func TestChaosDiscordShardsAtDiscordsHeartbeat(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three replicas, kills one and pauses another")
	}
	natsURL := os.Getenv("TALON_TEST_NATS")
	if natsURL == "" {
		t.Skip("TALON_TEST_NATS is not set: set it (nats://127.0.0.1:4222) and TALON_TEST_POSTGRES to run the test of Discord shard takeover at Discord's heartbeat")
	}
	const (
		replicas  = 3
		shards    = 2
		heartbeat = 41250 * time.Millisecond
		takeover  = 30 * time.Second
		stillWait = 10 * time.Second
	)
	// Replicas share a PostgreSQL store: one on SQLite runs alone.
	dbURL, _ := postgresSchema(t)
	prefix := natsPrefix(t, natsURL)
	model := llmtest.NewServer(t, llmtest.Text("ok"))
	f := newShardedDiscord(t, shards, heartbeat)

	dir := t.TempDir()
	if d := os.Getenv("CHAOS_DEBUG_DIR"); d != "" {
		dir = d
	}
	t.Setenv("DATABASE_URL", dbURL)
	t.Setenv("NATS_URL", natsURL)
	reps := discordReplicas(t, f, model.URL, dir, "probe-p", replicas, "store:\n  driver: postgres\n  url: ${DATABASE_URL}\n", 2, prefix)
	// Messages a taken-over session replays are read back: the read back
	// is on here.
	for _, r := range reps {
		b, err := os.ReadFile(r.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "backfill_window: 0s") {
			t.Fatalf("%s: no backfill_window: 0s to turn the read back on", r.cfg)
		}
		if err := os.WriteFile(r.cfg, []byte(strings.Replace(string(b), "backfill_window: 0s", "backfill_window: 1h", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, r := range reps {
			r.kill(syscall.SIGKILL)
		}
		if t.Failed() {
			for _, r := range reps {
				t.Logf("last log of %s:\n%s", r.name, tailLog(filepath.Dir(r.cfg), r.starts))
			}
		}
	}()
	began := time.Now()
	for _, r := range reps {
		r.start()
	}
	for _, r := range reps {
		r.ready()
	}
	waitFor(t, takeover, "every shard connected", func() bool { return len(f.connected()) == shards })

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	skv, err := js.KeyValue(ctx, prefix+"_shards")
	if err != nil {
		t.Fatal(err)
	}
	ownerOf := func(s int) string {
		e, err := skv.Get(ctx, "owner."+strconv.Itoa(s))
		if err != nil {
			return ""
		}
		return string(e.Value())
	}
	procOf := func(name string) *chaosProc {
		for _, r := range reps {
			if r.name == name {
				return r
			}
		}
		t.Fatalf("no replica %q owns a shard", name)
		return nil
	}
	heldBy := func(name string) []int {
		var out []int
		for s := range shards {
			if ownerOf(s) == name {
				out = append(out, s)
			}
		}
		return out
	}

	// SIGKILL: the kernel closes the process's sockets, its probe's too.
	killed := procOf(ownerOf(0))
	lost := heldBy(killed.name)
	at := time.Now()
	killed.kill(syscall.SIGKILL)
	var took time.Duration
	waitFor(t, takeover+5*time.Second, "the killed replica's shards identified again", func() bool {
		for _, s := range lost {
			id, ok := f.identifiedSince(s, at)
			if !ok {
				return false
			}
			took = max(took, id.Sub(at))
		}
		return true
	})
	if took > takeover {
		t.Errorf("SIGKILL of %s: its shards %v identified again %s after, want within %s", killed.name, lost, took.Round(time.Millisecond), takeover)
	}
	t.Logf("SIGKILL of %s holding shards %v: identified again within %s (Discord's view of a silent connection: %s)",
		killed.name, lost, took.Round(time.Millisecond), 2*heartbeat)

	// SIGSTOP, twice: the process may wake with its sockets open, and
	// Discord keeps them for 82.5 s of silence. First Discord resumes the
	// sleeper's sessions for whoever claims its shards (as it does): the
	// RESUME moves each session off the sleeper's socket, the claimer
	// ends it and identifies, within 30 s of the pause, and a message
	// Discord sent to the sleeper is replayed and answered. Then Discord
	// refuses every RESUME: the claimer waits for Discord's view.
	pause := func(phase string, whilePaused func(lost []int)) (*chaosProc, []int, []int, time.Time, time.Time) {
		waitFor(t, takeover, "every shard connected before the pause "+phase, func() bool { return len(f.settled()) == shards })
		var paused *chaosProc
		for s := range shards {
			if o := ownerOf(s); o != "" && o != killed.name {
				paused = procOf(o)
				break
			}
		}
		if paused == nil {
			t.Fatal("no live replica owns a shard")
		}
		// The takeover needs a replica that runs: one that stopped by
		// itself would fail the wait for a reason of its own, named here.
		for _, r := range reps {
			if r != killed && r != paused && !strings.HasPrefix(r.state(), "running") {
				t.Fatalf("%s is not running before the pause (%s), so no replica is left to take %s's shards over; its log:\n%s",
					r.name, r.state(), paused.name, tailLog(filepath.Dir(r.cfg), r.starts))
			}
		}
		lost := heldBy(paused.name)
		old := f.openConns(lost)
		at := time.Now()
		if err := paused.proc.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		if whilePaused != nil {
			whilePaused(lost)
		}
		for deadline := time.Now().Add(takeover); ; time.Sleep(100 * time.Millisecond) {
			done := true
			for _, s := range lost {
				if o := ownerOf(s); o == "" || o == paused.name {
					done = false
				}
			}
			if done {
				break
			}
			if time.Now().After(deadline) {
				owners := make([]string, shards)
				for s := range owners {
					owners[s] = ownerOf(s)
				}
				var procs []string
				for _, r := range reps {
					procs = append(procs, r.name+" "+r.state())
				}
				t.Fatalf("%s: the paused replica %s's shards %v not claimed by another within %s: owners now %q, connected %v; processes: %s; shard leases: %s",
					phase, paused.name, lost, takeover, owners, f.connected(), strings.Join(procs, ", "), bucketKeys(ctx, skv))
			}
		}
		return paused, lost, old, at, time.Now()
	}

	// A user of a paused shard's server mentions the bot while its owner
	// sleeps: Discord sends it on the sleeper's socket.
	u := 0
	paused, lost, old, at, claimed := pause("(Discord resumes)", func(lost []int) {
		for !slices.Contains(lost, u%shards) {
			u++
		}
		if !f.mention(u, "while its owner sleeps") {
			t.Fatalf("shard %d has no connection in Discord's view right after its owner was paused", u%shards)
		}
	})
	took = 0
	waitFor(t, takeover+5*time.Second, "the paused replica's shards identified again", func() bool {
		for _, s := range lost {
			id, ok := f.readySince(s, at)
			if !ok {
				return false
			}
			took = max(took, id.Sub(at))
		}
		return true
	})
	if took > takeover {
		t.Errorf("SIGSTOP of %s: its shards %v identified again %s after the pause, want within %s", paused.name, lost, took.Round(time.Millisecond), takeover)
	}
	if !f.allClosed(old) {
		t.Errorf("SIGSTOP of %s: its connections %v are still open in Discord's view after its sessions were resumed elsewhere", paused.name, old)
	}
	waitFor(t, 2*takeover, "the message Discord sent to the paused replica answered", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.posts[f.channel(u)]) > 0
	})
	t.Logf("SIGSTOP of %s holding shards %v (connections %v): claimed %s after, resumed elsewhere and identified again %s after; the message it never read answered",
		paused.name, lost, old, claimed.Sub(at).Round(time.Millisecond), took.Round(time.Millisecond))
	// Woken, it sends nothing on its old sockets (twiceLocked below) and
	// serves again.
	if err := paused.proc.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	f.mu.Lock()
	f.refuseResume = true
	f.mu.Unlock()
	paused, lost, old, at, claimed = pause("(Discord refuses to resume)", nil)
	time.Sleep(stillWait)
	waited := true
	for _, s := range lost {
		if id, ok := f.identifiedSince(s, at); ok {
			waited = false
			t.Errorf("SIGSTOP of %s with RESUMEs refused: shard %d identified again %s after the pause, while its connection %v may be open in Discord's view (%s of silence)",
				paused.name, s, id.Sub(at).Round(time.Millisecond), old, 2*heartbeat)
		}
	}
	if waited {
		t.Logf("SIGSTOP of %s holding shards %v (connections %v), RESUMEs refused: claimed by %s %s after, not identified %s after the claim",
			paused.name, lost, old, ownerOf(lost[0]), claimed.Sub(at).Round(time.Millisecond), time.Since(claimed).Round(time.Millisecond))
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.twiceLocked() {
		t.Error(e)
	}
	t.Logf("%d sockets; %s in all", len(f.conns), time.Since(began).Round(time.Second))
}

// state tells whether the process runs, is stopped (SIGSTOP) or exited, as
// the kernel has it: for a failure's message and the test's premises.
func (r *chaosProc) state() string {
	select {
	case <-r.exited:
		return "exited (" + r.proc.ProcessState.String() + ")"
	default:
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.proc.Process.Pid))
	if err != nil {
		return "running (state unknown: " + err.Error() + ")"
	}
	// The state is the field after the command, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	switch {
	case len(f) == 0:
		return "running (state unknown)"
	case f[0] == "T" || f[0] == "t":
		return "stopped"
	case f[0] == "Z" || f[0] == "X":
		return "exited (not yet reaped)"
	}
	return "running (" + f[0] + ")"
}

// bucketKeys lists a lease bucket's keys (owner.<slot>, alive.<replica>)
// with their values and how long ago each was written, for a failure's
// message: a lease that outlived the bucket's TTL, or a replica that
// stopped announcing itself, shows there.
func bucketKeys(ctx context.Context, kv jetstream.KeyValue) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := kv.ListKeys(ctx)
	if err != nil {
		return err.Error()
	}
	var out []string
	for k := range l.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			out = append(out, k+" ("+err.Error()+")")
			continue
		}
		out = append(out, fmt.Sprintf("%s=%s (revision %d, written %s ago)", k, e.Value(), e.Revision(), time.Since(e.Created()).Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}
