package sandbox

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

// countingFS records which files were opened.
type countingFS struct {
	fs.FS
	mu     sync.Mutex
	opened map[string]int // guarded by mu
}

func (c *countingFS) Open(name string) (fs.File, error) {
	c.mu.Lock()
	if c.opened == nil {
		c.opened = map[string]int{}
	}
	c.opened[name]++
	c.mu.Unlock()
	return c.FS.Open(name)
}

func (c *countingFS) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened[name]
}

// An idle Runtime holds no module binary and no wazero runtime: LoadTools
// reads only manifests, New builds nothing, Tools compiles nothing, and
// the first call reads and compiles the one module it needs.
func TestLazyStart(t *testing.T) {
	builtin := &countingFS{FS: fstest.MapFS{
		"echo.wasm":  {Data: fixture.wasm["echo"]},
		"echo.yaml":  {Data: []byte("name: echo\ndescription: built-in echo\n")},
		"state.wasm": {Data: fixture.wasm["state"]},
		"state.yaml": {Data: []byte("name: state\ndescription: built-in state\n")},
	}}
	tools, err := LoadTools(builtin, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tl := range tools {
		if tl.Wasm != nil {
			t.Errorf("%s: LoadTools holds the module's %d bytes", tl.Manifest.Name, len(tl.Wasm))
		}
	}
	r := newRuntime(t, Config{Tools: tools})
	if _, err := r.Tools(t.Context(), alice); err != nil {
		t.Fatal(err)
	}
	r.engMu.Lock()
	built := r.eng != nil
	r.engMu.Unlock()
	if built || builtin.count("echo.wasm")+builtin.count("state.wasm") > 0 {
		t.Fatalf("before any call: engine built %v, echo.wasm read %d times, state.wasm %d, want nothing",
			built, builtin.count("echo.wasm"), builtin.count("state.wasm"))
	}

	for range 3 {
		res, err := r.Call(t.Context(), call("echo", `{"x":1}`))
		if err != nil || res.IsError {
			t.Fatalf("echo: %+v, %v", res, err)
		}
	}
	if got := builtin.count("echo.wasm"); got != 1 {
		t.Errorf("echo.wasm read %d times, want once", got)
	}
	if got := builtin.count("state.wasm"); got != 0 {
		t.Errorf("state.wasm read %d times, want never (not called)", got)
	}
	if w := r.tools["echo"].tool.Wasm; w != nil {
		t.Errorf("the compiled tool still holds its %d-byte binary", len(w))
	}
}

// An operator's module that cannot be read any more when it is first used
// fails its calls with ErrLoad and drops out of Tools, like a broken one.
func TestLazyModuleGone(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "echo.wasm"), fixture.wasm["echo"], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "echo.yaml"), []byte("name: echo\ndescription: operator echo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tools, err := LoadTools(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "echo.wasm")); err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, Config{Tools: tools})
	_, err = r.Call(t.Context(), call("echo", `{}`))
	if !errors.Is(err, ErrLoad) {
		t.Fatalf("call: %v, want ErrLoad", err)
	}
	if lerr := r.Load(context.Background(), "echo"); lerr == nil || !strings.Contains(lerr.Error(), "read module") {
		t.Errorf("Load: %v, want the read error", lerr)
	}
	listed, _ := r.Tools(t.Context(), alice)
	if len(listed) != 0 {
		t.Errorf("Tools lists %d tools, want none", len(listed))
	}
}
