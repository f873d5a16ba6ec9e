package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/cluster/natstest"
)

// TestChaosNATSRestartUnderLoad: three `talon run` processes on one
// PostgreSQL schema and an in-process NATS server owned by the test, Slack
// in events mode, users writing direct messages in two DMs each (two
// sessions of one person, on any replicas) with agent.max_turns_per_user
// 1. Twice under that load the NATS server stops for 2 s and starts again
// on the same port and store directory: the stream and the leases are kept
// on disk, the turn limit buckets (in the server's memory) are lost. The
// lease TTL is 6 s, so that the leases outlast the outage and the
// reconnection (as the default 15 s does), and a stall of a loaded machine
// rarely ends them. The users keep writing meanwhile. Then:
//   - every event Slack sent was answered within 3 s (Slack sends it again
//     after 3 s), but for at most 5% of the requests (a loaded machine),
//     and one sent again (after a failure or 3 s, or one event in eight
//     after its 200, as if the answer were lost) was taken once;
//   - every acknowledged message has exactly one reply, delivered, in the
//     order written per DM (at most one shown twice per restart, as the
//     SIGKILL chaos test allows one per kill), within 60 s of the load's
//     end;
//   - no tool call ran twice, and every one recorded as finished ran once;
//   - no replica exited, and every partition is owned by one of them;
//   - outside the outages (from 5 s after each start), no person had two
//     model calls at once, but for at most 2% of the calls: the per-person
//     limit holds across the replicas again once the replicas made the
//     lost buckets anew.
func TestChaosNATSRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three replicas and restarts NATS under them twice")
	}
	if os.Getenv("TALON_TEST_POSTGRES") == "" {
		t.Skip("TALON_TEST_POSTGRES is not set: set it (postgres://root@127.0.0.1:5432/test?sslmode=disable) to run the test of a NATS restart under three replicas (its NATS server is in process)")
	}
	const (
		replicas   = 3
		users      = 24
		restarts   = 2
		partitions = 8
		outage     = 2 * time.Second
		// settle: from a start of the server, the time within which the
		// replicas have reconnected (nats.go tries every 2 s) and made the
		// limit buckets again (their Run tries every TTL/4), and the turns
		// that ran under each replica's own bounds meanwhile have ended.
		settle = 5 * time.Second
	)
	dbURL, pool := postgresSchema(t)
	ns := natstest.NewRestartable(t)
	prefix := "hnatsbin"

	dir := t.TempDir()
	if d := os.Getenv("CHAOS_DEBUG_DIR"); d != "" {
		dir = d
	}
	// The tool's target counts each URL it is asked for.
	counter, toolsDir := newFetchTool(t, dir)
	setReplicaEnv(t, dbURL, ns.URL())

	// The model answers "answer to TEXT", after a call of http_fetch when
	// TEXT ends in " fetch"; each call takes 40-120 ms, and the calls are
	// recorded (TEXT starts with the person's "uNNN"), with the number of
	// messages sent: a turn resumed after an interruption sends the same
	// as before again.
	type call struct {
		text       string
		messages   int
		start, end time.Time
	}
	var (
		callsMu sync.Mutex
		calls   []call
	)
	model := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		start := time.Now()
		user := req.LastUserText()
		time.Sleep(time.Duration(40+rand.IntN(80)) * time.Millisecond)
		callsMu.Lock()
		calls = append(calls, call{user, len(req.Messages), start, time.Now()})
		callsMu.Unlock()
		if last := req.Messages[len(req.Messages)-1]; last.Role != llm.RoleTool && strings.HasSuffix(user, " fetch") {
			u := counter.URL + "/" + strings.TrimSuffix(user, " fetch")
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "http_fetch", Arguments: fmt.Sprintf(`{"url":%q}`, u)}}}
		}
		return llmtest.Response{Text: "answer to " + user}
	})
	fs := newFakeSlackAPI(t)

	reps := make([]*chaosReplica, replicas)
	for i := range reps {
		rdir := filepath.Join(dir, fmt.Sprintf("r%d", i))
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		r := &chaosReplica{name: fmt.Sprintf("natsrestart-%d", i), addr: freeAddr(t)}
		body := strings.Replace(baseConfig(filepath.Join(rdir, "data"), "openai", model.URL), `listen: ""`, "listen: "+r.addr, 1)
		body = strings.Replace(body, "level: debug", "level: info", 1)
		body += "  max_turns_per_user: 1\n" + // under baseConfig's agent:
			slackSection("events", fs.url()) +
			"store:\n  driver: postgres\n  url: ${DATABASE_URL}\nmemory:\n  enabled: false\nroutines:\n  enabled: false\n" +
			fmt.Sprintf("nats:\n  url: ${NATS_URL}\n  partitions: %d\n  lease_ttl: 6s\n  replica: %s\n  prefix: %s\n", partitions, r.name, prefix) +
			fmt.Sprintf("sandbox:\n  tools_dir: %s\n  allow_private: [127.0.0.1/32]\n", toolsDir)
		r.cfg = writeConfig(t, rdir, body)
		reps[i] = r
	}
	defer killReplicas(t, reps)
	began := time.Now()
	for _, r := range reps {
		r.start(t)
	}
	for _, r := range reps {
		r.ready(t)
	}
	// The partitions spread over the three (the first ready takes them
	// all, then gives up the others' share), so that the load meets the
	// replicas as they run, not as they start.
	ctx := context.Background()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var kv jetstream.KeyValue
	owners := map[string]int{}
	spread := func() bool {
		if kv == nil {
			if kv, err = js.KeyValue(ctx, prefix+"_partitions"); err != nil {
				kv = nil
				return false
			}
		}
		clear(owners)
		for p := range partitions {
			e, err := kv.Get(ctx, fmt.Sprintf("owner.%d", p))
			if err != nil {
				return false
			}
			owners[string(e.Value())]++
		}
		return len(owners) == replicas && !slices.ContainsFunc(reps, func(r *chaosReplica) bool { return owners[r.name] < partitions/replicas })
	}
	waitFor(t, time.Minute, "the partitions spread over the replicas", spread)
	t.Logf("three replicas ready in %s, the partitions spread %v", time.Since(began).Round(time.Millisecond), owners)
	began = time.Now()

	// The users: each writes one message to each of its two DMs at once,
	// to replicas chosen at random, and the next two once Slack has both
	// acknowledgements. Each request's answer is timed, and waited for
	// 3 s, as Slack does; an event that fails or is not answered by then is
	// sent again, with the same event id, to a replica at random, as Slack
	// retries.
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * users}}
	var (
		stop      atomic.Bool
		down      atomic.Bool // the NATS server is stopped
		retried   atomic.Int64
		resent    atomic.Int64 // events sent again after their 200, as Slack does when it did not get it
		lost      atomic.Int64
		sent      atomic.Int64
		duringOut atomic.Int64 // messages acknowledged while the server was stopped
		acceptMu  sync.Mutex
		accepted  = map[string][]string{} // DM → texts acknowledged, in the order written
		slowest   time.Duration           // guarded by acceptMu
		slowestAt string                  // when it was sent, after the start; guarded by acceptMu
		slowAcks  []string                // guarded by acceptMu
		writers   sync.WaitGroup
	)
	send := func(u, m int, channel, text string) bool {
		body, _ := json.Marshal(map[string]any{
			"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": fmt.Sprintf("Ev%s_%d", channel, m), "event_time": time.Now().Unix(),
			"event": map[string]any{"type": "message", "channel": channel, "channel_type": "im", "user": fmt.Sprintf("U%03d", u),
				"ts": fmt.Sprintf("%d.%06d", 1700000000+m, u), "event_ts": fmt.Sprintf("%d.%06d", 1700000000+m, u), "text": text},
		})
		acked := false
		for attempt := 0; attempt < 5; attempt++ {
			r := reps[rand.IntN(replicas)]
			req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+"/slack/events", bytes.NewReader(body))
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Slack-Request-Timestamp", ts)
			req.Header.Set("X-Slack-Signature", signSlack(testSigningSecret, ts, body))
			if attempt > 0 {
				req.Header.Set("X-Slack-Retry-Num", strconv.Itoa(attempt))
				retried.Add(1)
			}
			sent.Add(1)
			wasDown := down.Load()
			start := time.Now()
			resp, err := client.Do(req)
			took := time.Since(start)
			acceptMu.Lock()
			if took > slowest {
				slowest, slowestAt = took, fmt.Sprintf("%s after the start, NATS %s", start.Sub(began).Round(time.Millisecond), map[bool]string{true: "stopped", false: "up"}[wasDown])
			}
			if took >= 3*time.Second {
				slowAcks = append(slowAcks, fmt.Sprintf("%s (attempt %d, %v): %s", text, attempt, err, took.Round(time.Millisecond)))
			}
			acceptMu.Unlock()
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					if wasDown && down.Load() && !acked {
						duringOut.Add(1)
					}
					if attempt == 0 && rand.IntN(8) == 0 {
						// As if the acknowledgement were lost on its
						// way: Slack sends the event again, to any
						// replica, and it must be taken once.
						acked = true
						resent.Add(1)
						continue
					}
					return true
				}
			}
			time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
		}
		if acked {
			return true
		}
		lost.Add(1)
		return false
	}
	for u := range users {
		writers.Go(func() {
			time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
			for m := 0; !stop.Load(); m++ {
				var both sync.WaitGroup
				for _, dm := range []string{"A", "B"} {
					both.Go(func() {
						channel := fmt.Sprintf("D%03d%s", u, dm)
						text := fmt.Sprintf("u%03d-%s-m%d", u, dm, m)
						if rand.IntN(5) == 0 {
							text += " fetch"
						}
						if send(u, m, channel, text) {
							acceptMu.Lock()
							accepted[channel] = append(accepted[channel], text)
							acceptMu.Unlock()
						}
					})
				}
				both.Wait()
				time.Sleep(time.Duration(800+rand.IntN(1200)) * time.Millisecond)
			}
		})
	}
	posted := func() int {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return len(fs.posts)
	}
	waitFor(t, time.Minute, "the first 50 replies", func() bool { return posted() >= 50 })

	// The restarts, each after a stretch of load. limited are the spans
	// in which the buckets are known to be there: from the load's start to
	// the first stop, and from settle after each start to the next stop
	// (or the load's end).
	type span struct{ from, to time.Time }
	limited := []span{{from: began}}
	var backAt time.Time
	for k := range restarts {
		time.Sleep(time.Duration(1500+rand.IntN(1500)) * time.Millisecond)
		before := posted()
		down.Store(true)
		limited[len(limited)-1].to = time.Now()
		ns.Stop()
		time.Sleep(outage)
		ns.Start()
		down.Store(false)
		backAt = time.Now()
		limited = append(limited, span{from: backAt.Add(settle)})
		t.Logf("restart %d: NATS stopped for %s at %s after the start, after %d replies posted", k+1, outage, limited[len(limited)-2].to.Sub(began).Round(time.Millisecond), before)
	}
	repliesAtBack := posted()
	time.Sleep(settle + 3*time.Second)
	stop.Store(true)
	writers.Wait()
	loadEnded := time.Now()
	limited[len(limited)-1].to = loadEnded
	if posted() <= repliesAtBack {
		t.Errorf("no reply posted in the %s after the last restart", time.Since(backAt).Round(time.Millisecond))
	}

	// Everything accepted is answered and delivered.
	for drained := time.Now().Add(60 * time.Second); ; {
		var open int
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM inbound WHERE state IN ('queued', 'running'))
			+ (SELECT count(*) FROM outbound WHERE state = 'pending')`).Scan(&open)
		if err == nil && open == 0 {
			break
		}
		if time.Now().After(drained) {
			for _, r := range reps {
				_ = r.proc.Process.Signal(syscall.SIGQUIT)
				<-r.exited
			}
			t.Fatalf("%d messages or replies still open 60 s after the load stopped", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("drained %s after the load stopped", time.Since(loadEnded).Round(time.Millisecond))

	for _, r := range reps {
		select {
		case <-r.exited:
			t.Errorf("replica %s exited:\n%s", r.name, r.lastLog())
		default:
		}
	}

	// Slack's acknowledgements: every event taken, within 3 s but for a
	// few (a loaded machine can hold a request that long: up to 3% of them
	// at load 13 here; a replica that waited for NATS while it was stopped
	// would hold every event of the outage, a fifth of them), those sent
	// again and taken once (the store, below).
	acceptMu.Lock()
	if len(slowAcks)*20 > int(sent.Load()) || lost.Load() > 0 {
		t.Errorf("%d of %d requests not answered within 3 s (Slack sends them again), %d events given up after 5 tries: %q", len(slowAcks), sent.Load(), lost.Load(), slowAcks)
	}
	acceptMu.Unlock()
	if duringOut.Load() == 0 || resent.Load() == 0 {
		t.Fatalf("%d messages acknowledged while NATS was stopped, %d events sent again after their 200: the test proves too little", duringOut.Load(), resent.Load())
	}

	// The store: one delivered reply per accepted message.
	type stored struct {
		id                          int64
		text, state                 string
		replies, delivered, replyID int64
	}
	rows, err := pool.Query(ctx, `SELECT i.id, i.text, i.state,
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id),
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id AND o.state = 'delivered'),
			coalesce((SELECT min(o.id) FROM outbound o WHERE o.inbound_id = i.id), 0)
		FROM inbound i ORDER BY i.id`)
	if err != nil {
		t.Fatal(err)
	}
	byText := map[string]stored{}
	for rows.Next() {
		var s stored
		if err := rows.Scan(&s.id, &s.text, &s.state, &s.replies, &s.delivered, &s.replyID); err != nil {
			t.Fatal(err)
		}
		if _, dup := byText[s.text]; dup {
			t.Errorf("message %q is in the store twice", s.text)
		}
		byText[s.text] = s
		if s.state != "done" || s.replies != 1 || s.delivered != 1 {
			t.Errorf("inbound %d %q: state %s, %d replies, %d delivered; want done, 1, 1", s.id, s.text, s.state, s.replies, s.delivered)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	// Slack: each DM shows the answers once, in the order written.
	fs.mu.Lock()
	shown := map[string][]string{}
	for _, p := range fs.posts {
		shown[p.Get("channel")] = append(shown[p.Get("channel")], p.Get("text"))
	}
	fs.mu.Unlock()
	total, toolTurns, duplicates := 0, 0, 0
	for u := range users {
		for _, dm := range []string{"A", "B"} {
			channel := fmt.Sprintf("D%03d%s", u, dm)
			want := accepted[channel]
			total += len(want)
			for _, text := range want {
				if _, ok := byText[text]; !ok {
					t.Errorf("message %q was acknowledged but is not in the store", text)
				}
				if strings.HasSuffix(text, " fetch") {
					toolTurns++
				}
			}
			var got []string
			seen := map[string]bool{}
			for _, text := range shown[channel] {
				if seen[text] {
					// A reply whose replica lost its lease while it was
					// posting it (a stall of the loaded machine), posted
					// again by the next owner, which could not see it yet.
					duplicates++
					t.Logf("visible duplicate in %s: %q", channel, text)
					continue
				}
				seen[text] = true
				got = append(got, strings.TrimPrefix(text, "answer to "))
			}
			// The store may hold a message whose acknowledgement never
			// came: it is answered too, in its place.
			var inStore []string
			for text := range byText {
				if strings.HasPrefix(text, fmt.Sprintf("u%03d-%s-", u, dm)) {
					inStore = append(inStore, text)
				}
			}
			slices.SortFunc(inStore, func(a, b string) int { return int(byText[a].id - byText[b].id) })
			if !slices.Equal(got, inStore) {
				t.Errorf("%s: replies shown %q\nwant, once each in the order written: %q", channel, got, inStore)
				dumpSession(t, pool, fmt.Sprintf("U%03d", u))
			}
			for i, text := range want {
				if i > 0 && byText[want[i-1]].replyID >= byText[text].replyID {
					t.Errorf("%s: %q answered before %q", channel, text, want[i-1])
				}
			}
		}
	}
	if duplicates > restarts {
		t.Errorf("%d visible duplicates, want at most one per restart", duplicates)
	}
	if total < 200 || toolTurns == 0 {
		t.Fatalf("only %d messages acknowledged (%d with a tool call): the test did not load the replicas", total, toolTurns)
	}

	// Tools: nothing ran twice; everything recorded as finished ran once.
	rows, err = pool.Query(ctx, `SELECT arguments, state, is_error, result FROM tool_calls WHERE name = 'http_fetch'`)
	if err != nil {
		t.Fatal(err)
	}
	recorded, finished, interrupted := map[string]string{}, 0, 0
	for rows.Next() {
		var (
			args, state, result string
			isError             bool
		)
		if err := rows.Scan(&args, &state, &isError, &result); err != nil {
			t.Fatal(err)
		}
		var a struct{ URL string }
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			t.Fatalf("tool call arguments %q: %v", args, err)
		}
		path := strings.TrimPrefix(a.URL, counter.URL)
		if _, dup := recorded[path]; dup {
			t.Errorf("two tool calls recorded for %s", path)
		}
		// A call whose turn moved to another replica (its lease lost
		// while NATS was stopped) is recorded as interrupted by the
		// replica that resumed the turn, and not run again.
		switch {
		case state == "finished" && isError && strings.HasPrefix(result, "interrupted: "):
			state = "interrupted"
			interrupted++
		case state == "finished" && isError:
			t.Errorf("tool call %s failed: %.300s", path, result)
		case state == "finished":
			finished++
		}
		recorded[path] = state
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	counter.mu.Lock()
	for path, n := range counter.hits {
		if n > 1 {
			t.Errorf("tool call %s ran %d times", path, n)
		}
		if _, ok := recorded[path]; !ok {
			t.Errorf("tool call %s ran but is not recorded", path)
		}
	}
	for path, state := range recorded {
		if state == "finished" && counter.hits[path] != 1 {
			t.Errorf("tool call %s recorded as finished ran %d times", path, counter.hits[path])
		}
	}
	counter.mu.Unlock()
	if finished == 0 {
		t.Error("no tool call finished")
	}

	// The per-person limit: no two model calls of one person at once,
	// though each person's two DMs are written at the same moment and
	// their sessions run on any replica. Counted are the turns that ran
	// from their first model call to their last within one span where the
	// buckets were there, and were not interrupted and resumed (an
	// interrupted call's handler here sleeps on after the turn let its
	// slot go): a turn that ran across an outage held no slot in the
	// buckets made anew, and may overlap another until it ends, as the
	// limits allow (Limits in cluster).
	type turn struct {
		start, end time.Time
		seen       map[int]bool // the calls' message counts
		resumed    bool
	}
	callsMu.Lock()
	turns := map[string]*turn{}
	for _, c := range calls {
		tu := turns[c.text]
		if tu == nil {
			tu = &turn{start: c.start, end: c.end, seen: map[int]bool{}}
			turns[c.text] = tu
		}
		tu.start, tu.end = minTime(tu.start, c.start), maxTime(tu.end, c.end)
		tu.resumed = tu.resumed || tu.seen[c.messages]
		tu.seen[c.messages] = true
	}
	byUser := map[string][]call{}
	for _, c := range calls {
		tu := turns[c.text]
		if !tu.resumed && slices.ContainsFunc(limited, func(s span) bool { return !tu.start.Before(s.from) && !tu.end.After(s.to) }) {
			byUser[c.text[:4]] = append(byUser[c.text[:4]], c)
		}
	}
	callsMu.Unlock()
	checked, overlaps := 0, 0
	for user, cs := range byUser {
		slices.SortFunc(cs, func(a, b call) int { return a.start.Compare(b.start) })
		end := cs[0].end
		for _, c := range cs[1:] {
			checked++
			if c.start.Before(end) {
				overlaps++
				if overlaps <= 5 {
					t.Logf("%s had two model calls at once at %s, outside the outages", user, c.start.Sub(began).Round(time.Millisecond))
				}
			}
			end = maxTime(end, c.end)
		}
	}
	// A few may: a replica stalled for a TTL (the loaded machine) loses
	// its turns' slots, and its turns run on without them (the limits are
	// a bound on load, not a safety property): 1 of 219 and 1 of 270 in
	// two of 15 runs at load 10-13. Buckets left unmade after the restart
	// make 13-16% overlap (max_turns_per_user 2: 23 of 178, 63 of 391).
	if overlaps*50 > checked {
		t.Errorf("%d of %d model calls overlapped the person's previous one outside the outages (max_turns_per_user: 1), more than 2%%", overlaps, checked)
	}

	// Every partition is owned by a live replica.
	waitFor(t, 30*time.Second, "every partition owned", func() bool { spread(); return len(owners) > 0 && sumOwned(owners) == partitions })
	for name := range owners {
		if !slices.ContainsFunc(reps, func(r *chaosReplica) bool { return r.name == name }) {
			t.Errorf("a partition is owned by %q, not a replica", name)
		}
	}
	acceptMu.Lock()
	defer acceptMu.Unlock()
	t.Logf("%d users x 2 DMs, %d restarts of NATS (%s each): %d messages acknowledged (%d while NATS was stopped), %d requests, %d not answered within 3 s, %d sent again (%d after a 200), %d given up, slowest answer %s (sent %s); "+
		"%d in the store, each answered once, %d visible duplicates; %d tool calls recorded (%d finished, %d interrupted); %d model calls checked against the per-person limit (%d overlapping); partitions by owner %v; %s in all",
		users, restarts, outage, total, duringOut.Load(), sent.Load(), len(slowAcks), retried.Load(), resent.Load(), lost.Load(), slowest.Round(time.Millisecond), slowestAt,
		len(byText), duplicates, len(recorded), finished, interrupted, checked, overlaps, owners, time.Since(began).Round(time.Second))
}

func sumOwned(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
