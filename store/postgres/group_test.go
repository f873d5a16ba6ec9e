package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
)

// grouped runs the calls at once while db's groups are held, so that they
// all queue, then lets them go: they are sent together. It fails the test
// unless they were sent in groups (of two writes or more).
func grouped(t *testing.T, db *postgres.DB, calls ...func()) {
	t.Helper()
	groups0, _ := db.GroupStats()
	queued, release := postgres.HoldGroups(db)
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Go(call)
	}
	deadline := time.Now().Add(30 * time.Second)
	for queued() < len(calls) {
		if time.Now().After(deadline) {
			release()
			t.Fatalf("%d of %d writes queued after 30 s", queued(), len(calls))
		}
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()
	if groups, _ := db.GroupStats(); groups == groups0 {
		t.Fatalf("%d concurrent writes were not sent in a group", len(calls))
	}
}

// TestGroupCommit sends concurrent sessions' writes (accept, start, finish,
// delivered) in groups, among them writes that another of the same group
// makes a duplicate, that find their inbound finished, that roll their
// group back (a turn that is not the inbound's) and one given up while
// queued: each caller gets what it would get on its own.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const users = 12
	key := func(u int) agent.SessionKey {
		return agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: fmt.Sprintf("U%d", u)},
			Conversation: agent.Conversation{Channel: "D1"}}
	}
	in := func(u, m int) agent.Inbound {
		return agent.Inbound{DedupeKey: fmt.Sprintf("k-%d-%d", u, m), Key: key(u), Text: fmt.Sprintf("message %d of %d", m, u)}
	}
	user := &llm.Message{Role: llm.RoleUser, Content: "hi"}
	// Each user's first message, one after the other: their principals
	// and sessions exist, so the next ones take the common cases.
	var first []agent.InboundID
	for u := range users {
		q, _, err := db.AcceptInbound(ctx, in(u, 0))
		if err != nil {
			t.Fatal(err)
		}
		tid, _, _, err := db.StartTurn(ctx, q.ID, user)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "first"}, nil); err != nil {
			t.Fatal(err)
		}
		first = append(first, q.ID)
	}

	// Accept: user 0's and user 1's messages twice each, as a platform's
	// retry arriving at once.
	type accepted struct {
		q   agent.QueuedInbound
		dup bool
		err error
	}
	acc := make([]accepted, users+2)
	var calls []func()
	for i := range acc {
		u := i % users
		calls = append(calls, func() {
			acc[i].q, acc[i].dup, acc[i].err = db.AcceptInbound(ctx, in(u, 1))
		})
	}
	// A caller that gives up while its write waits: nothing is written.
	gone, cancel := context.WithCancel(ctx)
	var goneErr error
	calls = append(calls, func() {
		_, _, goneErr = db.AcceptInbound(gone, in(0, 9))
	})
	groups0, _ := db.GroupStats()
	queued, release := postgres.HoldGroups(db)
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Go(call)
	}
	for deadline := time.Now().Add(30 * time.Second); queued() < len(calls); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			release()
			t.Fatalf("%d of %d writes queued after 30 s", queued(), len(calls))
		}
	}
	cancel()
	for deadline := time.Now().Add(30 * time.Second); queued() > len(calls)-1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			release()
			t.Fatal("the given-up write still queued after 30 s")
		}
	}
	release()
	wg.Wait()
	if groups, _ := db.GroupStats(); groups == groups0 {
		t.Fatal("concurrent accepts were not sent in a group")
	}
	if !errors.Is(goneErr, context.Canceled) {
		t.Errorf("accept given up while queued: %v, want context.Canceled", goneErr)
	}
	ids := map[string]agent.InboundID{}
	dups := map[string]int{}
	for i, a := range acc {
		if a.err != nil {
			t.Fatalf("accept %d: %v", i, a.err)
		}
		k := a.q.DedupeKey
		if a.dup {
			dups[k]++
		}
		if id, ok := ids[k]; ok && id != a.q.ID {
			t.Errorf("key %s accepted as %d and %d", k, id, a.q.ID)
		}
		ids[k] = a.q.ID
	}
	if len(ids) != users || dups["k-0-1"] != 1 || dups["k-1-1"] != 1 || len(dups) != 2 {
		t.Fatalf("accepted %d keys, duplicates %v; want %d keys, k-0-1 and k-1-1 once each", len(ids), dups, users)
	}
	pending, err := db.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != users {
		t.Fatalf("%d pending after the accepts, want %d (the given-up one not written)", len(pending), users)
	}

	// Start: every message, and user 0's twice: the second finds the
	// first's turn (resumed), even in the same group.
	type started struct {
		t       agent.TurnID
		s       agent.Session
		resumed bool
		err     error
	}
	st := make([]started, users+1)
	calls = nil
	for i := range st {
		u := i % users
		calls = append(calls, func() {
			st[i].t, st[i].s, st[i].resumed, st[i].err = db.StartTurn(ctx, ids[in(u, 1).DedupeKey], user)
		})
	}
	grouped(t, db, calls...)
	for i, s := range st {
		u := i % users
		if s.err != nil {
			t.Fatalf("start %d: %v", i, s.err)
		}
		if s.s.Key != key(u) {
			t.Errorf("start %d: session key %v, want %v", i, s.s.Key, key(u))
		}
	}
	if st[0].t != st[users].t || st[0].resumed == st[users].resumed {
		t.Errorf("user 0 started twice: turns %d and %d, resumed %v and %v; want one turn, resumed once",
			st[0].t, st[users].t, st[0].resumed, st[users].resumed)
	}

	// Finish: every message; user 0's first message again (finished:
	// store.ErrFinished), and a queued message with user 1's turn (not
	// its own: store.ErrNotFound, which rolls its group back).
	extra, _, err := db.AcceptInbound(ctx, in(0, 2))
	if err != nil {
		t.Fatal(err)
	}
	rids := make([]agent.ReplyID, users)
	errs := make([]error, users+2)
	calls = nil
	for u := range users {
		calls = append(calls, func() {
			last := &agent.Step{Session: st[u].s.ID, N: 1, Model: "m", Usage: llm.Usage{InputTokens: 3, OutputTokens: 2},
				Messages: []llm.Message{{Role: llm.RoleAssistant, Content: "answer"}}}
			rids[u], errs[u] = db.FinishTurn(ctx, ids[in(u, 1).DedupeKey], st[u].t, agent.TurnDone,
				agent.Reply{Kind: agent.ReplyAnswer, Text: "answer"}, last)
		})
	}
	calls = append(calls, func() {
		_, errs[users] = db.FinishTurn(ctx, first[0], 0, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "again"}, nil)
	}, func() {
		_, errs[users+1] = db.FinishTurn(ctx, extra.ID, st[1].t, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "wrong"}, nil)
	})
	grouped(t, db, calls...)
	for u := range users {
		if errs[u] != nil || rids[u] == 0 {
			t.Fatalf("finish of user %d: reply %d, %v", u, rids[u], errs[u])
		}
	}
	if !errors.Is(errs[users], store.ErrFinished) {
		t.Errorf("finishing a finished inbound: %v, want store.ErrFinished", errs[users])
	}
	if !errors.Is(errs[users+1], store.ErrNotFound) {
		t.Errorf("finishing with another inbound's turn: %v, want store.ErrNotFound", errs[users+1])
	}
	if got := pendingIDs(t, db); len(got) != 1 || got[extra.ID] {
		t.Errorf("pending after the finishes: %v, want only inbound %d, queued", got, extra.ID)
	}
	undelivered, err := db.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each first message's reply and each answer, once.
	if len(undelivered) != 2*users {
		t.Errorf("%d replies undelivered, want %d", len(undelivered), 2*users)
	}

	// Delivered: every answer, and a reply that does not exist.
	derrs := make([]error, users+1)
	calls = nil
	for u := range users {
		calls = append(calls, func() { derrs[u] = db.MarkDelivered(ctx, rids[u], fmt.Sprintf("p%d", u)) })
	}
	calls = append(calls, func() { derrs[users] = db.MarkDelivered(ctx, rids[users-1]+1000, "p") })
	grouped(t, db, calls...)
	for u := range users {
		if derrs[u] != nil {
			t.Fatalf("delivered mark of user %d: %v", u, derrs[u])
		}
	}
	if !errors.Is(derrs[users], store.ErrNotFound) {
		t.Errorf("delivered mark of an unknown reply: %v, want store.ErrNotFound", derrs[users])
	}
	undelivered, err = db.Undelivered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range undelivered {
		if r.Text != "first" {
			t.Errorf("reply %d (%q) undelivered after its mark", r.ID, r.Text)
		}
	}
	if len(undelivered) != users {
		t.Errorf("%d replies undelivered, want the %d first ones", len(undelivered), users)
	}
}

// TestGroupedStartUnderASupersededFence: turns started under a superseded
// fencing token (two, whose one check the group shares), in a group with
// other sessions' starts (one under the current token, one without a
// fence), fail on their own with agent.ErrFenced and write nothing (their
// messages stay queued); the others start.
func TestGroupedStartUnderASupersededFence(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const users = 4
	user := &llm.Message{Role: llm.RoleUser, Content: "hi"}
	accept := func(u, m int) agent.InboundID {
		q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: fmt.Sprintf("f-%d-%d", u, m), Text: "hi",
			Key: agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: fmt.Sprintf("U%d", u)}}})
		if err != nil {
			t.Fatal(err)
		}
		return q.ID
	}
	// Each user's session exists, so that the next starts take the
	// common case, which is grouped.
	var ids []agent.InboundID
	for u := range users {
		q := accept(u, 0)
		if _, _, _, err := db.StartTurn(ctx, q, user); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, accept(u, 1))
	}
	const name = "partition 1 of the group test"
	if err := db.AdvanceFence(ctx, name, 9); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, users)
	var calls []func()
	fenced := func(u int) bool { return u < 2 }
	for u := range users {
		c := ctx
		switch {
		case fenced(u):
			c = agent.WithFence(ctx, agent.Fence{Name: name, Token: 5})
		case u == 2:
			c = agent.WithFence(ctx, agent.Fence{Name: name, Token: 9})
		}
		calls = append(calls, func() { _, _, _, errs[u] = db.StartTurn(c, ids[u], user) })
	}
	grouped(t, db, calls...)
	for u := range users {
		if fenced(u) && !errors.Is(errs[u], agent.ErrFenced) {
			t.Errorf("start of user %d under the superseded token: %v, want ErrFenced", u, errs[u])
		}
		if !fenced(u) && errs[u] != nil {
			t.Errorf("start of user %d in the same group: %v", u, errs[u])
		}
	}
	got := pendingIDs(t, db)
	for u, id := range ids {
		if running, ok := got[id]; !ok || running != !fenced(u) {
			t.Errorf("user %d's message: pending %v, running %v; want running %v", u, ok, running, !fenced(u))
		}
	}
}

// TestGroupedReads reads concurrent sessions' histories and pending
// messages in groups, among them a session that does not exist and a
// message that finished: each caller gets what it would get on its own.
func TestGroupedReads(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const users = 8
	var (
		sessions []agent.SessionID
		pending  []agent.InboundID
		done     agent.InboundID
	)
	for u := range users {
		k := agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: fmt.Sprintf("U%d", u)}}
		q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: fmt.Sprintf("r-%d-0", u), Key: k, Text: "first"})
		if err != nil {
			t.Fatal(err)
		}
		tid, s, _, err := db.StartTurn(ctx, q.ID, &llm.Message{Role: llm.RoleUser, Content: fmt.Sprintf("hello from %d", u)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "hi"}, nil); err != nil {
			t.Fatal(err)
		}
		done = q.ID
		sessions = append(sessions, s.ID)
		p, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: fmt.Sprintf("r-%d-1", u), Key: k, Text: "second"})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p.ID)
	}
	hist := make([][]agent.StoredMessage, users+1)
	herrs := make([]error, users+1)
	ups := make([][]agent.QueuedInbound, users+1)
	uerrs := make([]error, users+1)
	var calls []func()
	for u := range users {
		calls = append(calls,
			func() { hist[u], herrs[u] = db.Recent(ctx, sessions[u], 0) },
			func() { ups[u], uerrs[u] = db.PendingUpTo(ctx, pending[u]) })
	}
	calls = append(calls,
		func() { hist[users], herrs[users] = db.Recent(ctx, sessions[users-1]+1000, 0) },
		func() { ups[users], uerrs[users] = db.PendingUpTo(ctx, done) })
	groups0 := postgres.ReadGroups(db)
	queued, release := postgres.HoldReads(db)
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Go(call)
	}
	for deadline := time.Now().Add(30 * time.Second); queued() < len(calls); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			release()
			t.Fatalf("%d of %d reads queued after 30 s", queued(), len(calls))
		}
	}
	release()
	wg.Wait()
	if postgres.ReadGroups(db) == groups0 {
		t.Fatal("concurrent reads were not sent in a group")
	}
	for u := range users {
		if herrs[u] != nil || uerrs[u] != nil {
			t.Fatalf("user %d: history %v, pending %v", u, herrs[u], uerrs[u])
		}
		if len(hist[u]) != 1 || hist[u][0].Message.Content != fmt.Sprintf("hello from %d", u) || hist[u][0].Session != sessions[u] {
			t.Errorf("history of user %d: %+v, want their one message", u, hist[u])
		}
		if len(ups[u]) != 1 || ups[u][0].ID != pending[u] || ups[u][0].Text != "second" {
			t.Errorf("pending up to user %d's message: %+v, want it alone", u, ups[u])
		}
	}
	if !errors.Is(herrs[users], store.ErrNotFound) {
		t.Errorf("history of an unknown session: %v, want store.ErrNotFound", herrs[users])
	}
	if uerrs[users] != nil || len(ups[users]) != 0 {
		t.Errorf("pending up to a finished message: %v, %v; want none", ups[users], uerrs[users])
	}
}

// TestReadsWaitForWritesGroups: reads and writes share one bound of
// groups in flight, a group per connection, so a read waits while every
// connection's group is busy with writes (and queues with the other reads
// meanwhile), then gets its answer.
func TestReadsWaitForWritesGroups(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k := agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}}
	q, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "share-0", Key: k, Text: "first"})
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "share-1", Key: k, Text: "second"})
	if err != nil {
		t.Fatal(err)
	}
	queued, release := postgres.HoldGroups(db)
	var ups []agent.QueuedInbound
	var upErr error
	var wg sync.WaitGroup
	wg.Go(func() { ups, upErr = db.PendingUpTo(ctx, p.ID) })
	for deadline := time.Now().Add(30 * time.Second); postgres.ReadsQueued(db) < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			release()
			wg.Wait()
			t.Fatalf("a read did not wait while the writes' groups held every connection: %d writes queued, read returned %d messages, %v", queued(), len(ups), upErr)
		}
	}
	release()
	wg.Wait()
	if upErr != nil || len(ups) != 2 || ups[0].ID != q.ID || ups[1].ID != p.ID {
		t.Fatalf("pending up to the second message after the wait: %+v, %v; want both messages", ups, upErr)
	}
}

func pendingIDs(t *testing.T, db *postgres.DB) map[agent.InboundID]bool {
	t.Helper()
	qs, err := db.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[agent.InboundID]bool{}
	for _, q := range qs {
		got[q.ID] = q.Running
	}
	return got
}
