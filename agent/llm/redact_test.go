package llm_test

import (
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// With a trivially short key (the "x" a local server accepts), an error is
// still readable: "deadline exceeded" used to read "deadline e[redacted]ceeded".
func TestShortKeyDoesNotGarbleErrors(t *testing.T) {
	for _, kind := range []string{llmtest.OpenAI, llmtest.Anthropic} {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, llmtest.Script(llmtest.Response{Hang: true}))
			p, _ := newProvider(t, kind, srv, llm.Config{APIKey: "x", Timeout: 50 * time.Millisecond, MaxRetries: -1})
			_, err := p.Complete(t.Context(), userRequest("hi"))
			if err == nil {
				t.Fatal("a hanging endpoint answered no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "[redacted]") {
				t.Errorf("error garbled by redacting the key %q: %s", "x", msg)
			}
		})
	}
}

// A real key is redacted from an error wherever the endpoint or the
// configuration puts it: echoed in an error body's code (JSON) or in the
// base URL's path the hint names. A short key is redacted there too where
// it stands alone, and leaves the rest of the message as it was.
func TestKeyRedactedFromErrors(t *testing.T) {
	const long = "sk-test-0123456789abcdef"
	for _, kind := range []string{llmtest.OpenAI, llmtest.Anthropic} {
		for _, key := range []string{long, "x"} {
			t.Run(kind+"/"+key, func(t *testing.T) {
				srv := llmtest.NewServer(t, llmtest.Script(llmtest.Response{Status: 401,
					RawBody: `{"type":"error","error":{"type":"authentication_error","code":"` + key + `","message":"key ` + key + ` exceeded"}}`}))
				p, _ := newProvider(t, kind, srv, llm.Config{APIKey: key, MaxRetries: -1})
				_, err := p.Complete(t.Context(), userRequest("hi"))
				if llm.KindOf(err) != llm.ErrAuth {
					t.Fatalf("kind %v, want auth: %v", llm.KindOf(err), err)
				}
				msg := err.Error()
				if !strings.Contains(msg, "unauthorized") || !strings.Contains(msg, "[redacted]") || strings.Contains(msg, "("+key+")") {
					t.Errorf("the echoed key is not redacted, or the message is garbled: %s", msg)
				}
				if strings.Contains(msg, long) {
					t.Errorf("the key is in the error: %s", msg)
				}
			})
		}
	}
	t.Run("in the base URL", func(t *testing.T) {
		srv := llmtest.NewServer(t, nil)
		srv.Close() // unreachable: the hint names the base URL
		p, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL + "/" + long, APIKey: long, Model: "m", MaxRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Complete(t.Context(), userRequest("hi"))
		if llm.KindOf(err) != llm.ErrUnreachable {
			t.Fatalf("kind %v, want unreachable: %v", llm.KindOf(err), err)
		}
		if msg := err.Error(); strings.Contains(msg, long) || !strings.Contains(msg, "/v1/[redacted]?") {
			t.Errorf("the key in the base URL is not redacted from the hint: %s", msg)
		}
	})
}
