package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestBuiltinModuleDecompressedOnFirstUse checks that start-up decompresses
// no built-in module, and that a tool's first use keeps its module
// decompressed in the data directory's cache for the next processes.
func TestBuiltinModuleDecompressedOnFirstUse(t *testing.T) {
	srv := llmtest.NewServer(t, llmtest.Echo())
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, baseConfig(data, "openai", srv.URL))
	cached := func() []string {
		files, err := filepath.Glob(filepath.Join(data, "cache", "builtin-tools", "*"))
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range files {
			files[i] = filepath.Base(f)
		}
		return files
	}

	if res := runMain(t, env{stdin: strings.NewReader("hi\n")}, "chat", "--config", cfg); res.code != 0 {
		t.Fatalf("chat: exit %d, stderr %s", res.code, res.stderr)
	}
	if res := runMain(t, env{}, "tool", "list", "--config", cfg); res.code != 0 {
		t.Fatalf("tool list: exit %d, stderr %s", res.code, res.stderr)
	}
	if got := cached(); len(got) != 0 {
		t.Fatalf("modules decompressed without a tool call: %v", got)
	}

	for range 2 {
		res := runMain(t, env{}, "tool", "run", "--config", cfg, "html_text", "--args", `{"html":"<title>T</title><p>body</p>"}`)
		if res.code != 0 || !strings.Contains(res.stdout, "body") {
			t.Fatalf("tool run: exit %d, stdout %q, stderr %s", res.code, res.stdout, res.stderr)
		}
		got := cached()
		if len(got) != 1 || !strings.HasPrefix(got[0], "html_text-") || !strings.HasSuffix(got[0], ".wasm") {
			t.Fatalf("cache holds %v, want html_text's module only", got)
		}
		if _, err := os.Stat(filepath.Join(data, "cache", "builtin-tools", got[0])); err != nil {
			t.Fatal(err)
		}
	}
}
