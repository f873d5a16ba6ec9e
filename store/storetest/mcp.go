package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/talonhq/talon/store"
)

var mcpTests = []test{
	{"MCPToolPins", testMCPToolPins},
}

// A tool is approved on first sight; a change is recorded but not approved
// until ApproveMCPTools, and survives a reopen.
func testMCPToolPins(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db
	see := func(db Store, hash string) string {
		t.Helper()
		got, err := db.SeeMCPTool(ctx, store.MCPTool{Server: "linear", Tool: "create_issue", Hash: hash, Description: "Create.", SeenAt: time.UnixMilli(1000)})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := see(db, "h1"); got != "h1" {
		t.Errorf("first sight approved %q, want h1", got)
	}
	if got := see(db, "h1"); got != "h1" {
		t.Errorf("unchanged approved %q, want h1", got)
	}
	if got := see(db, "h2"); got != "h1" {
		t.Errorf("changed tool approved %q, want still h1", got)
	}
	db = e.reopen(t)
	ts, err := db.MCPTools(ctx, "linear")
	if err != nil || len(ts) != 1 || ts[0].Hash != "h2" || ts[0].Approved != "h1" || ts[0].Description != "Create." {
		t.Fatalf("MCPTools = %+v, %v; want create_issue seen h2, approved h1", ts, err)
	}
	if n, err := db.ApproveMCPTools(ctx, "linear"); err != nil || n != 1 {
		t.Fatalf("ApproveMCPTools = %d, %v; want 1", n, err)
	}
	if got := see(db, "h2"); got != "h2" {
		t.Errorf("approved %q after approval, want h2", got)
	}
	if n, _ := db.ApproveMCPTools(ctx, "linear"); n != 0 {
		t.Errorf("second approval changed %d tools, want 0", n)
	}
	if ts, _ := db.MCPTools(ctx, "other"); len(ts) != 0 {
		t.Errorf("other server's tools = %+v, want none", ts)
	}
}
