package storetest

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
)

var replicaTests = []test{
	{"ReplicasAcceptStartAndFinishOnce", testReplicasOnce},
	{"ReplicasDecideOnce", testReplicasDecideOnce},
}

// race runs f(0) … f(n-1) at the same time and waits for them.
func race(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	close(start)
	wg.Wait()
}

// Two stores on the same data (two replicas) racing on the same messages:
// each is accepted once, each turn starts once (the other finds it
// resumed, with the same session), a new key gets one active session, and
// each turn finishes once with one reply.
func testReplicasOnce(t *testing.T, e *env) {
	ctx := context.Background()
	dbs := []Store{e.db, e.replica(t)}
	const keys = 10
	type acc struct {
		id  agent.InboundID
		dup bool
	}
	accepted := make([][2]acc, keys)
	race(2*keys, func(i int) {
		k, r := i/2, i%2
		key := alice
		key.Conversation.Thread = fmt.Sprint("t", k) // a session per key, new to both
		q, dup, err := dbs[r].AcceptInbound(ctx, inbound(fmt.Sprint("k", k), key))
		if err != nil {
			t.Errorf("replica %d: accept k%d: %v", r, k, err)
		}
		accepted[k][r] = acc{q.ID, dup}
	})
	for k, a := range accepted {
		if a[0].id != a[1].id || a[0].dup == a[1].dup {
			t.Errorf("k%d accepted as %+v by the two replicas, want the same id and one duplicate", k, a)
		}
	}
	if n := e.count(t, "inbound"); n != keys {
		t.Errorf("%d inbound rows, want %d", n, keys)
	}

	type started struct {
		turn    agent.TurnID
		session agent.SessionID
		resumed bool
	}
	starts := make([][2]started, keys)
	user := &llm.Message{Role: llm.RoleUser, Content: "hello"}
	race(2*keys, func(i int) {
		k, r := i/2, i%2
		turn, s, resumed, err := dbs[r].StartTurn(ctx, accepted[k][0].id, user)
		if err != nil {
			t.Errorf("replica %d: start k%d: %v", r, k, err)
		}
		starts[k][r] = started{turn, s.ID, resumed}
	})
	for k, s := range starts {
		if s[0].turn != s[1].turn || s[0].session != s[1].session || s[0].resumed == s[1].resumed {
			t.Errorf("k%d started as %+v by the two replicas, want one turn, one session, one resume", k, s)
		}
	}
	counts := e.counts(t)
	if counts["turns"] != keys || counts["sessions"] != keys || counts["messages"] != keys {
		t.Errorf("%d turns, %d sessions, %d messages; want %d of each", counts["turns"], counts["sessions"], counts["messages"], keys)
	}

	// A tool call both replicas record is one row, finished once.
	race(2, func(r int) {
		if err := dbs[r].StartToolCall(ctx, starts[0][0].turn, 1, llm.ToolCall{ID: "c1", Name: "fetch", Arguments: "{}"}); err != nil {
			t.Errorf("replica %d: start tool call: %v", r, err)
		}
	})
	if n := e.count(t, "tool_calls"); n != 1 {
		t.Errorf("%d tool call rows, want 1", n)
	}

	finished := make([][2]error, keys)
	race(2*keys, func(i int) {
		k, r := i/2, i%2
		_, finished[k][r] = dbs[r].FinishTurn(ctx, accepted[k][0].id, starts[k][0].turn, agent.TurnDone,
			agent.Reply{Kind: agent.ReplyAnswer, Text: "hi"}, &agent.Step{Session: starts[k][0].session, N: 1,
				Messages: []llm.Message{{Role: llm.RoleAssistant, Content: "hi"}}})
	})
	for k, errs := range finished {
		ok, refused := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrFinished):
				refused++
			default:
				t.Errorf("k%d: FinishTurn: %v", k, err)
			}
		}
		if ok != 1 || refused != 1 {
			t.Errorf("k%d finished %d times and refused %d, want once each", k, ok, refused)
		}
	}
	counts = e.counts(t)
	if counts["outbound"] != keys || counts["messages"] != 2*keys || counts["turn_steps"] != keys {
		t.Errorf("%d replies, %d messages, %d steps; want %d, %d, %d", counts["outbound"], counts["messages"], counts["turn_steps"], keys, 2*keys, keys)
	}
	if got, err := dbs[1].Pending(ctx); err != nil || len(got) != 0 {
		t.Errorf("Pending after every turn finished: %d, %v", len(got), err)
	}
}

// An approval decided on two replicas at once is decided by one of them.
func testReplicasDecideOnce(t *testing.T, e *env) {
	ctx := context.Background()
	dbs := []Store{e.db, e.replica(t)}
	q := accept(t, e.db, inbound("k1", alice))
	turn, _ := startTurn(t, e.db, q.ID, nil)
	const calls = 5
	ids := make([]agent.ApprovalID, calls)
	for i := range ids {
		created := make([]bool, 2)
		got := make([]agent.ApprovalID, 2)
		race(2, func(r int) {
			a, c, err := dbs[r].CreateApproval(ctx, agent.Approval{Turn: turn, CallID: fmt.Sprint("c", i), Tool: "deploy",
				Description: "run tool deploy", Key: alice, ExpiresAt: t0.Add(time.Minute)})
			if err != nil {
				t.Errorf("replica %d: create: %v", r, err)
			}
			got[r], created[r] = a.ID, c
		})
		if created[0] == created[1] || got[0] != got[1] {
			t.Errorf("approval %d created %v as %v by the two replicas, want one approval created by one", i, created, got)
		}
		ids[i] = got[0]
	}
	for i, id := range ids {
		var changed [2]bool
		var states [2]agent.ApprovalState
		race(2, func(r int) {
			state := agent.ApprovalApproved
			if r == 1 {
				state = agent.ApprovalDenied
			}
			a, c, err := dbs[r].DecideApproval(ctx, id, state, fmt.Sprint("replica ", r))
			if err != nil {
				t.Errorf("replica %d: decide: %v", r, err)
			}
			changed[r], states[r] = c, a.State
		})
		if changed[0] == changed[1] || states[0] != states[1] {
			t.Errorf("approval %d: changed %v, states %v; want one decision both see", i, changed, states)
		}
	}
}
