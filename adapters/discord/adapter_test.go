package discord

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

const (
	guildID   = "300"
	channelID = "500"
	dmChannel = "400"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	t    *testing.T
	f    *fakeDiscord
	a    *Adapter
	rt   *agent.Runtime
	llm  *llmtest.Server
	db   *store.DB
	logs *syncBuffer
	ctx  context.Context
	// stop stops the adapter and the runtime and closes the database; the
	// test's cleanup calls it too.
	stop func()
}

type options struct {
	config      func(*Config)
	runtime     Runtime // nil: the real agent runtime
	secrets     agent.Secrets
	handler     llmtest.Handler
	fake        func(*fakeDiscord)
	now         func() time.Time // the adapter's clock; nil: time.Now
	fakeDiscord *fakeDiscord     // the fake to talk to; nil: a new one
	dbPath      string           // the runtime's database; "": a new one
	follows     bool             // the database is the adapter's Follows
	cursors     bool             // the database is the adapter's Cursors
	// reconnectBase and reconnectMax tune the adapter's reconnection
	// backoff (default 5 ms and 50 ms).
	reconnectBase, reconnectMax time.Duration
	maxFrame                    int64 // the gateway's frame limit; 0: the default
	// maxTold bounds the people remembered as told a refusal (0: the
	// adapter's default).
	maxTold int
	// redactor is the runtime's leak detector; nil: none.
	redactor agent.Redactor
	// tools runs the runtime's tools; nil: none.
	tools agent.ToolRunner
	// onState is the adapter's OnState; nil: none.
	onState func(string)
	// setup configures the real runtime before it runs (budgets, say).
	setup func(*agent.Runtime)
}

// start runs the real runtime (SQLite in a temp dir, the fake LLM) and the
// adapter against a fake Discord, and waits until the bot is ready.
//
// The test runs in parallel with the others that start one: closing a
// discordgo session waits a second for the server, whatever it does.
func start(t *testing.T, o options) *env {
	t.Helper()
	t.Parallel()
	return run(t, o)
}

// run is start without t.Parallel, to start an adapter again in a test.
func run(t *testing.T, o options) *env {
	t.Helper()
	f := o.fakeDiscord
	if f == nil {
		f = newFake(t)
	}
	if o.fake != nil {
		o.fake(f)
	}
	if o.dbPath == "" {
		o.dbPath = filepath.Join(t.TempDir(), "t.db")
	}
	if o.handler == nil {
		o.handler = llmtest.Echo()
	}
	srv := llmtest.NewServer(t, o.handler)
	ctx, cancel := context.WithCancel(context.Background())
	db, err := store.Open(ctx, o.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	provider, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL, Model: "m", MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	rt := &agent.Runtime{Store: db, LLM: provider, Log: zerolog.Nop(), Secrets: o.secrets,
		Limits: agent.Limits{ShutdownGrace: 50 * time.Millisecond}, Files: &store.FileDir{Dir: filepath.Join(t.TempDir(), "files")}, Redactor: o.redactor, Tools: o.tools}
	if o.setup != nil {
		o.setup(rt)
	}
	cfg := DefaultConfig()
	cfg.Token = "test-token"
	cfg.AllowedGuilds = []string{guildID}
	if o.config != nil {
		o.config(&cfg)
	}
	logs := &syncBuffer{}
	a := &Adapter{Config: cfg, Runtime: rt, Secrets: o.secrets, Log: zerolog.New(logs).Level(zerolog.DebugLevel), APIBase: f.srv.URL, Now: o.now, OnState: o.onState,
		reconnectBase: or(o.reconnectBase, 5*time.Millisecond), reconnectMax: or(o.reconnectMax, 50*time.Millisecond), maxTold: o.maxTold, maxFrame: o.maxFrame}
	if o.runtime != nil {
		a.Runtime = o.runtime
	}
	if o.follows {
		a.Follows = db
	}
	if o.cursors {
		a.Cursors = db
	}
	rt.Register(a)
	rtDone := make(chan error, 1)
	go func() { rtDone <- rt.Run(ctx) }()
	connected := f.connections()
	aDone := make(chan error, 1)
	go func() { aDone <- a.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-aDone; err != nil {
			t.Errorf("adapter Run: %v", err)
		}
		if err := <-rtDone; err != nil {
			t.Errorf("runtime Run: %v", err)
		}
		db.Close()
	})
	t.Cleanup(stop)
	<-rt.Ready()
	e := &env{t: t, f: f, a: a, rt: rt, llm: srv, db: db, logs: logs, ctx: ctx, stop: stop}
	waitFor(t, "gateway session", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.botID == f.botID && f.connections() == connected+1
	})
	return e
}

func dmFrom(id, author, text string) msg {
	return msg{ID: id, ChannelID: dmChannel, Content: text, Author: user{ID: author, Username: "u" + author}}
}

func inGuild(id, channel, author, text string, mention bool) msg {
	m := msg{ID: id, ChannelID: channel, GuildID: guildID, Content: text, Author: user{ID: author, Username: "u" + author}}
	if mention {
		m.Mentions = []user{{ID: "100", Username: "talon", Bot: true}}
	}
	return m
}

// replies waits until n messages were posted, lets the runtime settle and
// returns their contents.
func (e *env) replies(n int) []string {
	e.t.Helper()
	waitFor(e.t, "replies", func() bool { return len(e.f.postsSnapshot()) >= n })
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if err := e.rt.WaitIdle(ctx); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, p := range e.f.postsSnapshot() {
		s, _ := p.body["content"].(string)
		out = append(out, s)
	}
	return out
}

func TestDMTurnAndReplyShape(t *testing.T) {
	e := start(t, options{})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "hello @everyone"))
	got := e.replies(1)
	if diff := cmp.Diff([]string{"echo: hello @everyone"}, got); diff != "" {
		t.Fatalf("replies (-want +got):\n%s", diff)
	}
	p := e.f.postsSnapshot()[0]
	if p.channel != dmChannel {
		t.Errorf("channel = %s, want %s", p.channel, dmChannel)
	}
	// Nobody can be pinged: empty parse, no users, no roles.
	if diff := cmp.Diff(map[string]any{"parse": []any{}, "replied_user": false}, p.body["allowed_mentions"]); diff != "" {
		t.Errorf("allowed_mentions (-want +got):\n%s", diff)
	}
	if ref, _ := p.body["message_reference"].(map[string]any); ref["message_id"] != "41" {
		t.Errorf("message_reference = %v, want message 41", p.body["message_reference"])
	}
	if n, _ := p.body["nonce"].(string); n == "" || len(n) > 25 || p.body["enforce_nonce"] != true {
		t.Errorf("nonce = %v, enforce_nonce = %v; want a nonce ≤ 25 chars, enforced", p.body["nonce"], p.body["enforce_nonce"])
	}
	if strings.Contains(e.logs.String(), "hello") {
		t.Errorf("a message body reached the log:\n%s", e.logs.String())
	}
	// The gateway was identified with exactly the intents configured.
	ids := e.f.framesWith(2)
	if len(ids) != 1 || !strings.Contains(string(ids[0].D), `"intents":4609`) {
		t.Errorf("IDENTIFY = %v, want intents 4609 (guilds, guild messages, DMs)", ids)
	}
}

func TestMentionsDedupeAndLoopGuard(t *testing.T) {
	e := start(t, options{})
	m := inGuild("41", channelID, "7", "<@100> what is up <@!100>", true)
	e.f.dispatch("MESSAGE_CREATE", m)
	e.f.dispatch("MESSAGE_CREATE", m) // redelivered, as after a resume
	e.f.dispatch("MESSAGE_CREATE", inGuild("42", channelID, "7", "no mention here", false))
	e.f.dispatch("MESSAGE_CREATE", inGuild("43", channelID, "100", "<@100> my own message", true))
	other := inGuild("44", channelID, "8", "<@100> from a bot", true)
	other.Author.Bot = true
	e.f.dispatch("MESSAGE_CREATE", other)
	hook := inGuild("45", channelID, "9", "<@100> from a webhook", true)
	hook.WebhookID = "77"
	e.f.dispatch("MESSAGE_CREATE", hook)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("46", "7", "last"))
	got := sorted(e.replies(2))
	if diff := cmp.Diff([]string{"echo: last", "echo: what is up"}, got); diff != "" {
		t.Fatalf("replies (-want +got):\n%s", diff)
	}
}

func TestAccessPolicyRefusesOnce(t *testing.T) {
	e := start(t, options{config: func(c *Config) { c.DeniedUsers = []string{"66"} }})
	other := inGuild("41", channelID, "7", "<@100> hi", true)
	other.GuildID = "999" // not allowlisted
	e.f.dispatch("MESSAGE_CREATE", other)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("42", "66", "hi"))
	e.f.dispatch("MESSAGE_CREATE", dmFrom("43", "66", "hi again"))
	e.f.dispatch("MESSAGE_CREATE", dmFrom("44", "7", "ok"))
	waitFor(t, "three messages", func() bool { return len(e.f.postsSnapshot()) >= 3 })
	got := e.replies(3)
	want := []string{
		"Sorry, this assistant is not enabled on this server. Ask an admin of this Talon gateway to add it.",
		"Sorry, you are not on the list of people this assistant serves. Ask an admin of this Talon gateway to add you.",
		"echo: ok",
	}
	if diff := cmp.Diff(want, got, cmp.Transformer("sort", func(s []string) []string { return sorted(s) })); diff != "" {
		t.Fatalf("posts (-want +got):\n%s", diff)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestThreadFollowUp(t *testing.T) {
	e := start(t, options{config: func(c *Config) { c.MessageContent = true }})
	if ids := e.f.framesWith(2); len(ids) != 1 || !strings.Contains(string(ids[0].D), `"intents":37377`) {
		t.Errorf("IDENTIFY = %v, want intents 37377 (with message content)", ids)
	}
	e.f.dispatch("GUILD_CREATE", map[string]any{
		"id": guildID, "name": "g",
		"channels": []any{map[string]any{"id": channelID, "type": 0, "guild_id": guildID}},
		"threads":  []any{map[string]any{"id": "600", "type": 11, "parent_id": channelID, "guild_id": guildID}},
	})
	e.f.dispatch("MESSAGE_CREATE", inGuild("41", "600", "7", "<@100> start", true))
	e.replies(1)
	e.f.dispatch("MESSAGE_CREATE", inGuild("42", "600", "8", "someone else chiming in", false))
	e.f.dispatch("MESSAGE_CREATE", inGuild("43", channelID, "7", "not in the thread", false))
	e.f.dispatch("MESSAGE_CREATE", inGuild("44", "600", "7", "follow-up", false))
	got := e.replies(2)
	if diff := cmp.Diff([]string{"echo: start", "echo: follow-up"}, got); diff != "" {
		t.Fatalf("replies (-want +got):\n%s", diff)
	}
	if p := e.f.postsSnapshot()[1]; p.channel != "600" {
		t.Errorf("follow-up answered in %s, want the thread 600", p.channel)
	}
}

func TestOp7ResumesWithoutLossOrDoubles(t *testing.T) {
	e := start(t, options{})
	a := dmFrom("41", "7", "one")
	e.f.dispatch("MESSAGE_CREATE", a)
	e.replies(1)
	// On resume Discord replays what was missed, and in practice also
	// something already delivered.
	e.f.mu.Lock()
	e.f.replay = []event{{"MESSAGE_CREATE", a}, {"MESSAGE_CREATE", dmFrom("42", "7", "two")}}
	e.f.mu.Unlock()
	e.f.sendOp(7, nil)
	waitFor(t, "RESUME", func() bool { return len(e.f.framesWith(6)) == 1 })
	got := e.replies(2)
	if diff := cmp.Diff([]string{"echo: one", "echo: two"}, got); diff != "" {
		t.Fatalf("replies (-want +got):\n%s", diff)
	}
	var resume struct {
		Token     string `json:"token"`
		SessionID string `json:"session_id"`
		Seq       int64  `json:"seq"`
	}
	if err := jsonUnmarshal(e.f.framesWith(6)[0].D, &resume); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(struct {
		Token     string
		SessionID string
		Seq       int64
	}{"Bot test-token", "sess-1", 2}, struct {
		Token     string
		SessionID string
		Seq       int64
	}{resume.Token, resume.SessionID, resume.Seq}); diff != "" {
		t.Errorf("RESUME (-want +got):\n%s", diff)
	}
	if n := len(e.f.framesWith(2)); n != 1 {
		t.Errorf("IDENTIFY sent %d times, want 1 (resumed, not re-identified)", n)
	}
}

func TestOp9ReidentifiesAndBackfills(t *testing.T) {
	e := start(t, options{})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "one"))
	e.replies(1)
	// A message sent while the session was invalid is only in history.
	e.f.mu.Lock()
	e.f.history[dmChannel] = []msg{dmFrom("41", "7", "one"), dmFrom("42", "7", "missed")}
	e.f.mu.Unlock()
	e.f.sendOp(9, false)
	waitFor(t, "second IDENTIFY", func() bool { return len(e.f.framesWith(2)) == 2 })
	got := e.replies(2)
	if diff := cmp.Diff([]string{"echo: one", "echo: missed"}, got); diff != "" {
		t.Fatalf("replies (-want +got):\n%s", diff)
	}
	e.f.dispatch("MESSAGE_CREATE", dmFrom("43", "7", "three"))
	if got := e.replies(3); got[2] != "echo: three" {
		t.Errorf("after re-identify, reply = %q", got[2])
	}
}

func TestRateLimitedSendPostsOnce(t *testing.T) {
	e := start(t, options{fake: func(f *fakeDiscord) { f.fail429 = 1 }})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "hi"))
	got := e.replies(1)
	if diff := cmp.Diff([]string{"echo: hi"}, got); diff != "" {
		t.Fatalf("replies (-want +got):\n%s", diff)
	}
	e.f.mu.Lock()
	attempts := e.f.attempts
	e.f.mu.Unlock()
	if attempts != 2 {
		t.Errorf("POST attempts = %d, want 2 (a 429, then the message)", attempts)
	}
}

func TestLongReplySplitAndRedeliveryIdempotent(t *testing.T) {
	e := start(t, options{})
	var b strings.Builder
	b.WriteString("Here is the code @everyone:\n\n```go\n")
	for i := 0; b.Len() < 4000; i++ {
		b.WriteString("fmt.Println(\"line of code number " + strings.Repeat("x", i%20) + "\")\n")
	}
	b.WriteString("```\n\n")
	for b.Len() < 5000 {
		b.WriteString("A closing paragraph sentence. ")
	}
	r := agent.Reply{ID: 9, Key: agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: "7"}, Conversation: agent.Conversation{Channel: dmChannel}},
		ReplyTo: "m:400:41", Kind: agent.ReplyAnswer, Text: b.String()}
	if _, err := e.a.Deliver(e.ctx, r); err != nil {
		t.Fatal(err)
	}
	first := e.f.postsSnapshot()
	if len(first) < 3 {
		t.Fatalf("%d messages for a 5,000-character reply, want ≥ 3", len(first))
	}
	for i, p := range first {
		c, _ := p.body["content"].(string)
		if n := len([]rune(c)); n > 2000 || n == 0 {
			t.Errorf("part %d has %d characters", i, n)
		}
		if strings.Count(c, "```")%2 != 0 {
			t.Errorf("part %d has unbalanced fences:\n%s", i, c)
		}
		if diff := cmp.Diff(map[string]any{"parse": []any{}, "replied_user": false}, p.body["allowed_mentions"]); diff != "" {
			t.Errorf("part %d allowed_mentions (-want +got):\n%s", i, diff)
		}
	}
	if c, _ := first[1].body["content"].(string); !strings.HasPrefix(c, "```go\n") {
		t.Errorf("part 2 does not reopen the go block: %.40q", c)
	}
	// Delivered again (a crash before MarkDelivered): the nonces are
	// enforced, so nothing is posted twice.
	if _, err := e.a.Deliver(e.ctx, r); err != nil {
		t.Fatal(err)
	}
	if n := len(e.f.postsSnapshot()); n != len(first) {
		t.Errorf("redelivery posted %d messages, want %d", n, len(first))
	}
}

func jsonUnmarshal(b []byte, v any) error { return jsonDecode(b, v) }

// fakeRuntime decides approvals by compare-and-set, with an owner check,
// and records accepted messages.
type fakeRuntime struct {
	mu       sync.Mutex
	owner    agent.Principal
	state    map[agent.ApprovalID]agent.ApprovalState
	accepted []agent.Inbound
	amends   []amend
	previews map[agent.InboundID]string
}

func (r *fakeRuntime) Accept(_ context.Context, in agent.Inbound) (agent.QueuedInbound, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.accepted {
		if x.DedupeKey == in.DedupeKey {
			return agent.QueuedInbound{}, agent.ErrDuplicate
		}
	}
	r.accepted = append(r.accepted, in)
	return agent.QueuedInbound{ID: agent.InboundID(len(r.accepted)), Inbound: in}, nil
}

func (r *fakeRuntime) Decide(_ context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.state[id]
	if !ok {
		return "", agent.ErrUnknownApproval
	}
	if by != r.owner {
		return s, agent.ErrNotOwner
	}
	if s != agent.ApprovalPending {
		return s, agent.ErrDecided
	}
	s = agent.ApprovalDenied
	if approve {
		s = agent.ApprovalApproved
	}
	r.state[id] = s
	return s, nil
}

func (r *fakeRuntime) Amend(_ context.Context, key string, a agent.Amendment) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.amends = append(r.amends, amend{key, a.Text, a.Cancel, a.Edited})
	return true, nil
}

func (r *fakeRuntime) Previewed(_ context.Context, id agent.InboundID, platformID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.previews == nil {
		r.previews = map[agent.InboundID]string{}
	}
	r.previews[id] = platformID
	return nil
}

type amend struct {
	Key, Text string
	Cancel    bool
	Edited    time.Time
}

func TestEditsAndDeletesAmendQueuedMessages(t *testing.T) {
	frt := &fakeRuntime{}
	e := start(t, options{runtime: frt})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "first"))
	e.f.dispatch("MESSAGE_UPDATE", dmFrom("41", "7", "<@100> first, edited"))
	e.f.dispatch("MESSAGE_DELETE", map[string]any{"id": "41", "channel_id": dmChannel})
	waitFor(t, "amends", func() bool {
		frt.mu.Lock()
		defer frt.mu.Unlock()
		return len(frt.amends) == 2
	})
	frt.mu.Lock()
	defer frt.mu.Unlock()
	want := []amend{{"discord:41", "first, edited", false, time.Time{}}, {"discord:41", "", true, time.Time{}}}
	if diff := cmp.Diff(want, frt.amends); diff != "" {
		t.Errorf("amends (-want +got):\n%s", diff)
	}
	if len(frt.accepted) != 1 || frt.accepted[0].Text != "first" || frt.accepted[0].ReplyTo != "m:400:41" {
		t.Errorf("accepted = %+v", frt.accepted)
	}
}

// Two edits of a queued message applied out of the order they were made
// (the older written last, as by a replica that received it before it
// stalled) leave the newer text: the turn answers what the user wrote
// last. Discord's edited_timestamp orders them.
func TestEditsOutOfOrderKeepTheNewer(t *testing.T) {
	asked, release := make(chan struct{}, 1), make(chan struct{})
	e := start(t, options{handler: func(req llmtest.Request) llmtest.Response {
		if req.LastUserText() == "first" {
			asked <- struct{}{}
			<-release
		}
		return llmtest.Response{Text: "echo: " + req.LastUserText()}
	}})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "first"))
	select {
	case <-asked:
	case <-time.After(15 * time.Second):
		t.Fatal("the first turn's model call")
	}
	// Queued behind the first turn of its session: its turn has not started.
	e.f.dispatch("MESSAGE_CREATE", dmFrom("42", "7", "typo"))
	edit := func(text, at string) msg {
		m := dmFrom("42", "7", text)
		m.EditedTimestamp = at
		return m
	}
	e.f.dispatch("MESSAGE_UPDATE", edit("newer", "2026-12-03T07:00:02.000200+00:00"))
	e.f.dispatch("MESSAGE_UPDATE", edit("older", "2026-12-03T07:00:02.000100+00:00"))
	// The gateway's events are handled in order: once this one is
	// accepted, both edits were written.
	e.f.dispatch("MESSAGE_CREATE", dmFrom("43", "7", "after"))
	waitFor(t, "the third message accepted", func() bool {
		qs, err := e.db.Pending(e.ctx)
		return err == nil && len(qs) == 3
	})
	open()
	if diff := cmp.Diff([]string{"echo: first", "echo: newer", "echo: after"}, e.replies(3)); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}

func click(id, userID, customID string) map[string]any {
	return map[string]any{
		"id": id, "application_id": "200", "type": 3, "token": "tok-" + id,
		"guild_id": guildID, "channel_id": channelID,
		"member":  map[string]any{"user": map[string]any{"id": userID, "username": "u"}, "roles": []string{}},
		"message": map[string]any{"id": "5001", "channel_id": channelID, "content": "prompt"},
		"data":    map[string]any{"custom_id": customID, "component_type": 2},
	}
}

func TestApprovalButtons(t *testing.T) {
	owner := agent.Principal{Platform: Platform, User: "7"}
	frt := &fakeRuntime{owner: owner, state: map[agent.ApprovalID]agent.ApprovalState{12: agent.ApprovalPending}}
	e := start(t, options{runtime: frt})
	p := agent.ApprovalPrompt{ID: 12, Key: agent.SessionKey{Principal: owner, Conversation: agent.Conversation{Channel: channelID}},
		ReplyTo: "m:500:41", Tool: "http_request", Description: "POST https://api.github.com/repos/o/r/issues @everyone",
		ExpiresAt: time.Unix(1700000000, 0)}
	msg, err := e.a.AskApproval(e.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	p.Message = msg
	posts := e.f.postsSnapshot()
	if len(posts) != 1 {
		t.Fatalf("%d posts, want the prompt", len(posts))
	}
	comps, _ := jsonRoundTrip(posts[0].body["components"])
	if !strings.Contains(comps, `"custom_id":"talon:approve:12"`) || !strings.Contains(comps, `"custom_id":"talon:deny:12"`) {
		t.Errorf("components = %s, want approve and deny buttons for 12", comps)
	}
	if diff := cmp.Diff(map[string]any{"parse": []any{}, "replied_user": false}, posts[0].body["allowed_mentions"]); diff != "" {
		t.Errorf("allowed_mentions (-want +got):\n%s", diff)
	}

	e.f.dispatch("INTERACTION_CREATE", click("801", "8", "talon:approve:12")) // not the owner
	waitFor(t, "refusal", func() bool { return len(e.f.callbacksSnapshot()) == 1 })
	e.f.dispatch("INTERACTION_CREATE", click("802", "7", "talon:approve:12")) // the owner
	waitFor(t, "decision", func() bool { return len(e.f.callbacksSnapshot()) == 2 })
	e.f.dispatch("INTERACTION_CREATE", click("803", "7", "talon:deny:12")) // double click
	waitFor(t, "already decided", func() bool { return len(e.f.callbacksSnapshot()) == 3 })
	e.f.dispatch("INTERACTION_CREATE", click("804", "7", "other-bot:vote:1")) // not a button of Talon's
	waitFor(t, "unknown button", func() bool { return len(e.f.callbacksSnapshot()) == 4 })

	type answer struct {
		Interaction string
		Type        int
		Ephemeral   bool
		Content     string
		Disabled    bool
	}
	var got []answer
	for _, c := range e.f.callbacksSnapshot() {
		flags, _ := c.Data["flags"].(float64)
		content, _ := c.Data["content"].(string)
		comps, _ := jsonRoundTrip(c.Data["components"])
		got = append(got, answer{c.interaction, c.Type, int(flags)&64 != 0, content, strings.Contains(comps, `"disabled":true`)})
	}
	want := []answer{
		{"801", 4, true, "Only the person who started this conversation can decide this.", false},
		{"802", 7, false, "prompt\n✅ Approved by <@7>.", true},
		{"803", 4, true, "This was already decided (approved).", false},
		{"804", 4, true, "This button is not one of mine.", false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("interaction answers (-want +got):\n%s", diff)
	}

	// The runtime reports the outcome: the prompt's buttons are disabled.
	if err := e.a.ApprovalDone(e.ctx, p, agent.ApprovalApproved, owner); err != nil {
		t.Fatal(err)
	}
	e.f.mu.Lock()
	edits := append([]post(nil), e.f.edits...)
	e.f.mu.Unlock()
	if len(edits) != 1 || edits[0].id != posts[0].id {
		t.Fatalf("edits = %v, want one of the prompt", edits)
	}
	comps, _ = jsonRoundTrip(edits[0].body["components"])
	if !strings.Contains(comps, `"disabled":true`) || !strings.HasSuffix(edits[0].body["content"].(string), "✅ Approved by <@7>.") {
		t.Errorf("edit = %v, want disabled buttons and the outcome", edits[0].body)
	}
}

// recordingSecrets is a vault that records what it is given.
type recordingSecrets struct {
	mu      sync.Mutex
	added   []agent.NewSecret
	owner   []agent.Principal
	removed []string
}

func (s *recordingSecrets) ListSecrets(context.Context, agent.Principal) ([]agent.SecretInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []agent.SecretInfo
	for _, a := range s.added {
		out = append(out, agent.SecretInfo{Name: a.Name, Hosts: a.Hosts})
	}
	return out, nil
}

func (s *recordingSecrets) AddSecret(_ context.Context, p agent.Principal, n agent.NewSecret) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.added = append(s.added, n)
	s.owner = append(s.owner, p)
	return nil
}

func (s *recordingSecrets) RemoveSecret(_ context.Context, _ agent.Principal, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, a := range s.added {
		if a.Name == name {
			s.added = append(s.added[:i], s.added[i+1:]...)
			s.removed = append(s.removed, name)
			return nil
		}
	}
	return errors.New("no such secret")
}

func command(id, sub string) map[string]any {
	return map[string]any{
		"id": id, "application_id": "200", "type": 2, "token": "tok-" + id, "channel_id": dmChannel,
		"user": map[string]any{"id": "7", "username": "u"},
		"data": map[string]any{"id": "1", "name": "talon", "type": 1, "options": []any{map[string]any{"name": sub, "type": 1}}},
	}
}

func TestCommandsAndSecretModal(t *testing.T) {
	const value = "ghp_SUPERSECRETvalue0123456789abcdefABCD"
	vault := &recordingSecrets{}
	e := start(t, options{secrets: vault})

	// /talon was registered once, after comparing with what Discord has.
	waitFor(t, "command registration", func() bool {
		e.f.mu.Lock()
		defer e.f.mu.Unlock()
		return e.f.puts == 1
	})

	// /talon help: deferred (ephemeral), answered by Deliver through the
	// interaction's webhook.
	e.f.dispatch("INTERACTION_CREATE", command("901", "help"))
	waitFor(t, "help answer", func() bool { return len(e.f.hooksSnapshot()) == 1 })
	cb := e.f.callbacksSnapshot()
	if len(cb) != 1 || cb[0].Type != 5 || cb[0].Data["flags"] != float64(64) {
		t.Errorf("callbacks = %+v, want one deferred ephemeral answer", cb)
	}
	h := e.f.hooksSnapshot()[0]
	if h.path != "PATCH webhooks/200/tok-901/messages/@original" || !strings.Contains(h.body["content"].(string), "/talon new") {
		t.Errorf("help answer = %s %v", h.path, h.body)
	}

	// /talon secret-add opens the modal; its submission goes to the vault.
	e.f.dispatch("INTERACTION_CREATE", command("902", "secret-add"))
	waitFor(t, "modal", func() bool { return len(e.f.callbacksSnapshot()) == 2 })
	modal := e.f.callbacksSnapshot()[1]
	if modal.Type != 9 || modal.Data["custom_id"] != "talon:secret-add" {
		t.Errorf("secret-add answer = %+v, want a modal", modal)
	}
	row := func(id, v string) map[string]any {
		return map[string]any{"type": 1, "components": []any{map[string]any{"type": 4, "custom_id": id, "value": v}}}
	}
	e.f.dispatch("INTERACTION_CREATE", map[string]any{
		"id": "903", "application_id": "200", "type": 5, "token": "tok-903", "channel_id": dmChannel,
		"user": map[string]any{"id": "7", "username": "u"},
		"data": map[string]any{"custom_id": "talon:secret-add", "components": []any{
			row("name", "github"), row("value", value), row("hosts", "api.github.com, uploads.github.com"), row("injection", ""),
		}},
	})
	waitFor(t, "modal answer", func() bool { return len(e.f.callbacksSnapshot()) == 3 })
	vault.mu.Lock()
	added, owners := vault.added, vault.owner
	vault.mu.Unlock()
	wantSecret := []agent.NewSecret{{Name: "github", Value: []byte(value), Hosts: []string{"api.github.com", "uploads.github.com"}}}
	if diff := cmp.Diff(wantSecret, added); diff != "" {
		t.Errorf("vault (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]agent.Principal{{Platform: Platform, User: "7"}}, owners); diff != "" {
		t.Errorf("vault owner (-want +got):\n%s", diff)
	}
	// The value is nowhere else: not in any request to Discord, not in any
	// request to the model, not in the logs.
	e.f.mu.Lock()
	bodies := strings.Join(e.f.bodies, "\n")
	e.f.mu.Unlock()
	if strings.Contains(bodies, value) {
		t.Error("the secret value was sent to Discord")
	}
	for _, r := range e.llm.Requests() {
		if strings.Contains(jsonString(r), value) {
			t.Error("the secret value reached the model")
		}
	}
	if strings.Contains(e.logs.String(), value) {
		t.Error("the secret value reached the log")
	}
	if c := e.f.callbacksSnapshot()[2]; c.Type != 4 || c.Data["flags"] != float64(64) || !strings.Contains(c.Data["content"].(string), "Stored `github`") {
		t.Errorf("modal answer = %+v, want an ephemeral confirmation", c)
	}

	// A form that is not Talon's is answered (else Discord says "This
	// interaction failed") and stores nothing.
	e.f.dispatch("INTERACTION_CREATE", map[string]any{
		"id": "904", "application_id": "200", "type": 5, "token": "tok-904", "channel_id": dmChannel,
		"user": map[string]any{"id": "7", "username": "u"},
		"data": map[string]any{"custom_id": "other:form", "components": []any{row("name", "x"), row("value", value)}},
	})
	waitFor(t, "answer to the unknown form", func() bool { return len(e.f.callbacksSnapshot()) == 4 })
	if c := e.f.callbacksSnapshot()[3]; c.Type != 4 || c.Data["flags"] != float64(64) || c.Data["content"] != "This form is not one of mine." {
		t.Errorf("unknown form's answer = %+v, want an ephemeral refusal", c)
	}
	vault.mu.Lock()
	n := len(vault.added)
	vault.mu.Unlock()
	if n != 1 {
		t.Errorf("%d secrets stored, want only the first", n)
	}
}

func TestCommandsNotOverwrittenWhenUnchanged(t *testing.T) {
	want, err := jsonMarshal([]any{talonCommand()})
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, options{fake: func(f *fakeDiscord) { f.commands = want }})
	// A DM round trip proves the session (and the registration job queued
	// at READY) has run.
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "hi"))
	e.replies(1)
	waitFor(t, "commands compared", func() bool {
		return strings.Contains(e.logs.String(), "/talon already registered")
	})
	e.f.mu.Lock()
	puts := e.f.puts
	e.f.mu.Unlock()
	if puts != 0 {
		t.Errorf("commands overwritten %d times, want 0", puts)
	}
}

func TestTypingRefreshedUntilStopped(t *testing.T) {
	e := start(t, options{runtime: &fakeRuntime{}, config: func(c *Config) { c.TypingInterval = 5 * time.Millisecond }})
	key := agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: "7"}, Conversation: agent.Conversation{Channel: dmChannel}}
	stop := e.a.Working(e.ctx, key, "m:400:41")
	waitFor(t, "typing refreshed", func() bool {
		e.f.mu.Lock()
		defer e.f.mu.Unlock()
		return e.f.typing >= 3
	})
	stop()
	e.f.mu.Lock()
	n := e.f.typing
	e.f.mu.Unlock()
	// stop waited for the refresher: no call can start after it. One call
	// cancelled in flight may still reach the fake server afterwards.
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "sync"))
	frt := e.a.Runtime.(*fakeRuntime)
	waitFor(t, "a later event", func() bool {
		frt.mu.Lock()
		defer frt.mu.Unlock()
		return len(frt.accepted) == 1
	})
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	if e.f.typing > n+1 {
		t.Errorf("typing calls went on after stop: %d, then %d", n, e.f.typing)
	}
}

func TestSecretAddWithoutVault(t *testing.T) {
	e := start(t, options{runtime: &fakeRuntime{}})
	e.f.dispatch("INTERACTION_CREATE", command("901", "secret-add"))
	waitFor(t, "answer", func() bool { return len(e.f.callbacksSnapshot()) == 1 })
	c := e.f.callbacksSnapshot()[0]
	if c.Type != 4 || c.Data["flags"] != float64(64) || !strings.Contains(c.Data["content"].(string), "vault is not configured") {
		t.Errorf("answer = %+v, want an ephemeral 'vault is not configured'", c)
	}
}

// or is d, or def when d is zero.
func or(d, def time.Duration) time.Duration {
	if d != 0 {
		return d
	}
	return def
}

// A prompt asked again (after a restart) is shown in its message; when
// that message is gone it is posted again, and when refreshing it fails
// otherwise it is kept (its buttons still decide) and nothing is posted.
func TestApprovalPromptAskedAgain(t *testing.T) {
	owner := agent.Principal{Platform: Platform, User: "7"}
	e := start(t, options{runtime: &fakeRuntime{owner: owner}})
	e.f.mu.Lock()
	e.f.editFail = map[string]int{"5002": 404, "5003": 500}
	e.f.mu.Unlock()
	p := agent.ApprovalPrompt{ID: 13, Key: agent.SessionKey{Principal: owner, Conversation: agent.Conversation{Channel: channelID}},
		ReplyTo: "m:500:41", Tool: "deploy", Detail: agent.ApprovalDetail{Args: `{"env":"prod"}`}}
	for _, tc := range []struct {
		stored, want string
		posts        int
	}{
		{"500/5001", "500/5001", 0}, // refreshed in place
		{"500/5002", "", 1},         // gone: posted again
		{"500/5003", "500/5003", 0}, // failed to refresh: kept
	} {
		before := len(e.f.postsSnapshot())
		p.Message = tc.stored
		got, err := e.a.AskApproval(e.ctx, p)
		if err != nil {
			t.Fatalf("%s: %v", tc.stored, err)
		}
		posts := e.f.postsSnapshot()[before:]
		if len(posts) != tc.posts {
			t.Errorf("%s: %d posts, want %d", tc.stored, len(posts), tc.posts)
		}
		if tc.want == "" && len(posts) == 1 {
			tc.want = "500/" + posts[0].id
		}
		if got != tc.want {
			t.Errorf("%s: message %q, want %q", tc.stored, got, tc.want)
		}
	}
	edits := e.f.editsSnapshot()
	if len(edits) != 1 || edits[0].id != "5001" {
		t.Fatalf("edits = %v, want the prompt refreshed in 5001", edits)
	}
	comps, _ := jsonRoundTrip(edits[0].body["components"])
	if strings.Contains(comps, `"disabled":true`) || !strings.Contains(edits[0].body["content"].(string), `{"env":"prod"}`) {
		t.Errorf("refresh = %v, want live buttons and the arguments", edits[0].body)
	}
}
