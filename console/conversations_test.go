package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// toolTurn stores a turn of who in which the model called a tool that
// needed an approval, decided by decider, and returns its session.
func (f *fixture) toolTurn(t *testing.T, who agent.Principal, question string, decider string) agent.SessionID {
	t.Helper()
	ctx := context.Background()
	f.seq++
	key := agent.SessionKey{Principal: who, Conversation: agent.Conversation{Channel: "C1"}}
	q, _, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: fmt.Sprint("tool", f.seq), Key: key, Text: question})
	if err != nil {
		t.Fatal(err)
	}
	user := llm.Message{Role: llm.RoleUser, Content: question}
	tid, sess, _, err := f.db.StartTurn(ctx, q.ID, &user)
	if err != nil {
		t.Fatal(err)
	}
	call := llm.ToolCall{ID: "call-1", Name: "http_request", Arguments: `{"url":"https://api.example.com/x","note":"<b>bold</b>"}`}
	if err := f.db.RecordStep(ctx, tid, agent.Step{Session: sess.ID, N: 1, Model: "gpt-big", Usage: llm.Usage{InputTokens: 10, OutputTokens: 5},
		Messages: []llm.Message{{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call}}}}); err != nil {
		t.Fatal(err)
	}
	a, _, err := f.db.CreateApproval(ctx, agent.Approval{Turn: tid, CallID: "call-1", Tool: "http_request", Description: "POST https://api.example.com/x",
		Key: key, ExpiresAt: f.clk.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.db.DecideApproval(ctx, a.ID, agent.ApprovalApproved, decider); err != nil {
		t.Fatal(err)
	}
	final := &agent.Step{Session: sess.ID, N: 2, Model: "gpt-big", Messages: []llm.Message{
		{Role: llm.RoleTool, ToolCallID: "call-1", ToolName: "http_request", Content: "status 201, token [REDACTED]"},
		{Role: llm.RoleAssistant, Content: "Done: created."},
	}}
	if _, err := f.db.FinishTurn(ctx, q.ID, tid, agent.TurnDone, agent.Reply{Kind: agent.ReplyAnswer, Text: "Done: created."}, final); err != nil {
		t.Fatal(err)
	}
	return sess.ID
}

func TestConversationsAndTranscript(t *testing.T) {
	f := newFixture(t)
	s1 := f.toolTurn(t, alice, `<script>alert("x")</script> please post`, "slack:T1:UALICE")
	f.turn(t, bob, "D9", "other", false, time.Second, [2]int{1, 1})
	c := f.client(t)
	f.signIn(t, c)

	_, body := get(t, c, f.srv.URL+"/console/conversations")
	if !strings.Contains(body, "slack:T1:UALICE") || !strings.Contains(body, "discord::42") {
		t.Fatalf("list lacks the two conversations:\n%s", body)
	}
	if strings.Index(body, "discord::42") > strings.Index(body, "slack:T1:UALICE") {
		t.Errorf("list is not newest first")
	}
	for name, q := range map[string]string{
		"by user":    "user=" + url.QueryEscape("slack:T1:UALICE"),
		"by channel": "channel=C1",
		"by text":    "q=please+post",
		// Stored as JSON (\u003c, \"), found as the transcript shows it.
		"by text with markup and quotes": "q=" + url.QueryEscape(`<script>alert("x")`),
	} {
		_, body := get(t, c, f.srv.URL+"/console/conversations?"+q)
		if !strings.Contains(body, "slack:T1:UALICE") || strings.Contains(body, "discord::42") {
			t.Errorf("%s: want only alice's conversation:\n%s", name, body)
		}
	}
	if _, body := get(t, c, f.srv.URL+"/console/conversations?q=nothing-like-this"); !strings.Contains(body, "No conversations match") {
		t.Errorf("a search that matches nothing lists conversations")
	}

	_, body = get(t, c, fmt.Sprintf("%s/console/conversations/%d", f.srv.URL, s1))
	for _, want := range []string{
		"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; please post",
		"Tool call <strong>http_request</strong>",
		"{&#34;url&#34;:&#34;https://api.example.com/x&#34;,&#34;note&#34;:&#34;&lt;b&gt;bold&lt;/b&gt;&#34;}",
		"Approval: POST https://api.example.com/x — <strong>approved</strong> by slack:T1:UALICE at 2026-03-10 12:30:00 UTC",
		"tool result: http_request",
		"status 201, token [REDACTED]",
		"Done: created.",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "<b>bold") {
		t.Errorf("transcript has unescaped user text:\n%s", body)
	}
	for _, path := range []string{"/console/conversations/999", "/console/conversations/x"} {
		if resp, _ := get(t, c, f.srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestCredentialsListAndDelete(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, e := range []vault.Entry{
		{User: "slack:T1:UALICE", Name: "github", Value: vault.NewSecret([]byte("ghp_supersecretvalue123")), Hosts: []string{"api.github.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}},
		{User: "discord::42", Name: "jira", Value: vault.NewSecret([]byte("jira-secret-value-456")), Hosts: []string{"x.atlassian.net"}, Injection: vault.Injection{Kind: vault.InjectHeader, Name: "X-Api-Key"}},
	} {
		if err := f.vault.Set(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	f.vault.Audit(ctx, vault.AuditEvent{User: "slack:T1:UALICE", Name: "github", Host: "api.github.com", Tool: "github", Allowed: true, Reason: "ok"})
	c := f.client(t)
	f.signIn(t, c)
	_, body := get(t, c, f.srv.URL+"/console/credentials")
	for _, want := range []string{"<td>github</td>", "<td>api.github.com</td>", "<td>bearer</td>", "<td>header X-Api-Key</td>", "<td>jira</td>", "<td>allowed</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("credentials page lacks %q", want)
		}
	}
	for _, secret := range []string{"ghp_supersecretvalue123", "jira-secret-value-456"} {
		if strings.Contains(body, secret) {
			t.Fatalf("credentials page shows a value")
		}
	}
	csrf := csrfOf(t, body)

	// Without the CSRF token nothing is deleted.
	resp, _ := post(t, c, f.srv.URL+"/console/credentials/delete", url.Values{"user": {"discord::42"}, "name": {"jira"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("delete without csrf = %d, want 403", resp.StatusCode)
	}
	if !f.vault.Has(ctx, "discord::42", "jira") {
		t.Fatal("a POST without the CSRF token deleted the entry")
	}
	resp, body = post(t, c, f.srv.URL+"/console/credentials/delete", url.Values{"csrf": {csrf}, "user": {"discord::42"}, "name": {"jira"}})
	if resp.Request.URL.Path != "/console/credentials" || !strings.Contains(body, "Deleted jira of discord::42.") {
		t.Errorf("delete ended at %s:\n%s", resp.Request.URL, body)
	}
	if f.vault.Has(ctx, "discord::42", "jira") || !f.vault.Has(ctx, "slack:T1:UALICE", "github") {
		t.Errorf("delete removed the wrong entries")
	}
	resp, _ = post(t, c, f.srv.URL+"/console/credentials/delete", url.Values{"csrf": {csrf}, "user": {"discord::42"}, "name": {"jira"}})
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("deleting again = %d, want 404", resp.StatusCode)
	}
	_, body = get(t, c, f.srv.URL+"/console/")
	if !strings.Contains(body, "<td>delete credential</td><td>discord::42 jira</td>") {
		t.Errorf("the deletion is not in the audit log on the Overview")
	}
}

func TestUsersPage(t *testing.T) {
	f := newFixture(t)
	f.cs.Budgets = Budgets{UserDaily: 1000, UserMonthly: 100_000, Admins: map[string]bool{"discord::42": true}}
	f.turn(t, alice, "C1", "gpt-big", false, time.Second, [2]int{1500, 500})
	f.turn(t, bob, "D9", "gpt-big", false, time.Second, [2]int{10, 5})
	f.turn(t, xss, "C1", "gpt-big", false, time.Second, [2]int{1, 1})
	c := f.client(t)
	f.signIn(t, c)
	_, body := get(t, c, f.srv.URL+"/console/users")
	for _, want := range []string{
		"<td>slack:T1:UALICE</td><td>2026-03-10</td><td>2,000 of 1,000 (200%) over budget</td><td>2,000 of 100,000 (2%)</td>",
		"<td>discord::42</td><td>2026-03-10</td><td>15 (admin: exempt)</td><td>15 (admin: exempt)</td>",
		"&lt;script&gt;alert(1)&lt;/script&gt;",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("Users page lacks %q:\n%s", want, body)
		}
	}
	if strings.Index(body, "UALICE") > strings.Index(body, "discord::42") {
		t.Errorf("Users page is not ordered by tokens")
	}
	_, body = get(t, c, f.srv.URL+"/console/users?q=discord")
	if !strings.Contains(body, "discord::42") || strings.Contains(body, "UALICE") {
		t.Errorf("search for discord:\n%s", body)
	}
}

func TestToolsPage(t *testing.T) {
	f := newFixture(t)
	f.cs.Tools = func() []Tool {
		return []Tool{{Name: "http_request", Enabled: true, Hosts: []string{"api.example.com"}, Credentials: []string{"github"}, Approval: "always"}}
	}
	f.cs.MCP = func(context.Context) ([]MCPServer, error) {
		return []MCPServer{{Name: "docs", URL: "https://mcp.example.com", Approval: "writes", Tools: []store.MCPTool{
			{Server: "docs", Tool: "search", Hash: "aaaaaaaaaaaaaaaa", Approved: "aaaaaaaaaaaaaaaa"},
			{Server: "docs", Tool: "write<x>", Hash: "bbbbbbbbbbbbbbbb", Approved: "cccccccccccccccc"},
		}}}, nil
	}
	var approved []string
	f.cs.ApproveMCP = func(_ context.Context, server string) (int, error) {
		approved = append(approved, server)
		return 1, nil
	}
	f.toolTurn(t, alice, "post it", "slack:T1:UALICE")
	ctx := context.Background()
	// A second call of the tool that failed.
	q, _, err := f.db.AcceptInbound(ctx, agent.Inbound{DedupeKey: "err1", Key: agent.SessionKey{Principal: alice}, Text: "again"})
	if err != nil {
		t.Fatal(err)
	}
	u := llm.Message{Role: llm.RoleUser, Content: "again"}
	tid, _, _, err := f.db.StartTurn(ctx, q.ID, &u)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.db.StartToolCall(ctx, tid, 1, llm.ToolCall{ID: "c2", Name: "http_request", Arguments: "{}"}); err != nil {
		t.Fatal(err)
	}
	if err := f.db.FinishToolCall(ctx, tid, "c2", "boom", true); err != nil {
		t.Fatal(err)
	}
	c := f.client(t)
	f.signIn(t, c)
	_, body := get(t, c, f.srv.URL+"/console/tools")
	for _, want := range []string{
		`aria-label="Approve the changed tools of docs">Approve 1 changed tool</button>`,
		"<td>http_request</td><td>enabled</td><td>api.example.com</td><td>github</td><td>always</td><td class=\"num\">1</td><td class=\"num\">100%</td>",
		"<h3>docs</h3><p>https://mcp.example.com, approval: writes</p>",
		"<td>search</td><td>aaaaaaaaaaaa</td><td>approved</td>",
		"<td>write&lt;x&gt;</td><td>bbbbbbbbbbbb</td><td>changed since approved: disabled until talon mcp approve docs</td>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("Tools page lacks %q:\n%s", want, body)
		}
	}
	if resp, _ := post(t, c, f.srv.URL+"/console/tools/approve", url.Values{"server": {"docs"}}); resp.StatusCode != http.StatusForbidden || len(approved) != 0 {
		t.Errorf("approve without csrf = %d, approved %v", resp.StatusCode, approved)
	}
	resp, _ := post(t, c, f.srv.URL+"/console/tools/approve", url.Values{"csrf": {csrfOf(t, body)}, "server": {"docs"}})
	if resp.Request.URL.Path != "/console/tools" || len(approved) != 1 || approved[0] != "docs" {
		t.Errorf("approve ended at %s, approved %v", resp.Request.URL, approved)
	}
	if _, body := get(t, c, f.srv.URL+"/console/"); !strings.Contains(body, "<td>approve MCP tools</td><td>docs (1)</td>") {
		t.Errorf("the approval is not in the audit log")
	}
}

// stillIndexing is the store while its search index of older messages is
// being built (store.DB says so through SearchIndexing).
type stillIndexing struct{ Store }

func (stillIndexing) SearchIndexing(context.Context) (bool, error) { return true, nil }

func TestConversationSearchNotices(t *testing.T) {
	const short, building = "newest 10,000 messages only", "still being built"
	for _, tt := range []struct {
		name      string
		indexing  bool
		q         string
		wantNotes []string
	}{
		{"indexed", false, "please", nil},
		{"short", false, "po", []string{short}},
		{"indexing", true, "please", []string{building}},
		{"short while indexing", true, "po", []string{short}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, func(s *Server) {
				if tt.indexing {
					s.Store = stillIndexing{s.Store}
				}
			})
			f.toolTurn(t, alice, "please post it", "slack:T1:UALICE")
			f.turn(t, bob, "D9", "other", false, time.Second, [2]int{1, 1})
			c := f.client(t)
			f.signIn(t, c)
			_, body := get(t, c, f.srv.URL+"/console/conversations?q="+url.QueryEscape(tt.q))
			if !strings.Contains(body, "slack:T1:UALICE") || strings.Contains(body, "discord::42") {
				t.Errorf("search %q: want only alice's conversation:\n%s", tt.q, body)
			}
			for _, note := range []string{short, building} {
				if got, want := strings.Contains(body, note), slices.Contains(tt.wantNotes, note); got != want {
					t.Errorf("search %q: notice %q shown %v, want %v", tt.q, note, got, want)
				}
			}
		})
	}
}
