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

// TestCheckGenerated rebuilds every tool and compares with the committed
// modules. It runs only with TALON_CHECK_GENERATED=1 (CI sets it), since
// the rebuild takes a while and the output depends on the Go toolchain:
// with another toolchain than GOVERSION names it fails, saying how to run
// it with the right one or regenerate.
func TestCheckGenerated(t *testing.T) {
	if os.Getenv("TALON_CHECK_GENERATED") != "1" {
		t.Skip("set TALON_CHECK_GENERATED=1 to rebuild the modules and compare")
	}
	checkGenerated(t)
}

// TestGeneratedCheckRefusesOtherToolchain runs TestCheckGenerated in a
// directory whose GOVERSION names another toolchain: it must fail, never
// skip, and say how to fix it.
func TestGeneratedCheckRefusesOtherToolchain(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "GOVERSION"), []byte("go1.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestCheckGenerated$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TALON_CHECK_GENERATED=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the check passed with a toolchain mismatch:\n%s", out)
	}
	for _, want := range []string{"--- FAIL: TestCheckGenerated", "GOTOOLCHAIN=go1.0.1", "go generate ./sandbox/tools"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// checkGenerated rebuilds every tool into a temporary directory with the
// toolchain GOVERSION names and fails if a committed file differs: run
// `go generate ./sandbox/tools` to fix.
func checkGenerated(t *testing.T) {
	recorded, err := os.ReadFile("GOVERSION")
	if err != nil {
		t.Fatalf("read GOVERSION: %v", err)
	}
	v := strings.TrimSpace(string(recorded))
	if v != runtime.Version() {
		t.Fatalf("the modules were built with %s and this is %s, whose output would differ: "+
			"run the check with GOTOOLCHAIN=%s (as .ci/run does), or regenerate them with "+
			"`go generate ./sandbox/tools` and commit the result with GOVERSION", v, runtime.Version(), v)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "run", "./internal/build", "-out", dir)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+v)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	built, err := filepath.Glob(filepath.Join(dir, "*.wasm.gz"))
	if err != nil || len(built) == 0 {
		t.Fatalf("rebuild produced no modules (err %v)", err)
	}
	for _, b := range append(built, filepath.Join(dir, "modules.sha256")) {
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
	committed, _ := filepath.Glob("*.wasm*")
	for _, c := range committed {
		if _, err := os.Stat(filepath.Join(dir, c)); err != nil {
			t.Errorf("%s was not built from a tool directory: delete it", c)
		}
	}
}
