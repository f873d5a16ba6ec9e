package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

func TestChatRefusesLineOverTheLimitAndGoesOn(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))
	in := strings.Repeat("x", 2<<20) + "\nhello\n"
	res := runMain(t, env{stdin: strings.NewReader(in)}, "chat", "--config", cfg)
	want := "That message is too long (the limit is 1 MiB a line); it was not sent.\necho: hello\n"
	if res.code != 0 || res.stdout != want {
		t.Fatalf("exit %d, stdout %.200q, want %q; stderr %.500s", res.code, res.stdout, want, res.stderr)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("model requests: got %d, want 1 (only the short line)", n)
	}
}
