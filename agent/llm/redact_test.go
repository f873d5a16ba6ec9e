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
