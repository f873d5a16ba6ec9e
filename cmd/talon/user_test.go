package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// A user denied with talon user deny is refused in chat without a model
// call, and served again after talon user allow; each change is audited.
func TestUserDenyAndAllowInChat(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	cfg := writeConfig(t, dir, baseConfig(filepath.Join(dir, "data"), "openai", srv.URL))

	res := runMain(t, env{}, "user", "deny", "terminal::local", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "Denied terminal::local") {
		t.Fatalf("user deny: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	if res := runMain(t, env{}, "user", "deny", "terminal::local", "--config", cfg); res.code != 0 || !strings.Contains(res.stdout, "already denied") {
		t.Errorf("user deny again: exit %d, stdout %q", res.code, res.stdout)
	}
	res = runMain(t, env{}, "user", "list", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "terminal::local") || !strings.Contains(res.stdout, "cli") {
		t.Errorf("user list: exit %d, stdout %q", res.code, res.stdout)
	}

	res = runMain(t, env{stdin: strings.NewReader("hello\n/usage\n")}, "chat", "--config", cfg)
	if res.code != 0 || strings.Count(res.stdout, "turned off your access") != 2 || strings.Contains(res.stdout, "echo:") {
		t.Fatalf("denied chat: exit %d, stdout %q, stderr %.500s", res.code, res.stdout, res.stderr)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("a denied user's message reached the model (%d requests)", n)
	}

	if res := runMain(t, env{}, "user", "allow", "terminal::local", "--config", cfg); res.code != 0 || !strings.Contains(res.stdout, "Allowed terminal::local again") {
		t.Fatalf("user allow: exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = runMain(t, env{stdin: strings.NewReader("hello\n")}, "chat", "--config", cfg)
	if res.code != 0 || res.stdout != "echo: hello\n" {
		t.Errorf("allowed again: exit %d, stdout %q", res.code, res.stdout)
	}
	if res := runMain(t, env{}, "user", "list", "--config", cfg); !strings.Contains(res.stdout, "No one is denied") {
		t.Errorf("user list after allow: %q", res.stdout)
	}

	db, err := store.Open(context.Background(), filepath.Join(dir, "data", "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	acts, err := db.ConsoleActions(context.Background(), 10)
	db.Close()
	var got []string
	for _, a := range acts {
		got = append(got, a.Actor+" "+a.Action+" "+a.Target)
	}
	if want := []string{"cli allow user terminal::local", "cli deny user terminal::local"}; err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("audit log = %q (%v), want %q (the second deny changed nothing)", got, err, want)
	}

	// Bad input: a clear error and exit status 2.
	for _, args := range [][]string{{"user", "deny", "alice"}, {"user", "deny"}, {"user", "block", "x"}} {
		if res := runMain(t, env{}, append(args, "--config", cfg)...); res.code != 2 || res.stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a reason", args, res.code, res.stderr)
		}
	}
}
