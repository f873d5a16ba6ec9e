package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/vault"
)

// An admin denies a user from the Users page and allows them again; both
// go through the store's SetDenied (what the runtime consults), need the
// CSRF token, and land in the audit log.
func TestUsersDenyAndAllow(t *testing.T) {
	f := newFixture(t)
	f.turn(t, alice, "C1", "gpt-big", false, time.Second, [2]int{10, 5})
	c := f.client(t)
	f.signIn(t, c)
	_, page := get(t, c, f.srv.URL+"/console/users")
	csrf := csrfOf(t, page)
	if !strings.Contains(page, `aria-label="Deny slack:T1:UALICE"`) {
		t.Fatalf("no Deny button for alice:\n%s", page)
	}
	denied := func(p agent.Principal) bool {
		t.Helper()
		d, err := f.db.Denied(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	if resp, _ := post(t, c, f.srv.URL+"/console/users/access", url.Values{"user": {"slack:T1:UALICE"}, "access": {"deny"}}); resp.StatusCode != http.StatusForbidden || denied(alice) {
		t.Fatalf("deny without the CSRF token = %d, denied %v", resp.StatusCode, denied(alice))
	}
	resp, body := post(t, c, f.srv.URL+"/console/users/access", url.Values{"csrf": {csrf}, "user": {"slack:T1:UALICE"}, "access": {"deny"}})
	if resp.Request.URL.Path != "/console/users" || !strings.Contains(body, "Denied slack:T1:UALICE") || !denied(alice) {
		t.Fatalf("deny ended at %s, denied %v:\n%s", resp.Request.URL, denied(alice), body)
	}
	if !strings.Contains(body, `aria-label="Allow slack:T1:UALICE again"`) {
		t.Errorf("a denied user has no Allow button:\n%s", body)
	}
	// A Discord id is the same in every server: denied without one.
	resp, body = post(t, c, f.srv.URL+"/console/users/access", url.Values{"csrf": {csrf}, "user": {" discord:G1:42 "}, "access": {"deny"}})
	if !denied(bob) || !strings.Contains(body, "<td>discord::42</td>") {
		t.Errorf("deny discord:G1:42: denied %v:\n%s", denied(bob), body)
	}
	// Hostile input shows as text.
	_, body = post(t, c, f.srv.URL+"/console/users/access", url.Values{"csrf": {csrf}, "user": {xss.String()}, "access": {"deny"}})
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("a denied principal's id is not escaped:\n%s", body)
	}
	for _, bad := range []url.Values{{"user": {"alice"}, "access": {"deny"}}, {"user": {"slack:T1:U1"}, "access": {"ban"}}} {
		bad.Set("csrf", csrf)
		if resp, _ := post(t, c, f.srv.URL+"/console/users/access", bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%v = %d, want 400", bad, resp.StatusCode)
		}
	}

	resp, body = post(t, c, f.srv.URL+"/console/users/access", url.Values{"csrf": {csrf}, "user": {"slack:T1:UALICE"}, "access": {"allow"}})
	if !strings.Contains(body, "Allowed slack:T1:UALICE again") || denied(alice) {
		t.Errorf("allow: denied %v:\n%s", denied(alice), body)
	}
	_, body = get(t, c, f.srv.URL+"/console/")
	for _, want := range []string{"<td>admin</td><td>deny user</td><td>slack:T1:UALICE</td>", "<td>admin</td><td>allow user</td><td>slack:T1:UALICE</td>", "<td>admin</td><td>deny user</td><td>discord::42</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("the audit log lacks %q", want)
		}
	}
}

// The vault's audit log is filtered in the database by user, entry, host,
// tool, result and UTC days; a filter that does not parse is said and
// left out.
func TestCredentialsAuditFilters(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	day := func(d int) time.Time { return time.Date(2026, 3, d, 9, 0, 0, 0, time.UTC) }
	for _, ev := range []vault.AuditEvent{
		{Time: day(1), User: "slack:T1:UALICE", Name: "github", Host: "api.github.com", Tool: "gh", Allowed: true, Reason: "ok"},
		{Time: day(5), User: "slack:T1:UALICE", Name: "github", Host: "evil.example", Tool: "gh", Reason: "host not bound"},
		{Time: day(8), User: "slack:T1:UALICE", Name: "jira", Host: "x.atlassian.net", Tool: "jira", Allowed: true, Reason: "ok"},
		{Time: day(9), User: "discord::42", Name: "github", Host: "api.github.com", Tool: "gh", Allowed: true, Reason: "ok"},
	} {
		f.vault.Audit(ctx, ev)
	}
	c := f.client(t)
	f.signIn(t, c)
	// rows returns the audit table's (day, user, name, host) rows.
	rows := func(query string) []string {
		t.Helper()
		_, body := get(t, c, f.srv.URL+"/console/credentials?"+query)
		i := strings.Index(body, `id="vault-audit"`)
		if i < 0 {
			t.Fatalf("no audit section:\n%s", body)
		}
		var out []string
		trs := strings.Split(body[i:], "<tr>")
		if len(trs) < 3 {
			return nil // no table: None.
		}
		for _, tr := range trs[2:] {
			cells := strings.Split(tr, "<td>")
			if len(cells) < 5 {
				continue
			}
			cut := func(s string) string { return s[:strings.Index(s, "</td>")] }
			out = append(out, cut(cells[1])[:10]+" "+cut(cells[2])+" "+cut(cells[3])+" "+cut(cells[4]))
		}
		return out
	}
	for _, tc := range []struct{ query, want string }{
		{"", "2026-03-09 discord::42 github api.github.com|2026-03-08 slack:T1:UALICE jira x.atlassian.net|2026-03-05 slack:T1:UALICE github evil.example|2026-03-01 slack:T1:UALICE github api.github.com"},
		{"user=slack:T1:UALICE&name=github", "2026-03-05 slack:T1:UALICE github evil.example|2026-03-01 slack:T1:UALICE github api.github.com"},
		{"host=api.github.com", "2026-03-09 discord::42 github api.github.com|2026-03-01 slack:T1:UALICE github api.github.com"},
		{"result=refused", "2026-03-05 slack:T1:UALICE github evil.example"},
		{"tool=jira", "2026-03-08 slack:T1:UALICE jira x.atlassian.net"},
		{"from=2026-03-05&to=2026-03-08", "2026-03-08 slack:T1:UALICE jira x.atlassian.net|2026-03-05 slack:T1:UALICE github evil.example"},
		{"name=nothing", ""},
	} {
		if got := strings.Join(rows(tc.query), "|"); got != tc.want {
			t.Errorf("?%s:\n got %s\nwant %s", tc.query, got, tc.want)
		}
	}
	_, body := get(t, c, f.srv.URL+"/console/credentials?from=yesterday&result=%3Cb%3E")
	if !strings.Contains(body, "from must be a day, YYYY-MM-DD; it was left out.") || !strings.Contains(body, "result must be allowed or refused") {
		t.Errorf("bad filters are not reported:\n%s", body)
	}
}
