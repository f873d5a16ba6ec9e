package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

var approvalTests = []test{
	{"ApprovalDetailAndMessageSurviveReopen", testApprovalDetailAndMessage},
	{"ApprovalDecidedOnce", testApprovalDecidedOnce},
}

// What a prompt shows and the platform message that shows it are kept with
// the approval, across a reopen of the database, and a second
// CreateApproval of the same call finds them.
func testApprovalDetailAndMessage(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q := accept(t, db, inbound("k1", alice))
	turn, _ := startTurn(t, db, q.ID, &llm.Message{Role: llm.RoleUser, Content: "ship it"})
	detail := agent.ApprovalDetail{Method: "POST", Host: "api.github.com:8443", Path: "/repos/o/r/issues?state=…", Args: `{"a":1}`, ArgsOmitted: 1234,
		Reason: "this conversation read untrusted content", URLBytes: 4321, BodyBytes: 99}
	a, created, err := db.CreateApproval(ctx, agent.Approval{Turn: turn, CallID: "c1", Tool: "github", Description: "POST https://api.github.com:8443/repos/o/r/issues",
		Detail: detail, Key: alice, ReplyTo: "r", ExpiresAt: t0.Add(time.Hour)})
	if err != nil || !created {
		t.Fatalf("CreateApproval = %v, %v", created, err)
	}
	want := agent.Approval{ID: a.ID, Turn: turn, CallID: "c1", Tool: "github", Description: "POST https://api.github.com:8443/repos/o/r/issues",
		Detail: detail, Key: alice, ReplyTo: "r", State: agent.ApprovalPending, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("new approval (-want +got):\n%s", diff)
	}
	if err := db.SetApprovalMessage(ctx, a.ID, "C1/1700000000.000100"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetApprovalMessage(ctx, a.ID+100, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetApprovalMessage of an unknown approval = %v, want ErrNotFound", err)
	}

	db = e.reopen(t)
	again, created, err := db.CreateApproval(ctx, agent.Approval{Turn: turn, CallID: "c1", Tool: "github", Description: "POST https://api.github.com:8443/repos/o/r/issues",
		Key: alice, ReplyTo: "r", ExpiresAt: t0.Add(2 * time.Hour)})
	if err != nil || created {
		t.Fatalf("CreateApproval again = %v, %v; want the existing one", created, err)
	}
	pending, err := db.PendingApprovals(ctx)
	if err != nil || len(pending) != 1 {
		t.Fatalf("PendingApprovals = %d approvals, %v; want 1", len(pending), err)
	}
	want.Message = "C1/1700000000.000100"
	for _, got := range []agent.Approval{again, pending[0]} {
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("after a reopen (-want +got):\n%s", diff)
		}
	}
	// Another request of the same call is another approval.
	b, created, err := db.CreateApproval(ctx, agent.Approval{Turn: turn, CallID: "c1", Tool: "github", Description: "DELETE https://api.github.com/repos/o/r",
		Key: alice, ExpiresAt: t0.Add(time.Hour)})
	if err != nil || !created || b.ID == a.ID {
		t.Errorf("a second request of the call: %d created=%v, %v; want a new approval", b.ID, created, err)
	}
}

// An approval is decided once: the first decision (or expiry) wins, and
// every later one reports the state it found.
func testApprovalDecidedOnce(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	q := accept(t, db, inbound("k1", alice))
	turn, _ := startTurn(t, db, q.ID, nil)
	create := func(call string) agent.Approval {
		t.Helper()
		a, created, err := db.CreateApproval(ctx, agent.Approval{Turn: turn, CallID: call, Tool: "deploy", Description: "run tool deploy",
			Key: alice, ExpiresAt: t0.Add(time.Minute)})
		if err != nil || !created {
			t.Fatalf("CreateApproval(%s) = %v, %v", call, created, err)
		}
		return a
	}
	a1, a2, a3 := create("c1"), create("c2"), create("c3")
	if got, err := db.PendingApprovals(ctx); err != nil || len(got) != 3 || got[0].ID != a1.ID || got[2].ID != a3.ID {
		t.Fatalf("PendingApprovals: %+v, %v; want three, oldest first", got, err)
	}

	e.clk.set(t0.Add(30 * time.Second))
	got, changed, err := db.DecideApproval(ctx, a1.ID, agent.ApprovalApproved, "slack:T1:U1")
	if err != nil || !changed || got.State != agent.ApprovalApproved || got.DecidedBy != "slack:T1:U1" || !got.DecidedAt.Equal(t0.Add(30*time.Second)) {
		t.Errorf("first decision: %+v changed=%v, %v", got, changed, err)
	}
	got, changed, err = db.DecideApproval(ctx, a1.ID, agent.ApprovalDenied, "slack:T1:U9")
	if err != nil || changed || got.State != agent.ApprovalApproved || got.DecidedBy != "slack:T1:U1" {
		t.Errorf("second decision: %+v changed=%v, %v; want the first one kept", got, changed, err)
	}
	if got, changed, err := db.DecideApproval(ctx, a2.ID, agent.ApprovalExpired, ""); err != nil || !changed || got.State != agent.ApprovalExpired {
		t.Errorf("expiry: %+v changed=%v, %v", got, changed, err)
	}
	if got, changed, err := db.DecideApproval(ctx, a2.ID, agent.ApprovalApproved, "slack:T1:U1"); err != nil || changed || got.State != agent.ApprovalExpired {
		t.Errorf("approval after the expiry: %+v changed=%v, %v; want it expired", got, changed, err)
	}
	pending, err := db.PendingApprovals(ctx)
	if err != nil || len(pending) != 1 || pending[0].ID != a3.ID {
		t.Errorf("PendingApprovals after decisions: %+v, %v; want only the third", pending, err)
	}
	if got, err := e.reopen(t).GetApproval(ctx, a1.ID); err != nil || got.State != agent.ApprovalApproved {
		t.Errorf("GetApproval after a reopen: %+v, %v", got, err)
	}
	for name, f := range map[string]func() error{
		"GetApproval": func() error { _, err := e.db.GetApproval(ctx, a3.ID+100); return err },
		"DecideApproval": func() error {
			_, _, err := e.db.DecideApproval(ctx, a3.ID+100, agent.ApprovalApproved, "x")
			return err
		},
	} {
		if err := f(); !errors.Is(err, agent.ErrUnknownApproval) {
			t.Errorf("%s of an unknown approval: %v, want ErrUnknownApproval", name, err)
		}
	}
}
