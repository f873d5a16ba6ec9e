package tools

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// checkGenerated rebuilds every tool into a temporary directory and fails if
// a committed .wasm differs: run `go generate ./sandbox/tools` to fix.
func checkGenerated(t *testing.T) {
	recorded, err := os.ReadFile("GOVERSION")
	if err != nil {
		t.Fatalf("read GOVERSION: %v", err)
	}
	if v := strings.TrimSpace(string(recorded)); v != runtime.Version() {
		t.Skipf("modules were built with %s, this is %s: output would differ", v, runtime.Version())
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "run", "./internal/build", "-out", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	built, err := filepath.Glob(filepath.Join(dir, "*.wasm"))
	if err != nil || len(built) == 0 {
		t.Fatalf("rebuild produced no modules (err %v)", err)
	}
	for _, b := range built {
		name := filepath.Base(b)
		want, err := os.ReadFile(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%s is not committed: run go generate ./sandbox/tools", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go generate ./sandbox/tools", name)
		}
	}
	committed, _ := filepath.Glob("*.wasm")
	for _, c := range committed {
		if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
			t.Errorf("%s has no source directory: delete it", c)
		}
	}
}
