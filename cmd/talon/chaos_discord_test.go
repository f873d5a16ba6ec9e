package main

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestChaosDiscordShardsUnderSIGKILL is issue 15's proof for Discord's
// sharded gateway: three `talon run` processes on one PostgreSQL schema and
// the machine's NATS, discord.shards: auto against a fake Discord that
// recommends 4 shards (max_concurrency 4) and speaks the gateway protocol
// to them, users mentioning the bot in servers spread over every shard, and
// the process owning a shard killed with SIGKILL three times (started again
// at once) and once paused with SIGSTOP for longer than its lease, then
// woken. The fake plays Discord's view: a connection is a shard's from its
// IDENTIFY (or RESUME) until its socket closes or it has sent nothing for
// two heartbeat intervals (then Discord drops it). At the end:
//   - no shard was ever connected twice at one instant;
//   - after each kill and during the pause, every shard of that process
//     was identified again by a live one within 30 s;
//   - the paused process sent nothing on its old connections after their
//     shards were identified elsewhere, and closed them on waking;
//   - every shard is connected at the end, each by one process;
//   - every message the fake delivered that reached the store was
//     answered exactly once, in order per user; one delivered and never
//     accepted went to a connection that ended (a kill, the pause) within
//     seconds after it.
func TestChaosDiscordShardsUnderSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three replicas, kills them three times and pauses one")
	}
	natsURL := needPostgresAndNATS(t, "the chaos test of Discord shards")
	const (
		replicas  = 3
		shards    = 4
		users     = 24
		kills     = 3
		heartbeat = 2 * time.Second
		takeover  = 30 * time.Second
	)
	dbURL, pool := postgresSchema(t)
	prefix := natsPrefix(t, natsURL)
	model := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		return llmtest.Response{Text: "answer to " + req.LastUserText(), Delay: time.Duration(rand.IntN(20)) * time.Millisecond}
	})
	f := newShardedDiscord(t, shards, heartbeat)

	dir := t.TempDir()
	if d := os.Getenv("CHAOS_DEBUG_DIR"); d != "" {
		dir = d
	}
	t.Setenv("DATABASE_URL", dbURL)
	t.Setenv("NATS_URL", natsURL)
	reps := discordReplicas(t, f, model.URL, dir, "chaos-d", replicas, "store:\n  driver: postgres\n  url: ${DATABASE_URL}\n", 8, prefix)
	defer func() {
		for _, r := range reps {
			r.kill(syscall.SIGKILL)
		}
		if t.Failed() && os.Getenv("CHAOS_DEBUG_DIR") == "" {
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
	t.Logf("three replicas ready and %d shards connected in %s", shards, time.Since(began).Round(time.Millisecond))

	// NATS: which replica holds each shard's lease.
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
		return nil
	}

	// The users: each mentions the bot in a channel of its own in a
	// server on shard u mod 4, one message at a time: the next once the
	// answer came (or 20 s passed), a little later.
	var (
		stop   atomic.Bool
		usersG sync.WaitGroup
	)
	for u := range users {
		usersG.Go(func() {
			time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
			for m := 0; !stop.Load(); m++ {
				text := fmt.Sprintf("u%02d-m%d", u, m)
				for !stop.Load() && !f.mention(u, text) {
					time.Sleep(50 * time.Millisecond) // the shard is down
				}
				for deadline := time.Now().Add(20 * time.Second); !stop.Load() && time.Now().Before(deadline) && !f.answered(u, text); {
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond)
			}
		})
	}
	waitFor(t, time.Minute, "the first 50 answers", func() bool { return f.postCount() >= 50 })

	// retaken waits until every shard in lost is identified by a
	// connection opened after at, and returns how long after at.
	retaken := func(what string, lost []int, at time.Time) time.Duration {
		t.Helper()
		var took time.Duration
		waitFor(t, takeover+10*time.Second, what+": its shards identified again", func() bool {
			took = 0
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
			t.Errorf("%s: its shards %v identified again %s after, want within %s", what, lost, took.Round(time.Millisecond), takeover)
		}
		return took
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
	for k := range kills {
		time.Sleep(time.Duration(1500+rand.IntN(2000)) * time.Millisecond)
		r := procOf(ownerOf(rand.IntN(shards)))
		if r == nil {
			t.Fatalf("kill %d: a shard is owned by no replica", k+1)
		}
		lost := heldBy(r.name)
		at := time.Now()
		r.kill(syscall.SIGKILL)
		r.start()
		took := retaken(fmt.Sprintf("kill %d of %s", k+1, r.name), lost, at)
		t.Logf("kill %d: SIGKILL of %s holding shards %v; identified again within %s", k+1, r.name, lost, took.Round(time.Millisecond))
		r.ready()
	}

	// The pause: the owner of a shard sleeps past its lease; the others
	// take its shards; woken, it must drop its old connections without
	// sending anything on them.
	time.Sleep(2 * time.Second)
	paused := procOf(ownerOf(rand.IntN(shards)))
	if paused == nil {
		t.Fatal("pause: a shard is owned by no replica")
	}
	lost := heldBy(paused.name)
	old := f.openConns(lost)
	at := time.Now()
	if err := paused.proc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	took := retaken("pause of "+paused.name, lost, at)
	time.Sleep(time.Until(at.Add(2 * 3 * time.Second))) // asleep for two lease TTLs at least
	if err := paused.proc.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	woke := time.Now()
	waitFor(t, 15*time.Second, "the woken replica closes its old connections", func() bool { return f.allClosed(old) })
	t.Logf("pause: SIGSTOP of %s holding shards %v (connections %v); identified elsewhere within %s; woken after %s, old connections closed %s later",
		paused.name, lost, old, took.Round(time.Millisecond), woke.Sub(at).Round(time.Millisecond), time.Since(woke).Round(time.Millisecond))
	paused.ready()

	time.Sleep(3 * time.Second)
	stop.Store(true)
	usersG.Wait()
	loadEnded := time.Now()

	// Every message accepted is answered and delivered.
	for drained := time.Now().Add(45 * time.Second); ; {
		var open int
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM inbound WHERE state IN ('queued', 'running'))
			+ (SELECT count(*) FROM outbound WHERE state = 'pending')`).Scan(&open)
		if err == nil && open == 0 {
			break
		}
		if time.Now().After(drained) {
			t.Fatalf("%d messages or replies still open 45 s after the load stopped", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("drained %s after the load stopped", time.Since(loadEnded).Round(time.Millisecond))
	waitFor(t, takeover, "every shard connected at the end, by one process each", func() bool {
		c := f.connected()
		if len(c) != shards {
			return false
		}
		for s := range shards {
			if procOf(ownerOf(s)) == nil {
				return false
			}
		}
		return true
	})

	// The store: one delivered reply for each message accepted.
	type stored struct {
		id                 int64
		state              string
		replies, delivered int64
	}
	rows, err := pool.Query(ctx, `SELECT i.id, i.dedupe_key, i.state,
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id),
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id AND o.state = 'delivered')
		FROM inbound i ORDER BY i.id`)
	if err != nil {
		t.Fatal(err)
	}
	byMsg := map[string]stored{} // Discord message id → its row
	for rows.Next() {
		var s stored
		var dedupe string
		if err := rows.Scan(&s.id, &dedupe, &s.state, &s.replies, &s.delivered); err != nil {
			t.Fatal(err)
		}
		byMsg[strings.TrimPrefix(dedupe, "discord:")] = s
		if s.state != "done" || s.replies != 1 || s.delivered != 1 {
			t.Errorf("inbound %d (%s): state %s, %d replies, %d delivered; want done, 1, 1", s.id, dedupe, s.state, s.replies, s.delivered)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	// The fake: what it delivered, what it saw answered, its connections.
	f.mu.Lock()
	defer f.mu.Unlock()
	delivered, accepted, lostWithConn, duplicates := 0, 0, 0, 0
	for u := range users {
		var want []string
		for _, d := range f.sent[u] {
			delivered++
			if _, ok := byMsg[d.id]; ok {
				accepted++
				want = append(want, d.text)
				continue
			}
			// Never accepted: its connection must have ended (a kill, the
			// pause) within 2 heartbeats and a second after it.
			c := f.conns[d.conn]
			if end, ok := c.end(f.silence); !ok || end.Sub(d.at) > f.silence+time.Second {
				t.Errorf("user %d: %q was delivered on connection %d, which lived on, and never accepted", u, d.text, d.conn)
			}
			lostWithConn++
		}
		var got []string
		seen := map[string]bool{}
		for _, text := range f.posts[f.channel(u)] {
			if seen[text] {
				duplicates++
				t.Logf("visible duplicate in %s: %q", f.channel(u), text)
				continue
			}
			seen[text] = true
			got = append(got, strings.TrimPrefix(text, "answer to "))
		}
		if !slices.Equal(got, want) {
			t.Errorf("user %d: answers shown %q\nwant, in the order written: %q", u, got, want)
		}
	}
	if duplicates > kills+1 {
		t.Errorf("%d visible duplicates over %d kills and a pause, want at most one each", duplicates, kills)
	}
	if accepted < 200 {
		t.Errorf("only %d messages accepted: the test did not load the replicas", accepted)
	}

	// At every instant at most one connection of a shard, in Discord's
	// view; nothing sent on a connection after its shard was identified
	// on another.
	for _, e := range f.twiceLocked() {
		t.Error(e)
	}
	identifies := 0
	for _, c := range f.conns {
		if !c.identified.IsZero() {
			identifies++
			if c.count != shards {
				t.Errorf("connection %d identified shard [%d, %d], want a count of %d", c.id, c.shard, c.count, shards)
			}
		}
	}
	t.Logf("%d users over %d shards, %d kills and a pause: %d messages delivered by the fake, %d accepted and answered once in order, %d lost with a killed or paused connection, "+
		"%d visible duplicates; %d shard connections identified (%d sockets in all); %s in all",
		users, shards, kills, delivered, accepted, lostWithConn, duplicates, identifies, len(f.conns), time.Since(began).Round(time.Second))
}

func fmtEnd(t time.Time, ok bool) string {
	if !ok {
		return "never"
	}
	return t.Format("15:04:05.000")
}

// chaosProc is one `talon run` process of a chaos test.
type chaosProc struct {
	t               *testing.T
	name, cfg, addr string
	proc            *exec.Cmd
	exited          chan struct{}
	starts          int
}

// start runs the process, its output to run<N>.log beside its config.
func (r *chaosProc) start() {
	r.t.Helper()
	r.starts++
	logf, err := os.Create(filepath.Join(filepath.Dir(r.cfg), fmt.Sprintf("run%d.log", r.starts)))
	if err != nil {
		r.t.Fatal(err)
	}
	r.proc = exec.Command(os.Args[0], "run", "--config", r.cfg)
	r.proc.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	r.proc.Stdin = strings.NewReader("")
	r.proc.Stdout, r.proc.Stderr = logf, logf
	if err := r.proc.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan struct{})
	r.exited = exited
	go func(c *exec.Cmd) {
		_ = c.Wait()
		logf.Close()
		close(exited)
	}(r.proc)
}

// ready waits until /readyz answers 200.
func (r *chaosProc) ready() {
	r.t.Helper()
	waitReady(r.t, r.name, r.addr, r.exited, func() string { return tailLog(filepath.Dir(r.cfg), r.starts) })
}

// kill sends sig (SIGKILL) to a running process and waits for its end.
func (r *chaosProc) kill(sig syscall.Signal) {
	if r.proc == nil {
		return
	}
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.proc.Process.Signal(syscall.SIGCONT) // a paused one dies too
	_ = r.proc.Process.Signal(sig)
	<-r.exited
}

// shardedDiscord is Discord on 127.0.0.1 as a sharded bot meets it: GET
// /gateway/bot recommends its shard count (max_concurrency the same, so
// that each shard identifies in a bucket of its own); the gateway says
// HELLO with a heartbeat interval, answers IDENTIFY with READY and RESUME
// with RESUMED, acknowledges heartbeats, and records every frame each
// connection sends; the REST API records the answers posted and reads a
// channel's messages back. A connection that sent nothing for silence (two
// heartbeat intervals) is dropped in Discord's view: no more events or
// acknowledgements (its socket stays open, so that the test sees what it
// would still send). A session is served on one connection: a RESUME
// replays the session's events after the sequence number it gives, then
// says RESUMED, and closes the connection that served the session until
// then, if it is still open; a clean close (1000, 1001) ends the session.
// With refuseResume set, every RESUME is answered op 9 (not resumable).
type shardedDiscord struct {
	srv     *httptest.Server
	shards  int
	hb      time.Duration
	silence time.Duration

	mu    sync.Mutex
	conns []*fakeShardConn        // every socket, by id; guarded by mu
	sess  map[string]*fakeSession // session id → its state; guarded by mu
	// refuseResume answers every RESUME with op 9; guarded by mu
	refuseResume bool
	posts        map[string][]string     // channel → contents posted, in order; guarded by mu
	sent         map[int][]fakeDelivered // user → messages delivered, in order; guarded by mu
	seq          int64                   // guarded by mu
}

// fakeSession is a gateway session: its shard, the connection serving it,
// the events sent in it (for a RESUME's replay), and whether it ended.
type fakeSession struct {
	shard  int
	conn   *fakeShardConn
	events []map[string]any
	ended  bool
}

// fakeShardConn is one gateway socket.
type fakeShardConn struct {
	session      string // the session it serves, once identified or resumed
	resumed      bool   // it served its session through a RESUME
	id           int
	ws           *websocket.Conn
	wmu          sync.Mutex // serialises writes to ws
	shard, count int        // from IDENTIFY (or the resumed session); shard -1 before
	identified   time.Time  // IDENTIFY or RESUME received; zero before
	last         time.Time  // the last frame received
	dropped      time.Time  // Discord's view ended: silent for silence
	closed       time.Time  // the socket ended
	frames       []fakeFrame
}

type fakeFrame struct {
	op int
	at time.Time
}

type fakeDelivered struct {
	id, text string
	conn     int
	at       time.Time
}

// end is when the connection stopped being its shard's in Discord's view:
// its socket closed or it went silent, whichever came first.
func (c *fakeShardConn) end(silence time.Duration) (time.Time, bool) {
	var end time.Time
	for _, t := range []time.Time{c.closed, c.dropped} {
		if !t.IsZero() && (end.IsZero() || t.Before(end)) {
			end = t
		}
	}
	return end, !end.IsZero()
}

func newShardedDiscord(t *testing.T, shards int, hb time.Duration) *shardedDiscord {
	t.Helper()
	f := &shardedDiscord{shards: shards, hb: hb, silence: 2 * hb, sess: map[string]*fakeSession{},
		posts: map[string][]string{}, sent: map[int][]fakeDelivered{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws/", f.socket)
	mux.HandleFunc("/api/v9/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		path := strings.TrimPrefix(r.URL.Path, "/api/v9/")
		parts := strings.Split(path, "/")
		switch {
		case path == "gateway":
			fmt.Fprintf(w, `{"url":"ws://%s/ws"}`, r.Host)
		case path == "gateway/bot":
			fmt.Fprintf(w, `{"url":"ws://%s/ws","shards":%d,"session_start_limit":{"total":1000,"remaining":1000,"reset_after":0,"max_concurrency":%d}}`,
				r.Host, shards, shards)
		case r.Method == "POST" && len(parts) == 3 && parts[0] == "channels" && parts[2] == "messages":
			raw, _ := io.ReadAll(r.Body)
			var body struct {
				Content string `json:"content"`
			}
			_ = json.Unmarshal(raw, &body)
			f.mu.Lock()
			f.posts[parts[1]] = append(f.posts[parts[1]], body.Content)
			id := f.snowflakeLocked()
			f.mu.Unlock()
			fmt.Fprintf(w, `{"id":%q,"channel_id":%q,"author":{"id":"100","bot":true}}`, id, parts[1])
		case r.Method == "POST" && len(parts) == 3 && parts[0] == "channels" && parts[2] == "typing":
			w.WriteHeader(http.StatusNoContent)
		case r.Method == "GET" && len(parts) == 3 && parts[0] == "channels" && parts[2] == "messages":
			f.readBack(w, parts[1], r.URL.Query().Get("after"))
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"404: Not Found","code":0}`)
		}
	})
	f.srv = httptest.NewServer(mux)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // Discord drops the connections that went silent
		defer close(done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			f.mu.Lock()
			for _, c := range f.conns {
				f.dropIfSilentLocked(c, time.Now())
			}
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		f.mu.Lock()
		for _, c := range f.conns {
			c.ws.Close()
		}
		f.mu.Unlock()
		f.srv.Close()
	})
	return f
}

// dropIfSilentLocked ends c in Discord's view when it has sent nothing for
// silence: at its last frame plus silence, not when this noticed.
func (f *shardedDiscord) dropIfSilentLocked(c *fakeShardConn, now time.Time) {
	if c.dropped.IsZero() && c.closed.IsZero() && now.Sub(c.last) > f.silence {
		c.dropped = c.last.Add(f.silence)
	}
}

// snowflakeLocked returns a new id, increasing, with the time in it.
func (f *shardedDiscord) snowflakeLocked() string {
	f.seq++
	return strconv.FormatInt((time.Now().UnixMilli()-1420070400000)<<22|(f.seq&0x3fffff), 10)
}

// guild is a server whose events Discord sends on shard s: (id >> 22) mod
// the count.
func (f *shardedDiscord) guild(s int) string { return strconv.FormatInt(int64(s+f.shards)<<22, 10) }

// channel is user u's channel, in the server of shard u mod the count.
func (f *shardedDiscord) channel(u int) string { return strconv.Itoa(700000 + u) }

func (f *shardedDiscord) socket(w http.ResponseWriter, r *http.Request) {
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	f.mu.Lock()
	c := &fakeShardConn{id: len(f.conns), ws: ws, shard: -1, last: time.Now()}
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	write := func(v any) {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = ws.WriteJSON(v)
	}
	write(map[string]any{"op": 10, "d": map[string]any{"heartbeat_interval": f.hb.Milliseconds()}})
	for {
		var fr struct {
			Op int `json:"op"`
			D  struct {
				Shard     []int  `json:"shard"`
				SessionID string `json:"session_id"`
				Seq       int64  `json:"seq"`
			} `json:"d"`
		}
		_, data, err := ws.ReadMessage()
		now := time.Now()
		f.mu.Lock()
		if err != nil {
			if c.closed.IsZero() {
				c.closed = now
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway) {
				if ss := f.sess[c.session]; ss != nil && ss.conn == c {
					ss.ended = true
				}
			}
			f.mu.Unlock()
			return
		}
		f.dropIfSilentLocked(c, now)
		c.last = now
		_ = json.Unmarshal(data, &fr)
		c.frames = append(c.frames, fakeFrame{fr.Op, now})
		alive := c.dropped.IsZero()
		var reply []any
		var moved *fakeShardConn
		switch {
		case !alive:
			// Dropped: Discord does not answer any more.
		case fr.Op == 1:
			reply = append(reply, map[string]any{"op": 11})
		case fr.Op == 2 && len(fr.D.Shard) == 2:
			c.shard, c.count, c.identified = fr.D.Shard[0], fr.D.Shard[1], now
			id := fmt.Sprintf("sess-%d", c.id)
			f.sess[id] = &fakeSession{shard: c.shard, conn: c}
			c.session = id
			reply = append(reply, map[string]any{"op": 0, "t": "READY", "s": 1, "d": map[string]any{
				"v": 10, "session_id": id, "resume_gateway_url": "ws://" + r.Host + "/ws/",
				"user": map[string]any{"id": "100", "username": "talon", "bot": true}, "application": map[string]any{"id": "200"},
				"guilds": []any{}, "shard": fr.D.Shard}})
		case fr.Op == 6:
			ss := f.sess[fr.D.SessionID]
			if f.refuseResume || ss == nil || ss.ended {
				reply = append(reply, map[string]any{"op": 9, "d": false})
				break
			}
			if old := ss.conn; old != nil && old != c && old.closed.IsZero() {
				// The session moves here: Discord closes the socket that
				// served it (a paused process's, a lost host's).
				old.closed = now
				moved = old
			}
			ss.conn, c.session, c.resumed = c, fr.D.SessionID, true
			c.shard, c.count, c.identified = ss.shard, f.shards, now
			for _, e := range ss.events {
				if e["s"].(int64) > fr.D.Seq {
					reply = append(reply, e)
				}
			}
			f.seq++
			reply = append(reply, map[string]any{"op": 0, "t": "RESUMED", "s": f.seq, "d": map[string]any{}})
		}
		f.mu.Unlock()
		if moved != nil {
			moved.ws.Close()
			moved = nil
		}
		for _, m := range reply {
			write(m)
		}
	}
}

// live returns the connection that has shard now in Discord's view (the
// newest, should there be two), or nil.
func (f *shardedDiscord) liveLocked(s int) *fakeShardConn {
	now := time.Now()
	for i := len(f.conns) - 1; i >= 0; i-- {
		c := f.conns[i]
		f.dropIfSilentLocked(c, now)
		if c.shard == s && !c.identified.IsZero() && c.closed.IsZero() && c.dropped.IsZero() {
			return c
		}
	}
	return nil
}

// connected lists the shards connected now.
func (f *shardedDiscord) connected() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for s := range f.shards {
		if f.liveLocked(s) != nil {
			out = append(out, s)
		}
	}
	return out
}

// identifiedSince returns when shard s was first identified or resumed on
// a connection opened after at.
func (f *shardedDiscord) identifiedSince(s int, at time.Time) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		if c.shard == s && c.identified.After(at) {
			return c.identified, true
		}
	}
	return time.Time{}, false
}

// settled lists the shards connected now by a connection that identified:
// none is in the middle of taking a session over (a RESUME, then a clean
// close and an IDENTIFY).
func (f *shardedDiscord) settled() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for s := range f.shards {
		if c := f.liveLocked(s); c != nil && !c.resumed {
			out = append(out, s)
		}
	}
	return out
}

// readySince returns when shard s was first identified (not resumed) on a
// connection opened after at.
func (f *shardedDiscord) readySince(s int, at time.Time) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		if c.shard == s && !c.resumed && c.identified.After(at) {
			return c.identified, true
		}
	}
	return time.Time{}, false
}

// openConns lists the connections of shards open now.
func (f *shardedDiscord) openConns(shards []int) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for _, s := range shards {
		if c := f.liveLocked(s); c != nil {
			out = append(out, c.id)
		}
	}
	return out
}

// allClosed reports whether the sockets of ids are all closed.
func (f *shardedDiscord) allClosed(ids []int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if f.conns[id].closed.IsZero() {
			return false
		}
	}
	return true
}

// mention delivers user u's message mentioning the bot on the shard of
// its server, and reports false (nothing sent) when no connection has
// that shard now.
func (f *shardedDiscord) mention(u int, text string) bool {
	s := u % f.shards
	f.mu.Lock()
	c := f.liveLocked(s)
	if c == nil {
		f.mu.Unlock()
		return false
	}
	id := f.snowflakeLocked()
	f.seq++
	seq := f.seq
	now := time.Now()
	f.sent[u] = append(f.sent[u], fakeDelivered{id: id, text: text, conn: c.id, at: now})
	e := map[string]any{"op": 0, "t": "MESSAGE_CREATE", "s": seq, "d": f.message(u, id, text, now)}
	if ss := f.sess[c.session]; ss != nil {
		ss.events = append(ss.events, e)
	}
	f.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.ws.WriteJSON(e)
	return true
}

// message is user u's message id mentioning the bot, as Discord gives it.
func (f *shardedDiscord) message(u int, id, text string, at time.Time) map[string]any {
	return map[string]any{
		"id": id, "channel_id": f.channel(u), "guild_id": f.guild(u % f.shards), "content": "<@100> " + text, "type": 0,
		"timestamp": at.UTC().Format(time.RFC3339Nano),
		"author":    map[string]any{"id": strconv.Itoa(5000 + u), "username": fmt.Sprintf("user%d", u)},
		"mentions":  []any{map[string]any{"id": "100", "username": "talon", "bot": true}},
		"member":    map[string]any{"roles": []string{}},
	}
}

// readBack answers GET /channels/{channel}/messages?after=: the users'
// messages of the channel newer than after, the newest first.
func (f *shardedDiscord) readBack(w http.ResponseWriter, channel, after string) {
	f.mu.Lock()
	var out []map[string]any
	for u, ds := range f.sent {
		if f.channel(u) != channel {
			continue
		}
		for _, d := range ds {
			if after == "" || len(d.id) > len(after) || (len(d.id) == len(after) && d.id > after) {
				out = append(out, f.message(u, d.id, d.text, d.at))
			}
		}
	}
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b map[string]any) int {
		x, y := a["id"].(string), b["id"].(string)
		return cmp.Or(cmp.Compare(len(y), len(x)), strings.Compare(y, x))
	})
	_ = json.NewEncoder(w).Encode(out)
}

// answered reports whether the answer to user u's text was posted.
func (f *shardedDiscord) answered(u int, text string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.posts[f.channel(u)], "answer to "+text)
}

func (f *shardedDiscord) postCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.posts {
		n += len(p)
	}
	return n
}

// twiceLocked lists, in Discord's view, every shard connected twice at
// one instant and every frame a connection sent after its shard was
// identified on another.
func (f *shardedDiscord) twiceLocked() []string {
	var errs []string
	for s := range f.shards {
		var cs []*fakeShardConn
		for _, c := range f.conns {
			if c.shard == s && !c.identified.IsZero() {
				cs = append(cs, c)
			}
		}
		slices.SortFunc(cs, func(a, b *fakeShardConn) int { return a.identified.Compare(b.identified) })
		for i := 1; i < len(cs); i++ {
			prev, next := cs[i-1], cs[i]
			if end, ok := prev.end(f.silence); !ok || end.After(next.identified) {
				errs = append(errs, fmt.Sprintf("shard %d connected twice: connection %d (open %s, ended %v) and connection %d identified at %s",
					s, prev.id, prev.identified.Format("15:04:05.000"), fmtEnd(end, ok), next.id, next.identified.Format("15:04:05.000")))
			}
			for _, fr := range prev.frames {
				if fr.at.After(next.identified) {
					errs = append(errs, fmt.Sprintf("shard %d: connection %d sent op %d at %s, after connection %d identified the shard at %s",
						s, prev.id, fr.op, fr.at.Format("15:04:05.000"), next.id, next.identified.Format("15:04:05.000")))
				}
			}
		}
	}
	return errs
}

// discordReplicas writes the configurations of n `talon run` replicas of a
// chaos test against the fake sharded gateway f (each in its own folder
// under dir, named name0, name1, …; not started), with shards: auto, every
// fake server allowed, the store given by storeYAML ("" for SQLite), and
// NATS at $NATS_URL with the given partitions and prefix. It sets the
// environment the configurations name.
func discordReplicas(t *testing.T, f *shardedDiscord, modelURL, dir, name string, n int, storeYAML string, partitions int, prefix string) []*chaosProc {
	t.Helper()
	t.Setenv("DISCORD_BOT_TOKEN", "test-discord-token-not-real")
	key := make([]byte, 32)
	_, _ = crand.Read(key)
	t.Setenv("TALON_VAULT_KEY", base64.StdEncoding.EncodeToString(key))
	guilds := make([]string, f.shards)
	for s := range guilds {
		guilds[s] = strconv.Quote(f.guild(s))
	}
	reps := make([]*chaosProc, n)
	for i := range reps {
		rdir := filepath.Join(dir, fmt.Sprintf("%s%d", name, i))
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		r := &chaosProc{t: t, name: fmt.Sprintf("%s%d", name, i), addr: freeAddr(t)}
		body := strings.Replace(baseConfig(filepath.Join(rdir, "data"), "openai", modelURL), `listen: ""`, "listen: "+r.addr, 1)
		body = strings.Replace(body, "level: debug", "level: info", 1)
		body += "discord:\n  enabled: true\n  token: ${DISCORD_BOT_TOKEN}\n  api_url: " + f.srv.URL + "\n  application_id: \"200\"\n" +
			"  shards: auto\n  commands: false\n  threads: false\n  backfill_window: 0s\n  allowed_guilds: [" + strings.Join(guilds, ", ") + "]\n" +
			storeYAML + "memory:\n  enabled: false\nroutines:\n  enabled: false\n" +
			fmt.Sprintf("nats:\n  url: ${NATS_URL}\n  partitions: %d\n  lease_ttl: 3s\n  replica: %s\n  prefix: %s\n", partitions, r.name, prefix)
		r.cfg = writeConfig(t, rdir, body)
		reps[i] = r
	}
	return reps
}
