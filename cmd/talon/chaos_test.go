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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestChaosReplicasUnderSIGKILL is issue 15's chaos proof: three `talon
// run` processes on one PostgreSQL schema and the machine's NATS, Slack in
// events mode (each replica's listener takes events, as behind a load
// balancer), 200 users writing direct messages at the same time, and five
// times a random replica killed with SIGKILL under that load and started
// again. Every fifth message makes the model call http_fetch, whose target
// counts its hits outside the replicas (a trusted host, so that a tainted
// conversation fetches it without asking). At the end:
//   - every message Slack saw acknowledged has exactly one reply in the
//     store, delivered, and the replies reached each user's DM in the order
//     the user wrote (a reply shown twice is a visible duplicate: counted,
//     reported, at most one per kill);
//   - no tool call ran twice, and every tool call recorded as finished ran
//     exactly once;
//   - no row of the store names a row that does not exist (DB.Orphans: the
//     references the foreign keys dropped by migration 0031 checked);
//   - every partition is owned by a live replica.
func TestChaosReplicasUnderSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three replicas and kills them five times")
	}
	natsURL := needPostgresAndNATS(t, "the chaos test of three replicas")
	const (
		replicas   = 3
		users      = 200
		kills      = 5
		partitions = 8
	)
	dbURL, pool := postgresSchema(t)
	prefix := natsPrefix(t, natsURL)

	dir := t.TempDir()
	// CHAOS_DEBUG_DIR keeps the replicas' logs (and, after a drain that
	// does not finish, their goroutines) for whoever looks into a failure.
	if d := os.Getenv("CHAOS_DEBUG_DIR"); d != "" {
		dir = d
	}
	// The tool's target counts each URL it is asked for.
	counter, toolsDir := newFetchTool(t, dir)

	// The model answers "answer to TEXT", after a call of http_fetch when
	// TEXT ends in " fetch"; a few milliseconds late, so that turns
	// overlap the kills.
	model := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		delay := time.Duration(rand.IntN(20)) * time.Millisecond
		user := req.LastUserText()
		if last := req.Messages[len(req.Messages)-1]; last.Role != llm.RoleTool && strings.HasSuffix(user, " fetch") {
			u := counter.URL + "/" + strings.TrimSuffix(user, " fetch")
			return llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "http_fetch", Arguments: fmt.Sprintf(`{"url":%q}`, u)}}, Delay: delay}
		}
		return llmtest.Response{Text: "answer to " + user, Delay: delay}
	})
	fs := newFakeSlackAPI(t)

	setReplicaEnv(t, dbURL, natsURL)

	reps := make([]*chaosReplica, replicas)
	for i := range reps {
		rdir := filepath.Join(dir, fmt.Sprintf("r%d", i))
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		r := &chaosReplica{name: fmt.Sprintf("chaos-%d", i), addr: freeAddr(t)}
		body := strings.Replace(baseConfig(filepath.Join(rdir, "data"), "openai", model.URL), `listen: ""`, "listen: "+r.addr, 1)
		body = strings.Replace(body, "level: debug", "level: info", 1)
		body += slackSection("events", fs.url()) +
			"store:\n  driver: postgres\n  url: ${DATABASE_URL}\nmemory:\n  enabled: false\nroutines:\n  enabled: false\n" +
			fmt.Sprintf("nats:\n  url: ${NATS_URL}\n  partitions: %d\n  lease_ttl: 3s\n  replica: %s\n  prefix: %s\n", partitions, r.name, prefix) +
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
	t.Logf("three replicas ready in %s", time.Since(began).Round(time.Millisecond))

	// The users: each writes to its DM, one message at a time (the next
	// once Slack has the acknowledgement of the previous), to a replica
	// chosen at random; an event that fails is sent again, with the same
	// event id, to another replica, as Slack retries.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: users}}
	var (
		stop     atomic.Bool
		retried  atomic.Int64
		lost     atomic.Int64
		acceptMu sync.Mutex
		accepted = map[int][]string{} // user → texts acknowledged, in the order written
		users_   sync.WaitGroup
	)
	send := func(u, m int, text string) bool {
		body, _ := json.Marshal(map[string]any{
			"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": fmt.Sprintf("Ev%d_%d", u, m), "event_time": time.Now().Unix(),
			"event": map[string]any{"type": "message", "channel": fmt.Sprintf("D%03d", u), "channel_type": "im", "user": fmt.Sprintf("U%03d", u),
				"ts": fmt.Sprintf("%d.%06d", 1700000000+m, u), "event_ts": fmt.Sprintf("%d.%06d", 1700000000+m, u), "text": text},
		})
		deadline := time.Now().Add(90 * time.Second)
		for attempt := 0; time.Now().Before(deadline); attempt++ {
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
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return true
				}
			}
			time.Sleep(time.Duration(50+rand.IntN(200)) * time.Millisecond)
		}
		lost.Add(1)
		return false
	}
	for u := range users {
		users_.Go(func() {
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Millisecond)
			for m := 0; !stop.Load(); m++ {
				text := fmt.Sprintf("u%03d-m%d", u, m)
				if rand.IntN(5) == 0 {
					text += " fetch"
				}
				if send(u, m, text) {
					acceptMu.Lock()
					accepted[u] = append(accepted[u], text)
					acceptMu.Unlock()
				}
				time.Sleep(time.Duration(1500+rand.IntN(3000)) * time.Millisecond)
			}
		})
	}
	posted := func() int {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return len(fs.posts)
	}
	waitFor(t, 2*time.Minute, "the first 100 replies", func() bool { return posted() >= 100 })

	// Five kills of a random replica, each after a random stretch of
	// load, each started again at once.
	for k := range kills {
		time.Sleep(time.Duration(1500+rand.IntN(2500)) * time.Millisecond)
		r := reps[rand.IntN(replicas)]
		before := posted()
		if err := r.proc.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-r.exited
		t.Logf("kill %d: SIGKILL of %s after %d replies posted", k+1, r.name, before)
		r.start(t)
		r.ready(t)
	}
	time.Sleep(3 * time.Second)
	stop.Store(true)
	users_.Wait()
	loadEnded := time.Now()

	// Everything accepted is answered and delivered.
	ctx := context.Background()
	for drained := time.Now().Add(45 * time.Second); ; {
		var open int
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM inbound WHERE state IN ('queued', 'running'))
			+ (SELECT count(*) FROM outbound WHERE state = 'pending')`).Scan(&open)
		if err == nil && open == 0 {
			break
		}
		if time.Now().After(drained) {
			rows, err := pool.Query(ctx, `SELECT i.id, i.state, p."user", coalesce(t.state, ''),
					coalesce((SELECT string_agg(o.state, ',') FROM outbound o WHERE o.inbound_id = i.id), '')
				FROM inbound i JOIN principals p ON p.id = i.principal_id LEFT JOIN turns t ON t.inbound_id = i.id
				WHERE i.state IN ('queued', 'running') OR EXISTS (SELECT 1 FROM outbound o WHERE o.inbound_id = i.id AND o.state = 'pending')
				ORDER BY i.id LIMIT 20`)
			if err == nil {
				for rows.Next() {
					var id int64
					var state, user, turn, out string
					_ = rows.Scan(&id, &state, &user, &turn, &out)
					t.Logf("open: inbound %d of %s: %s, turn %q, replies %q", id, user, state, turn, out)
				}
				rows.Close()
			}
			// Their goroutines, in their logs, for whoever looks into it.
			for _, r := range reps {
				_ = r.proc.Process.Signal(syscall.SIGQUIT)
				<-r.exited
			}
			t.Fatalf("%d messages or replies still open 45 s after the load stopped", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("drained %s after the load stopped", time.Since(loadEnded).Round(time.Millisecond))

	// The store: one delivered reply per accepted message.
	type stored struct {
		id                          int64
		text, state                 string
		user                        string
		replies, delivered, replyID int64
	}
	rows, err := pool.Query(ctx, `SELECT i.id, i.text, i.state, p."user",
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id),
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id AND o.state = 'delivered'),
			coalesce((SELECT min(o.id) FROM outbound o WHERE o.inbound_id = i.id), 0)
		FROM inbound i JOIN principals p ON p.id = i.principal_id ORDER BY i.id`)
	if err != nil {
		t.Fatal(err)
	}
	byText := map[string]stored{}
	for rows.Next() {
		var s stored
		if err := rows.Scan(&s.id, &s.text, &s.state, &s.user, &s.replies, &s.delivered, &s.replyID); err != nil {
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

	// Slack: each user's DM shows the answers in the order the user
	// wrote; a reply shown twice is a visible duplicate.
	fs.mu.Lock()
	shown := map[string][]string{}
	for _, p := range fs.posts {
		shown[p.Get("channel")] = append(shown[p.Get("channel")], p.Get("text"))
	}
	fs.mu.Unlock()
	total, duplicates, toolTurns := 0, 0, 0
	for u := range users {
		want := accepted[u]
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
		for _, text := range shown[fmt.Sprintf("D%03d", u)] {
			if seen[text] {
				duplicates++
				t.Logf("visible duplicate in D%03d: %q", u, text)
				continue
			}
			seen[text] = true
			got = append(got, strings.TrimPrefix(text, "answer to "))
		}
		// The store may hold a message whose acknowledgement never came
		// (lost with a replica): it is answered too, in its place.
		var inStore []string
		for text, s := range byText {
			if s.user == fmt.Sprintf("U%03d", u) {
				inStore = append(inStore, text)
			}
		}
		slices.SortFunc(inStore, func(a, b string) int { return int(byText[a].id - byText[b].id) })
		if !slices.Equal(got, inStore) {
			t.Errorf("user %d: replies shown %q\nwant, in the order written: %q", u, got, inStore)
			dumpSession(t, pool, fmt.Sprintf("U%03d", u))
		}
		for i, text := range want {
			if i > 0 && byText[want[i-1]].replyID >= byText[text].replyID {
				t.Errorf("user %d: %q answered before %q", u, text, want[i-1])
			}
		}
	}
	if duplicates > kills {
		t.Errorf("%d visible duplicates over %d kills, want at most one per kill", duplicates, kills)
	}
	if total < 500 || toolTurns == 0 {
		t.Fatalf("only %d messages acknowledged (%d with a tool call): the test did not load the replicas", total, toolTurns)
	}

	// Tools: nothing ran twice; everything recorded as finished ran once.
	rows, err = pool.Query(ctx, `SELECT arguments, state, is_error, result FROM tool_calls WHERE name = 'http_fetch'`)
	if err != nil {
		t.Fatal(err)
	}
	recorded, finished := map[string]string{}, 0
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
		// A call a kill cut short is recorded with the interrupted result
		// by the replica that resumed its turn: it may or may not have
		// reached its target, and was not run again.
		switch {
		case state == "finished" && isError && strings.HasPrefix(result, "interrupted: "):
			state = "interrupted"
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
	totalHits := 0
	for path, n := range counter.hits {
		totalHits += n
		if n > 1 {
			t.Errorf("tool call %s ran %d times", path, n)
		}
		if _, ok := recorded[path]; !ok {
			t.Errorf("tool call %s ran but is not recorded", path)
		}
	}
	interrupted, interruptedRan := 0, 0
	for path, state := range recorded {
		switch {
		case state == "finished" && counter.hits[path] != 1:
			t.Errorf("tool call %s recorded as finished ran %d times", path, counter.hits[path])
		case state == "interrupted" && counter.hits[path] == 1:
			interruptedRan++
			fallthrough
		case state != "finished":
			interrupted++
		}
	}
	counter.mu.Unlock()
	if finished == 0 {
		t.Error("no tool call finished")
	}

	// The store's references hold, the replicas still running.
	checkOrphans(t, dbURL)

	// Every partition is owned by a live replica.
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, prefix+"_partitions")
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{}
	waitFor(t, time.Minute, "every partition owned", func() bool {
		clear(owners)
		for p := range partitions {
			e, err := kv.Get(ctx, fmt.Sprintf("owner.%d", p))
			if err != nil {
				return false
			}
			owners[string(e.Value())]++
		}
		return true
	})
	for name := range owners {
		if !slices.ContainsFunc(reps, func(r *chaosReplica) bool { return r.name == name }) {
			t.Errorf("a partition is owned by %q, not a replica", name)
		}
	}
	t.Logf("%d users, %d kills: %d messages acknowledged (%d sends retried on another replica, %d given up), %d in the store, each answered once; "+
		"%d visible duplicates; %d tool calls recorded (%d finished, %d interrupted of which %d had reached the target), %d runs counted by the target; partitions by owner %v; %s in all",
		users, kills, total, retried.Load(), lost.Load(), len(byText), duplicates, len(recorded), finished, interrupted, interruptedRan, totalHits, owners,
		time.Since(began).Round(time.Second))
}

// natsPrefix is a nats.prefix no other test run uses, for a test on the
// machine's NATS; its stream and buckets are deleted at the end.
// needPostgresAndNATS returns TALON_TEST_NATS, or skips t with one line
// naming the two variables that enable what (the tests of replicas on the
// machine's PostgreSQL and NATS) when either is unset.
func needPostgresAndNATS(t *testing.T, what string) string {
	t.Helper()
	natsURL := os.Getenv("TALON_TEST_NATS")
	if os.Getenv("TALON_TEST_POSTGRES") == "" || natsURL == "" {
		t.Skip("TALON_TEST_POSTGRES and TALON_TEST_NATS are not both set: set them (postgres://root@127.0.0.1:5432/test?sslmode=disable, nats://127.0.0.1:4222) to run " + what)
	}
	return natsURL
}

func natsPrefix(t *testing.T, url string) string {
	t.Helper()
	prefix := fmt.Sprintf("talontest_%08x", rand.Uint32())
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx := context.Background()
		_ = js.DeleteStream(ctx, strings.ToUpper(prefix)+"_IN")
		_ = js.DeleteKeyValue(ctx, prefix+"_partitions")
		_ = js.DeleteKeyValue(ctx, prefix+"_cluster")
		_ = js.DeleteKeyValue(ctx, prefix+"_slots")
		_ = js.DeleteKeyValue(ctx, prefix+"_rates")
		_ = js.DeleteKeyValue(ctx, prefix+"_shards")
		_ = js.DeleteKeyValue(ctx, prefix+"_identify")
	})
	return prefix
}

// waitFor waits for cond, up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tailLog is the end of a replica's log of its start n.
func tailLog(dir string, n int) string {
	b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("run%d.log", n)))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// dumpSession logs what the store holds of a user's conversation, for
// whoever looks into a failure.
func dumpSession(t *testing.T, pool *pgxpool.Pool, user string) {
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT 'in', i.id, i.state || ' ' || i.text, coalesce(i.turn_id, 0) FROM inbound i JOIN principals p ON p.id = i.principal_id WHERE p."user" = $1
		UNION ALL SELECT 'out', o.id, o.state || ' in=' || coalesce(o.inbound_id, 0) || ' ' || o.platform_id || ' ' || o.text, coalesce(o.turn_id, 0) FROM outbound o JOIN principals p ON p.id = o.principal_id WHERE p."user" = $1
		UNION ALL SELECT 'msg', m.id, m.role || ' ' || m.content, coalesce(m.turn_id, 0) FROM messages m JOIN sessions s ON s.id = m.session_id JOIN principals p ON p.id = s.principal_id WHERE p."user" = $1
		ORDER BY 1, 2`, user)
	if err != nil {
		t.Log(err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var kind, what string
		var id, turn int64
		_ = rows.Scan(&kind, &id, &what, &turn)
		t.Logf("  %s %d turn %d: %.200s", kind, id, turn, what)
	}
}
