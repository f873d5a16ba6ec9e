package main

import (
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/talonhq/talon/sandbox"
)

// The tools' digest is the same for the same tools in any order, and
// changes with a manifest, with an operator's module's bytes, and with a
// built-in module (its recorded sum); the built-in ones are not read.
func TestToolsDigest(t *testing.T) {
	dir := t.TempDir()
	builtin, err := loadTools(filepath.Join(dir, "none"), dir)
	if err != nil || len(builtin) == 0 {
		t.Fatalf("built-in tools: %d, %v", len(builtin), err)
	}
	own := func(body string) sandbox.Tool {
		return sandbox.Tool{Manifest: &sandbox.Manifest{Name: "mine"}, FS: fstest.MapFS{"mine.wasm": {Data: []byte(body)}}, Path: "mine.wasm"}
	}
	digest := func(ts ...sandbox.Tool) string {
		t.Helper()
		d, err := toolsDigest(ts)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	all := append(append([]sandbox.Tool{}, builtin...), own("module one"))
	base := digest(all...)
	reversed := make([]sandbox.Tool, len(all))
	for i, tl := range all {
		reversed[len(all)-1-i] = tl
	}
	if got := digest(reversed...); got != base {
		t.Errorf("digest depends on the order: %s, %s", base, got)
	}
	if got := digest(append(append([]sandbox.Tool{}, builtin...), own("module two"))...); got == base {
		t.Error("an operator's module changed, the digest did not")
	}
	m := *builtin[0].Manifest
	m.Description += " (changed)"
	changed := append([]sandbox.Tool{}, all...)
	changed[0].Manifest = &m
	if got := digest(changed...); got == base {
		t.Error("a manifest changed, the digest did not")
	}
	// A built-in module stands by its recorded sum: the same module's
	// bytes given in memory digest alike.
	b, err := builtin[0].Binary()
	if err != nil {
		t.Fatal(err)
	}
	inMemory := append([]sandbox.Tool{}, all...)
	inMemory[0] = sandbox.Tool{Manifest: builtin[0].Manifest, Wasm: b}
	if got := digest(inMemory...); got != base {
		t.Errorf("a built-in module's recorded sum is not its bytes' SHA-256: %s, %s", base, got)
	}
	inMemory[0].Wasm = append(b[:len(b):len(b)], 0)
	if got := digest(inMemory...); got == base {
		t.Error("a built-in module changed, the digest did not")
	}
}
