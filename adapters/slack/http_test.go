package slack

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func signedRequest(t *testing.T, secret string, at time.Time, body string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/slack/events", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	ts := strconv.FormatInt(at.Unix(), 10)
	r.Header.Set("X-Slack-Request-Timestamp", ts)
	r.Header.Set("X-Slack-Signature", sign(secret, ts, []byte(body)))
	return r
}

func TestEventsAPISignatures(t *testing.T) {
	h := newHarness(t, ModeEvents, nil)
	if err := h.ad.setup(); err != nil {
		t.Fatal(err)
	}
	if err := h.ad.waitReady(h.ctx); err != nil {
		t.Fatal(err)
	}
	body := func(eventID, ts, text string) string {
		b, _ := json.Marshal(callbackBody(eventID, dm("U1", ts, text)))
		return string(b)
	}
	now := time.Now()
	cases := []struct {
		name string
		req  *http.Request
		code int
		resp string
	}{
		{"valid", signedRequest(t, "signing-secret", now, body("Ev1", "8.000100", "signed")), http.StatusOK, ""},
		{"retry of valid", signedRequest(t, "signing-secret", now, body("Ev1", "8.000100", "signed")), http.StatusOK, ""},
		{"stale", signedRequest(t, "signing-secret", now.Add(-6*time.Minute), body("Ev2", "8.000200", "stale")), http.StatusUnauthorized, ""},
		{"forged", signedRequest(t, "not-the-secret", now, body("Ev3", "8.000300", "forged")), http.StatusUnauthorized, ""},
		{"url_verification", signedRequest(t, "signing-secret", now, `{"type":"url_verification","challenge":"ch4ll"}`), http.StatusOK, `{"challenge":"ch4ll"}`},
	}
	tampered := signedRequest(t, "signing-secret", now, body("Ev4", "8.000400", "tampered"))
	tampered.Body = http.NoBody
	cases = append(cases, struct {
		name string
		req  *http.Request
		code int
		resp string
	}{"body changed after signing", tampered, http.StatusUnauthorized, ""})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ad.EventsHandler().ServeHTTP(w, c.req)
			if w.Code != c.code {
				t.Errorf("status = %d, want %d", w.Code, c.code)
			}
			if c.resp != "" && strings.TrimSpace(w.Body.String()) != c.resp {
				t.Errorf("body = %q, want %q", w.Body.String(), c.resp)
			}
		})
	}
	h.idle(t)
	want := []posted{{Channel: "D1", Text: "echo: signed"}}
	if diff := cmp.Diff(want, replies(h.fs)); diff != "" {
		t.Errorf("replies (-want +got):\n%s", diff)
	}
}
