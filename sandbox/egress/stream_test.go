package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRoundTripperStreamsThroughTheChecks(t *testing.T) {
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/big":
			chunk := strings.Repeat("x", 1<<10)
			for range 200 {
				fmt.Fprint(w, chunk)
			}
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		default:
			w.Header().Set("X-Echo", r.Header.Get("Authorization"))
			// The secret straddles the reads the client makes.
			fmt.Fprintf(w, "%s auth=%s end", strings.Repeat("a", 32<<10-5), r.Header.Get("Authorization"))
		}
	}))
	defer api.Close()
	b := newBroker(t, testResolver())
	apiHP := hostRule("api.example.com", api).Host
	b.Credentials = &fakeVault{entries: map[string]vaultEntry{"mcp": {host: apiHP, cred: bearer{secret}}}}
	pol := &Policy{Allow: []Rule{hostRule("api.example.com", api, "GET", "POST")}, Credentials: []string{"mcp"}, MaxResponseBytes: 100 << 10, Timeout: 100 * time.Millisecond}
	client := &http.Client{Transport: b.RoundTripper(caller(pol), "mcp")}
	u := func(p string) string { return urlFor("api.example.com", api, p) }

	resp, err := client.Post(u("/echo"), "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if got, want := string(body[len(body)-40:]), "auth=Bearer "+Redacted+" end"; !strings.HasSuffix(got, want) || strings.Contains(string(body), secret) {
		t.Errorf("body ends %q, want the credential redacted: %q", got, want)
	}
	if got := resp.Header.Get("X-Echo"); got != "Bearer "+Redacted {
		t.Errorf("X-Echo = %q, want the credential redacted", got)
	}

	deny := func(name string, err error, want string) {
		t.Helper()
		var de *DeniedError
		if !errors.As(err, &de) || !strings.Contains(de.Reason, want) {
			t.Errorf("%s: error = %v, want a refusal saying %q", name, err, want)
		}
	}
	_, err = client.Get(u("/metadata"))
	deny("redirect", err, "redirected to http://169.254.169.254")

	resp, err = client.Get(u("/big"))
	if err != nil {
		t.Fatalf("GET /big: %v", err)
	}
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	deny("big", err, "response over the 102400-byte cap")

	req, _ := http.NewRequest("GET", u("/echo"), nil)
	req.Header.Set("Authorization", "Bearer mine")
	_, err = client.Do(req)
	deny("own authorization", err, "may not be set")

	_, err = client.Get("https://api.example.com:1/echo")
	deny("other port", err, "allowlist")

	_, err = client.Get(u("/slow"))
	if err == nil || !strings.Contains(err.Error(), "no response within 100ms") {
		t.Errorf("slow: error = %v, want no response within the timeout", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", u("/echo"), nil)
	if _, err := client.Do(req); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled request: error = %v, want context.Canceled", err)
	}
}
