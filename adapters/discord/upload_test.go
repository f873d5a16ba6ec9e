package discord

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/vault/leak"
)

// patternRedactor is the vault's leak detector for well-known token
// formats, as cmd wires it for a principal without secrets.
type patternRedactor struct{}

func (patternRedactor) Redact(_ context.Context, _ agent.Principal, text string) (string, int) {
	out, f := leak.NewPatterns().Redact(text)
	return out, len(f)
}

// longProgram is a Python program of n lines, each about 40 characters.
func longProgram(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "print(%d, 'step %d of the long program')\n", i, i)
	}
	return b.String()
}

// TestDiscordLongCodeBlockIsAttached: an answer whose code block would
// take more than three messages is one short message naming the file and
// the block as a multipart attachment (payload_json and files[0]) in the
// same channel, with an enforced nonce; a secret in the code is redacted
// in the file as in text; delivering the reply again posts nothing.
func TestDiscordLongCodeBlockIsAttached(t *testing.T) {
	const key = "AKIAZ7Q2M4X9P3K8R6TB"
	answer := "Here it is:\n\n```python\n" + longProgram(200) + "# key " + key + "\n```\n\nRun it with python3."
	e := start(t, options{handler: llmtest.Text(answer), redactor: patternRedactor{}})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "write me the program"))
	waitFor(t, "the attachment", func() bool {
		for _, p := range e.f.postsSnapshot() {
			if len(p.files) > 0 {
				return true
			}
		}
		return false
	})
	if err := e.rt.WaitIdle(e.ctx); err != nil {
		t.Fatal(err)
	}
	posts := e.f.postsSnapshot()
	if len(posts) != 2 {
		t.Fatalf("%d messages posted, want the text and the file", len(posts))
	}
	text, _ := posts[0].body["content"].(string)
	if len(posts[0].files) != 0 || len(posts[1].files) != 1 {
		t.Fatalf("files per message: %d, %d; want 0, 1", len(posts[0].files), len(posts[1].files))
	}
	f := posts[1].files[0]
	if !strings.HasPrefix(f.name, "talon-r") || !strings.HasSuffix(f.name, "-1.py") {
		t.Errorf("file name %q", f.name)
	}
	if !strings.Contains(text, "is in the attached file "+f.name) || !strings.Contains(text, "Run it with python3.") || strings.Contains(text, "print(") {
		t.Errorf("the text beside the file: %q", text)
	}
	if posts[1].channel != dmChannel {
		t.Errorf("file posted in %s, want the DM %s", posts[1].channel, dmChannel)
	}
	content := string(f.data)
	if !strings.HasPrefix(content, "print(0, ") || !strings.Contains(content, "step 199 of") || strings.Contains(content, "```") {
		t.Errorf("file content is not the code block: %.80q", content)
	}
	if strings.Contains(content, key) || !strings.Contains(content, "[REDACTED:") {
		t.Errorf("the secret in the file was not redacted: %q", content[len(content)-60:])
	}
	if n, _ := posts[1].body["nonce"].(string); n == "" || posts[1].body["enforce_nonce"] != true {
		t.Errorf("file message nonce %v enforce %v", posts[1].body["nonce"], posts[1].body["enforce_nonce"])
	}
	if am, ok := posts[1].body["allowed_mentions"].(map[string]any); !ok || fmt.Sprint(am["parse"]) != "[]" {
		t.Errorf("file message allowed_mentions %v", posts[1].body["allowed_mentions"])
	}
}

// TestDiscordAttachmentRedeliveryIdempotent: a reply delivered again after
// a crash (its parts not recorded) posts neither its text nor its file a
// second time, within Discord's nonce window; a part recorded is skipped
// outright; a file with an untrusted link is sent with SUPPRESS_EMBEDS.
func TestDiscordAttachmentRedeliveryIdempotent(t *testing.T) {
	e := start(t, options{})
	r := agent.Reply{ID: 12, Key: agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: "7"}, Conversation: agent.Conversation{Channel: dmChannel}},
		ReplyTo: "m:400:41", Kind: agent.ReplyAnswer,
		Text: "Two:\n```go\n" + longProgram(200) + "```\nand\n| a | b |\n|---|---|\n" + strings.Repeat("| https://evil.example/?d=x | 2 |\n", 200)}
	var recorded []agent.PostedPart
	r.Record = func(_ context.Context, p agent.PostedPart) { recorded = append(recorded, p) }
	if _, err := e.a.Deliver(e.ctx, r); err != nil {
		t.Fatal(err)
	}
	first := e.f.postsSnapshot()
	if len(first) != 3 || len(first[1].files) != 1 || len(first[2].files) != 1 {
		t.Fatalf("posts %d, want the text and two files", len(first))
	}
	if first[1].files[0].name != "talon-r12-1.go" || first[2].files[0].name != "talon-r12-2.md" {
		t.Errorf("files %q, %q", first[1].files[0].name, first[2].files[0].name)
	}
	if first[2].body["flags"] != float64(4) {
		t.Errorf("flags %v; want SUPPRESS_EMBEDS for the table with an untrusted link", first[2].body["flags"])
	}
	if len(recorded) != 3 || recorded[1].N != 1 || recorded[2].N != 2 || recorded[2].PlatformID != first[2].id {
		t.Errorf("recorded %+v", recorded)
	}
	// Again, nothing recorded (a crash before the records): nonces.
	r.Record = nil
	if _, err := e.a.Deliver(e.ctx, r); err != nil {
		t.Fatal(err)
	}
	// Again, past the nonce window, with the parts recorded.
	e.f.forgetNonces()
	r.Posted = recorded
	if _, err := e.a.Deliver(e.ctx, r); err != nil {
		t.Fatal(err)
	}
	if n := len(e.f.postsSnapshot()); n != 3 {
		t.Errorf("redeliveries posted %d messages, want 3", n)
	}
}

// fileTool is the sandbox with the test guest fileout, which returns the
// file its arguments describe ({"name", "type", "data"}) beside "done".
func fileTool(t *testing.T) agent.ToolRunner {
	t.Helper()
	wasm, err := os.ReadFile("../../sandbox/testdata/fileout.wasm")
	if err != nil {
		t.Fatal(err)
	}
	m, err := sandbox.ParseManifest("fileout.yaml", []byte("name: fileout\ndescription: returns a file\n"))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := sandbox.New(context.Background(), sandbox.Config{Tools: []sandbox.Tool{{Manifest: m, Wasm: wasm, Source: "test"}}, CacheDir: t.TempDir(), PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close(context.Background()) })
	return sb
}

// TestDiscordToolFileIsAttached: files two tools return (sandboxed guests,
// through the tool ABI) are attached after the answer's text, each in a
// message of its own with its type, a secret in one redacted, a second
// file of the same name renamed; a binary file holding a secret is
// withheld and the model told; the model gets notes, never the bytes.
func TestDiscordToolFileIsAttached(t *testing.T) {
	const key = "AKIAZ7Q2M4X9P3K8R6TB"
	file := func(name, typ string, data []byte) string {
		b, _ := json.Marshal(map[string]any{"name": name, "type": typ, "data": data})
		return string(b)
	}
	model := llmtest.Script(
		llmtest.Response{ToolCalls: []llm.ToolCall{
			{ID: "c1", Name: "fileout", Arguments: file("report.csv", "text/csv", []byte("a,b\nkey,"+key+"\n"))},
			{ID: "c2", Name: "fileout", Arguments: file("report.csv", "text/csv", []byte("c,d\n"))},
			{ID: "c3", Name: "fileout", Arguments: file("blob.bin", "application/octet-stream", append([]byte{0xff, 0xfe, 0}, key...))},
		}},
		llmtest.Response{Text: "Both reports are attached."})
	e := start(t, options{handler: model, redactor: patternRedactor{}, tools: fileTool(t)})
	e.f.dispatch("MESSAGE_CREATE", dmFrom("41", "7", "make the reports"))
	waitFor(t, "the attachments", func() bool { return len(e.f.postsSnapshot()) >= 3 })
	if err := e.rt.WaitIdle(e.ctx); err != nil {
		t.Fatal(err)
	}
	posts := e.f.postsSnapshot()
	if len(posts) != 3 {
		t.Fatalf("%d messages, want the text and two files", len(posts))
	}
	if c, _ := posts[0].body["content"].(string); !strings.Contains(c, "Both reports are attached.") || len(posts[0].files) != 0 {
		t.Errorf("first message %q with %d files", c, len(posts[0].files))
	}
	byName := map[string]string{}
	for _, p := range posts[1:] {
		if len(p.files) != 1 {
			t.Fatalf("a file message has %d files", len(p.files))
		}
		f := p.files[0]
		byName[f.name] = string(f.data)
		if f.contentType != "text/csv" {
			t.Errorf("%s sent as %q", f.name, f.contentType)
		}
		if strings.Contains(string(f.data), key) {
			t.Errorf("%s holds the secret: %q", f.name, f.data)
		}
	}
	// The calls ran in parallel: either may keep the name.
	a, b := byName["report.csv"], byName["report-2.csv"]
	if a == "c,d\n" {
		a, b = b, a
	}
	if !strings.HasPrefix(a, "a,b\nkey,[REDACTED:") || b != "c,d\n" {
		t.Errorf("files %q", byName)
	}
	reqs := e.llm.Requests()
	notes := ""
	for _, m := range reqs[len(reqs)-1].Messages {
		if m.Role == llm.RoleTool {
			notes += m.Content + "\n"
		}
	}
	if strings.Count(notes, "attached to your reply") != 2 || !strings.Contains(notes, "blob.bin, but it was withheld") || strings.Contains(notes, "c,d") {
		t.Errorf("the model's tool results:\n%s", notes)
	}
}
