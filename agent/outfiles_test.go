package agent_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// reportTools has one tool, "report", that returns a CSV file.
type reportTools struct {
	mu    sync.Mutex
	calls int // guarded by mu
}

func (*reportTools) Tools(context.Context, agent.Principal) ([]llm.Tool, error) {
	return []llm.Tool{{Name: "report", Description: "Make a report.", Parameters: json.RawMessage(`{"type":"object"}`)}}, nil
}

func (r *reportTools) Run(context.Context, agent.ToolCall) (agent.ToolResult, error) {
	r.mu.Lock()
	r.calls++
	r.mu.Unlock()
	return agent.ToolResult{Content: `"made"`, File: &agent.OutFile{Name: "report.csv", MediaType: "text/csv", Data: []byte("a,b\n1,2\n")}}, nil
}

// A tool's file is kept with its turn before the tool's result is
// recorded: a process that dies before the turn's next step is resumed
// without running the tool again, and its reply carries the file; the
// model read a note naming the file, never its bytes.
func TestToolFileSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "talon.db")
	files := &store.FileDir{Dir: filepath.Join(dir, "files")}
	tools1 := &reportTools{}
	srv1 := llmtest.NewServer(t, llmtest.Script(llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "report", Arguments: `{}`}}}))
	var crash *crashStore
	h1 := startHarness(t, path, srv1, &recorder{}, func(rt *agent.Runtime) {
		crash = &crashStore{DB: rt.Store.(*store.DB), at: "append tool results"}
		rt.Store, rt.Tools, rt.Files = crash, tools1, files
	})
	h1.send("u1", "make the report")
	h1.idle()
	h1.stop()
	if !crash.dead.Load() || tools1.calls != 1 || len(h1.ch.all()) != 0 {
		t.Fatalf("before the crash: dead %v, %d tool runs, %d replies", crash.dead.Load(), tools1.calls, len(h1.ch.all()))
	}

	tools2 := &reportTools{}
	srv2 := llmtest.NewServer(t, llmtest.Text("Here is the report."))
	h2 := startHarness(t, path, srv2, &recorder{}, func(rt *agent.Runtime) { rt.Tools, rt.Files = tools2, files })
	h2.idle()
	replies := h2.ch.all()
	if len(replies) != 1 || tools2.calls != 0 {
		t.Fatalf("after restart: %d replies, %d tool runs", len(replies), tools2.calls)
	}
	if f := replies[0].Files; len(f) != 1 || f[0].Name != "report.csv" || f[0].MediaType != "text/csv" || string(f[0].Data) != "a,b\n1,2\n" {
		t.Errorf("reply files %+v", f)
	}
	var note string
	for _, m := range srv2.Requests()[0].Messages {
		if m.Role == llm.RoleTool {
			note = m.Content
		}
	}
	if !strings.Contains(note, "report.csv (8 bytes, text/csv)") || strings.Contains(note, "1,2") {
		t.Errorf("the model's tool result %q", note)
	}
}

// Without a file store the file is not sent, and the model is told so.
func TestToolFileWithoutStore(t *testing.T) {
	tools := &reportTools{}
	h := newHarness(t, llmtest.Script(
		llmtest.Response{ToolCalls: []llm.ToolCall{{ID: "c1", Name: "report", Arguments: `{}`}}},
		llmtest.Response{Text: "done"}), func(rt *agent.Runtime) { rt.Tools = tools })
	h.send("u1", "make the report")
	h.idle()
	replies := h.ch.all()
	if len(replies) != 1 || len(replies[0].Files) != 0 {
		t.Fatalf("replies %+v", replies)
	}
	reqs := h.llm.Requests()
	last := reqs[len(reqs)-1].Messages
	if m := last[len(last)-1]; m.Role != llm.RoleTool || !strings.Contains(m.Content, "files cannot be sent here") {
		t.Errorf("tool result %q", m.Content)
	}
}
