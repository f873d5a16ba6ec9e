package slack

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

// longProgram is a Go program of n lines, each about 45 bytes.
func longProgram(n int) string {
	var b strings.Builder
	b.WriteString("package main\n\nfunc main() {\n")
	for i := range n {
		fmt.Fprintf(&b, "\tprintln(%d, \"step %d of the long program\")\n", i, i)
	}
	b.WriteString("}\n")
	return b.String()
}

// TestSlackLongCodeBlockIsUploaded: an answer whose code block would take
// more than three messages posts one short message naming the file and
// uploads the block as a file in the same thread, through
// files.getUploadURLExternal and files.completeUploadExternal; the file is
// the code without its fences, sent with the bot token to the URL Slack
// gave. A secret inside the code is redacted in the file as in text.
func TestSlackLongCodeBlockIsUploaded(t *testing.T) {
	const key = "AKIAZ7Q2M4X9P3K8R6TB"
	code := longProgram(400) // ~18 KB: five messages of 4,000 bytes
	answer := "Here it is:\n\n```go\n" + code + "// key " + key + "\n```\n\nRun it with `go run .`"
	h := startHarness(t, harnessOptions{mode: ModeSocket, model: llmtest.Text(answer), redactor: patternRedactor{}})
	h.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "70.000100", "", "<@UBOT> write me the program")))
	h.fs.waitAcks(t, "e1")
	eventually(t, "a shared file", func() bool { return len(h.fs.sharedFiles()) == 1 })
	h.idle(t)

	posts := h.fs.messages("chat.postMessage")
	if len(posts) != 1 {
		t.Fatalf("%d messages posted, want 1 beside the file", len(posts))
	}
	files := h.fs.sharedFiles()
	f := files[0]
	if !strings.HasPrefix(f.Name, "talon-r") || !strings.HasSuffix(f.Name, "-1.go") {
		t.Errorf("file name %q", f.Name)
	}
	if !strings.Contains(posts[0].Text, "is in the attached file "+f.Name) || strings.Contains(posts[0].Text, "println(") {
		t.Errorf("the text beside the file: %q", posts[0].Text)
	}
	if !strings.Contains(posts[0].Text, "Run it with") {
		t.Errorf("the text after the block is lost: %q", posts[0].Text)
	}
	if f.Channel != "C1" || f.Thread != "70.000100" || f.Thread != posts[0].Thread {
		t.Errorf("file shared in %s/%s, want the reply's thread C1/70.000100", f.Channel, f.Thread)
	}
	if f.Auth != "Bearer xoxb-test-bot-token" {
		t.Errorf("upload sent with Authorization %q", f.Auth)
	}
	content := string(f.Content)
	if !strings.HasPrefix(content, "package main\n") || !strings.Contains(content, "step 399 of the long program") || strings.Contains(content, "```") {
		t.Errorf("file content is not the code block: %.120q", content)
	}
	if strings.Contains(content, key) || !strings.Contains(content, "[REDACTED:") {
		t.Errorf("the secret in the file was not redacted: %q", content[len(content)-80:])
	}
	if f.Completions != 1 {
		t.Errorf("the file was completed %d times", f.Completions)
	}
}

// TestSlackUploadResumed: a delivery resumed after a crash does not upload
// again a file it recorded, nor one Slack shared whose record was lost (it
// is found in the thread by its name), and uploads the files that were
// never shared, a tool's file among them (named with the reply, titled
// with its own name).
func TestSlackUploadResumed(t *testing.T) {
	fs := newFakeSlack(t)
	ad := newBareAdapter(t, fs)
	ctx := context.Background()
	to := replyTo{Channel: "C1", Thread: "80.000100"}.encode()
	text := "a\n```go\n" + longProgram(400) + "```\nb\n```py\n" + strings.ReplaceAll(longProgram(400), "println", "print") + "```\n"
	var recorded []agent.PostedPart
	r := agent.Reply{ID: 9, Kind: agent.ReplyAnswer, Text: text, ReplyTo: to,
		Files:  []agent.OutFile{{Name: "report.csv", MediaType: "text/csv", Data: []byte("a,b\n")}},
		Record: func(_ context.Context, p agent.PostedPart) { recorded = append(recorded, p) }}

	// First attempt: the text is posted, the first file shared but its
	// answer lost (the process dies), the second never started.
	fs.mu.Lock()
	fs.completeLost = true
	fs.mu.Unlock()
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := ad.Deliver(dctx, r); done <- err }()
	<-fs.hung
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the cut delivery succeeded")
	}
	if len(fs.sharedFiles()) != 1 || len(recorded) != 1 {
		t.Fatalf("before the crash: %d files shared, %d parts recorded; want 1 and 1 (the text)", len(fs.sharedFiles()), len(recorded))
	}

	r.Posted, r.Resumed = recorded, true
	if _, err := ad.Deliver(ctx, r); err != nil {
		t.Fatal(err)
	}
	files := fs.sharedFiles()
	if len(files) != 3 || files[0].Name != "talon-r9-1.go" || files[1].Name != "talon-r9-2.py" || files[2].Name != "talon-r9-report.csv" || files[2].Title != "report.csv" {
		var names []string
		for _, f := range files {
			names = append(names, f.Name)
		}
		t.Fatalf("files shared %v, want talon-r9-1.go, talon-r9-2.py and talon-r9-report.csv once each", names)
	}
	if n := len(fs.messages("chat.postMessage")); n != 1 {
		t.Errorf("the text was posted %d times", n)
	}
	if len(recorded) != 4 || recorded[1].PlatformID != files[0].ID || recorded[2].PlatformID != files[1].ID || recorded[3].PlatformID != files[2].ID {
		t.Errorf("recorded %+v", recorded)
	}

	// A third attempt posts and uploads nothing.
	r.Posted = recorded
	if _, err := ad.Deliver(ctx, r); err != nil {
		t.Fatal(err)
	}
	if len(fs.sharedFiles()) != 3 || len(fs.messages("chat.postMessage")) != 1 {
		t.Error("a delivery with every part recorded posted again")
	}
}

// TestSlackUploadRefused: Slack refusing to share the file fails the
// delivery with an error naming the step (the runtime retries it), and
// a short reply is never uploaded.
func TestSlackUploadRefused(t *testing.T) {
	fs := newFakeSlack(t)
	ad := newBareAdapter(t, fs)
	ctx := context.Background()
	to := replyTo{Channel: "C1", Thread: "81.000100"}.encode()
	fs.mu.Lock()
	fs.uploadFail = "not_in_channel"
	fs.mu.Unlock()
	_, err := ad.Deliver(ctx, agent.Reply{ID: 3, Kind: agent.ReplyAnswer, Text: "```\n" + longProgram(400) + "```", ReplyTo: to})
	if err == nil || !strings.Contains(err.Error(), "files.completeUploadExternal") || !strings.Contains(err.Error(), "not_in_channel") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), fs.srv.URL) {
		t.Errorf("the error holds the upload URL: %v", err)
	}
	if _, err := ad.Deliver(ctx, agent.Reply{ID: 4, Kind: agent.ReplyAnswer, Text: "```\nshort\n```", ReplyTo: to}); err != nil {
		t.Fatal(err)
	}
	if len(fs.sharedFiles()) != 0 {
		t.Error("a short code block was uploaded")
	}
}

// TestSlackUploadWithoutScope: an app installed before files:write was in
// the manifest gets a note where the file would be, recorded as that part,
// and the rest of the reply; the delivery does not fail.
func TestSlackUploadWithoutScope(t *testing.T) {
	fs := newFakeSlack(t)
	fs.scopes = "chat:write"
	ad := newBareAdapter(t, fs)
	var recorded []agent.PostedPart
	r := agent.Reply{ID: 5, Kind: agent.ReplyAnswer, Text: "a\n```\n" + longProgram(400) + "```\nb", ReplyTo: replyTo{Channel: "C1", Thread: "82.000100"}.encode(),
		Record: func(_ context.Context, p agent.PostedPart) { recorded = append(recorded, p) }}
	if _, err := ad.Deliver(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	posts := fs.messages("chat.postMessage")
	if len(posts) != 2 || !strings.Contains(posts[1].Text, "I could not attach talon-r5-1.txt") || !strings.Contains(posts[1].Text, "files:write") {
		t.Fatalf("posts %+v", posts)
	}
	if len(recorded) != 2 || recorded[1].N != 1 || recorded[1].PlatformID != posts[1].TS {
		t.Errorf("recorded %+v", recorded)
	}
	if len(fs.sharedFiles()) != 0 {
		t.Error("a file was shared without the scope")
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

// TestSlackToolFileIsUploaded: a tool that returns a file (a sandboxed
// guest, through the tool ABI) has it uploaded in the reply's thread after
// the answer's text, with a secret in it redacted; the model gets a note
// naming the file, never its bytes.
func TestSlackToolFileIsUploaded(t *testing.T) {
	const key = "AKIAZ7Q2M4X9P3K8R6TB"
	csv := "region,revenue\nnorth,12\nkey," + key + "\n"
	args, _ := json.Marshal(map[string]any{"name": "report.csv", "type": "text/csv", "data": []byte(csv)})
	model := llmtest.Script(
		llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "fileout", Arguments: string(args)}}},
		llmtest.Response{Text: "The report is attached."})
	h := startHarness(t, harnessOptions{mode: ModeSocket, model: model, redactor: patternRedactor{}, tools: fileTool(t)})
	h.fs.send(eventsEnvelope("e1", "Ev1", channelMsg("app_mention", "U1", "90.000100", "", "<@UBOT> make the report")))
	h.fs.waitAcks(t, "e1")
	eventually(t, "a shared file", func() bool { return len(h.fs.sharedFiles()) == 1 })
	h.idle(t)

	f := h.fs.sharedFiles()[0]
	// Slack shows the title; the name carries the reply, for a resumed
	// delivery to find it.
	if f.Title != "report.csv" || !strings.HasPrefix(f.Name, "talon-r") || !strings.HasSuffix(f.Name, "-report.csv") || f.Channel != "C1" || f.Thread != "90.000100" {
		t.Errorf("file %s (%s) shared in %s/%s", f.Title, f.Name, f.Channel, f.Thread)
	}
	if got := string(f.Content); strings.Contains(got, key) || !strings.HasPrefix(got, "region,revenue\nnorth,12\nkey,[REDACTED:") {
		t.Errorf("file content %q: the secret is not redacted", got)
	}
	posts := h.fs.messages("chat.postMessage")
	if len(posts) != 1 || !strings.Contains(posts[0].Text, "The report is attached.") {
		t.Errorf("posts %+v", posts)
	}
	reqs := h.llm.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d model requests, want 2", len(reqs))
	}
	var toolMsg string
	for _, m := range reqs[1].Messages {
		if m.Role == llm.RoleTool {
			toolMsg = m.Content
		}
	}
	if !strings.Contains(toolMsg, "report.csv") || !strings.Contains(toolMsg, "attached to your reply") || strings.Contains(toolMsg, "north,12") || strings.Contains(toolMsg, "cmVnaW9u") {
		t.Errorf("the model's tool result %q: want a note naming the file, without its bytes", toolMsg)
	}
}
