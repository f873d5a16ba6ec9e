package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

var accessTests = []test{
	{"DeniedPrincipals", testDeniedPrincipals},
}

// A denied principal is denied until allowed again, across a restart; each
// change, and only a change, is audited.
func testDeniedPrincipals(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	p, q := alice.Principal, bob.Principal
	denied := func(db Store, p agent.Principal) bool {
		t.Helper()
		ok, err := db.Denied(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if denied(db, p) {
		t.Fatal("a principal never denied is denied")
	}
	for i, step := range []struct {
		p       agent.Principal
		deny    bool
		changed bool
	}{
		{p, true, true}, {p, true, false}, {q, true, true},
	} {
		e.clk.set(t0.Add(time.Duration(i) * time.Minute))
		changed, err := db.SetDenied(ctx, step.p, step.deny, store.ConsoleAction{Actor: "cli", Remote: "127.0.0.1"})
		if err != nil || changed != step.changed {
			t.Errorf("step %d: SetDenied(%s, %v) = %v, %v; want %v", i, step.p, step.deny, changed, err, step.changed)
		}
	}
	db = e.reopen(t)
	if !denied(db, p) || !denied(db, q) {
		t.Error("the denied principals are not denied after a restart")
	}
	other := p
	other.Workspace = "T2"
	if denied(db, other) {
		t.Error("the same user id in another workspace is denied")
	}
	got, err := db.DeniedPrincipals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.DeniedPrincipal{{Principal: q, At: t0.Add(2 * time.Minute), By: "cli"}, {Principal: p, At: t0, By: "cli"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DeniedPrincipals, most recent first (-want +got):\n%s", diff)
	}
	if changed, err := db.SetDenied(ctx, p, false, store.ConsoleAction{Actor: "cli"}); err != nil || !changed {
		t.Errorf("allow: %v, %v", changed, err)
	}
	if denied(db, p) || !denied(db, q) {
		t.Error("allowing one principal did not allow exactly them")
	}
	if n := e.count(t, "console_audit"); n != 3 {
		t.Errorf("%d audit entries, want 3 (two denials and an allow; the repeated denial changed nothing)", n)
	}
	if _, err := db.SetDenied(ctx, agent.Principal{Platform: "slack"}, true, store.ConsoleAction{}); err == nil {
		t.Error("a principal without a user was denied")
	}
}
