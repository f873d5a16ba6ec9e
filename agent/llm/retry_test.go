package llm

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"none", nil, 0},
		{"seconds", map[string]string{"Retry-After": "3"}, 3 * time.Second},
		{"fractional seconds", map[string]string{"Retry-After": "0.5"}, 500 * time.Millisecond},
		{"milliseconds win", map[string]string{"Retry-After": "3", "Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"http date", map[string]string{"Retry-After": now.Add(10 * time.Second).Format(http.TimeFormat)}, 10 * time.Second},
		{"date in the past", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"capped", map[string]string{"Retry-After": "86400"}, MaxRetryAfter},
		{"capped date", map[string]string{"Retry-After": now.Add(time.Hour).Format(http.TimeFormat)}, MaxRetryAfter},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0},
		{"negative", map[string]string{"Retry-After": "-5"}, 0},
		{"nan", map[string]string{"Retry-After-Ms": "NaN"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			if got := parseRetryAfter(h, now); got != tc.want {
				t.Errorf("parseRetryAfter(%v) = %v, want %v", tc.header, got, tc.want)
			}
		})
	}
}

func TestRetryDelayBounds(t *testing.T) {
	for n := range 40 {
		d := retryDelay(n, 0)
		hi := min(backoffBase<<min(n, 16), backoffCap)
		if n >= 16 {
			hi = backoffCap
		}
		if d < hi/2 || d > hi {
			t.Errorf("retryDelay(%d) = %v, want within [%v, %v]", n, d, hi/2, hi)
		}
	}
	if got := retryDelay(0, 5*time.Second); got != 5*time.Second {
		t.Errorf("retryDelay with Retry-After 5s = %v", got)
	}
}

func TestStatusFailure(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		body      string
		kind      ErrorKind
		retryable bool
	}{
		{"401", 401, `{"error":{"message":"Incorrect API key provided: sk-abc","code":"invalid_api_key"}}`, ErrAuth, false},
		{"ollama model", 404, `{"error":"model \"x\" not found, try pulling it first"}`, ErrModel, false},
		{"vllm model 400", 400, `{"error":{"message":"The model ` + "`x`" + ` does not exist.","type":"NotFoundError"}}`, ErrModel, false},
		{"plain 400", 400, `{"error":{"message":"messages: too long"}}`, ErrBadRequest, false},
		{"quota", 429, `{"error":{"code":"insufficient_quota"}}`, ErrRateLimit, false},
		{"429", 429, ``, ErrRateLimit, true},
		{"502 html", 502, `<html>bad gateway</html>`, ErrServer, true},
		{"408", 408, ``, ErrTimeout, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := statusFailure(tc.status, nil, []byte(tc.body), time.Now())
			if f.kind != tc.kind || f.retryable != tc.retryable {
				t.Errorf("kind %v retryable %v, want %v %v", f.kind, f.retryable, tc.kind, tc.retryable)
			}
			if got := f.err.Error(); len(got) > 80 {
				t.Errorf("error text too long, may carry provider text: %q", got)
			}
		})
	}
}

func TestToolInput(t *testing.T) {
	cases := map[string]string{
		`{"a":1}`: `{"a":1}`,
		`{"a":`:   `{}`,
		``:        `{}`,
		`[1]`:     `{}`,
		`"str"`:   `{}`,
		`null`:    `{}`,
	}
	for in, want := range cases {
		if got := string(toolInput(in)); got != want {
			t.Errorf("toolInput(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestErrorNeverHoldsKey(t *testing.T) {
	c := caller{provider: "openai", cfg: Config{APIKey: "sk-secret", Model: "m", BaseURL: "http://u:p@host/v1?key=sk-secret", Timeout: time.Second}}
	e := c.finalError(&failure{kind: ErrUnreachable, err: errTest("dial http://host/?key=sk-secret failed")})
	if s := e.Error(); containsAny(s, "sk-secret", "u:p") {
		t.Errorf("error leaks: %s", s)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
	}
	return false
}

func TestRedactSecrets(t *testing.T) {
	cases := []struct{ in, want string }{
		// short: whole tokens only
		{"deadline exceeded, key=x&y=1", "deadline exceeded, key=[redacted]&y=1"},
		{"x", "[redacted]"},
		{"x x-ray xx (x)", "[redacted] x-ray xx ([redacted])"},
		{"Bearer x\n", "Bearer [redacted]\n"},
		{"naïvex", "naïvex"},
		{"https://h/v1?key=x&y=1", "https://h/v1?key=[redacted]&y=1"},
		{`{"error":{"code":"x","message":"max tokens exceeded"}}`, `{"error":{"code":"[redacted]","message":"max tokens exceeded"}}`},
		// long: everywhere, inside words too
		{"tok=sk-secret-123abc;prefixsk-secret-123abcsuffix", "tok=[redacted];prefix[redacted]suffix"},
		// long, as a URL or a JSON string writes it
		{`Post "https://h/v1/k%22ey%2F0123+456%3C%3E/chat?key=k%22ey%2F0123%2B456%3C%3E&y=1"`, `Post "https://h/v1/[redacted]/chat?key=[redacted]&y=1"`},
		{`{"error":{"message":"bad key k\"ey/0123+456\u003c\u003e","param":"k\"ey/0123+456<>"}}`, `{"error":{"message":"bad key [redacted]","param":"[redacted]"}}`},
		{`key k"ey/0123+456<> refused`, `key [redacted] refused`},
	}
	for _, c := range cases {
		if got := redactSecrets(c.in, "x", "sk-secret-123abc", `k"ey/0123+456<>`, "", "  "); got != c.want {
			t.Errorf("redactSecrets(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
