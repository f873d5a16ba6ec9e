package store_test

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

// TestApprovalDetailAndMessageSurviveReopen: what a prompt shows and the
// platform message that shows it are kept with the approval, across a
// reopen of the database, and a second CreateApproval of the same call
// finds them.
func TestApprovalDetailAndMessageSurviveReopen(t *testing.T) {
	ctx := context.Background()
	db, path := open(t)
	q := accept(t, db, inbound("k1", alice))
	turn, _ := startTurn(t, db, q.ID, &llm.Message{Role: llm.RoleUser, Content: "ship it"})
	detail := agent.ApprovalDetail{Method: "POST", Host: "api.github.com:8443", Path: "/repos/o/r/issues?state=…", Args: `{"a":1}`, ArgsOmitted: 1234,
		Reason: "this conversation read untrusted content", URLBytes: 4321, BodyBytes: 99}
	a, created, err := db.CreateApproval(ctx, agent.Approval{Turn: turn, CallID: "c1", Tool: "github", Description: "POST https://api.github.com:8443/repos/o/r/issues",
		Detail: detail, Key: alice, ReplyTo: "r", ExpiresAt: t0.Add(time.Hour)})
	if err != nil || !created {
		t.Fatalf("CreateApproval = %v, %v", created, err)
	}
	if a.Message != "" || a.Detail != detail {
		t.Errorf("new approval: message %q, detail %+v; want none and %+v", a.Message, a.Detail, detail)
	}
	if err := db.SetApprovalMessage(ctx, a.ID, "C1/1700000000.000100"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetApprovalMessage(ctx, a.ID+100, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetApprovalMessage of an unknown approval = %v, want ErrNotFound", err)
	}
	db.Close()

	db = openAt(t, path)
	again, created, err := db.CreateApproval(ctx, agent.Approval{Turn: turn, CallID: "c1", Tool: "github", Description: "POST https://api.github.com:8443/repos/o/r/issues",
		Key: alice, ReplyTo: "r", ExpiresAt: t0.Add(2 * time.Hour)})
	if err != nil || created {
		t.Fatalf("CreateApproval again = %v, %v; want the existing one", created, err)
	}
	pending, err := db.PendingApprovals(ctx)
	if err != nil || len(pending) != 1 {
		t.Fatalf("PendingApprovals = %d approvals, %v; want 1", len(pending), err)
	}
	for _, got := range []agent.Approval{again, pending[0]} {
		if diff := cmp.Diff(a.ID, got.ID); diff != "" {
			t.Errorf("id (-want +got):\n%s", diff)
		}
		if got.Message != "C1/1700000000.000100" || got.Detail != detail {
			t.Errorf("after a reopen: message %q, detail %+v; want the stored ones", got.Message, got.Detail)
		}
	}
}
