package sandbox

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/sandbox/egress"
)

// A request that needs approval is described by its method, host and path:
// the query's names without their values, never the user info.
func TestApprovalRequestNamesMethodHostAndPath(t *testing.T) {
	eg := &fakeEgress{respond: func(r egress.Request) (*egress.Response, error) {
		return &egress.Response{Status: 201, URL: r.URL}, nil
	}}
	fa := &fakeApprover{ok: false}
	r := newRuntime(t, Config{Egress: eg, Approver: fa, PoolSize: -1}, testTool(t, "http", "approval: non_get\n"))
	args := `{"method":"post","url":"https://user:pw-s3cret@API.Example:8443/a%20b/c?token=tok-s3cret&q=1&q=2#frag-s3cret"}`
	if _, err := r.Run(context.Background(), call("http", args)); err != nil {
		t.Fatal(err)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.reqs) == 0 {
		t.Fatal("no approval asked")
	}
	q := fa.reqs[0]
	got := []string{q.Method, q.Host, q.Path, q.Description}
	want := []string{"POST", "api.example:8443", "/a%20b/c?token=…&q=…&q=…", "POST https://API.Example:8443/a%20b/c"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("method, host, path, description (-want +got):\n%s", diff)
	}
	if s := fmt.Sprintf("%+v", q); strings.Contains(s, "s3cret") {
		t.Errorf("the approval request carries the user info, a query value or the fragment: %s", s)
	}
}

func TestDescribeRequest(t *testing.T) {
	long := "https://h.example/" + strings.Repeat("p", 600)
	cases := []struct{ url, host, path string }{
		{"https://h.example", "h.example", "/"},
		{"https://h.example/x?", "h.example", "/x"},
		{"https://h.example/x?a%26b=1&=2&c", "h.example", "/x?a%26b=…&c=…"},
		{"https://h.example/%60x%60", "h.example", "/%60x%60"},
		{"://bad", "", ""},
		{"https://a b/", "", ""},
		{long, "h.example", "/" + strings.Repeat("p", 399) + "…"},
	}
	for _, c := range cases {
		host, path := describeRequest(c.url)
		if host != c.host || path != c.path {
			t.Errorf("describeRequest(%.40q) = %q, %.60q; want %q, %.60q", c.url, host, path, c.host, c.path)
		}
	}
	for m, want := range map[string]string{"POST": "POST", "DELETE": "DELETE", "P`OST": "(invalid)", "<!CHANNEL>": "(invalid)", "": "(invalid)", strings.Repeat("A", 17): "(invalid)"} {
		if got := describeMethod(m); got != want {
			t.Errorf("describeMethod(%q) = %q, want %q", m, got, want)
		}
	}
	if got := describeURL("https://u:p-s3cret@a b/x?t=1"); got != "(an invalid URL)" {
		t.Errorf("describeURL of an invalid URL = %q, want it not shown", got)
	}
}
