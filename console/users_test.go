package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
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
