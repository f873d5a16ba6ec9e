package sandbox

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// htmlTextTool is the built-in html_text tool, read from sandbox/tools.
func htmlTextTool(t testing.TB) Tool {
	t.Helper()
	f, err := os.Open("tools/html_text.wasm.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	w, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile("tools/html_text.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest("html_text.yaml", y)
	if err != nil {
		t.Fatal(err)
	}
	return Tool{Manifest: m, Wasm: w, Source: "builtin"}
}

var benchPage = `{"html":"<!doctype html><html><head><title>Bench</title></head><body><nav>a | b</nav>` +
	strings.Repeat(`<h2>Section</h2><p>Some <b>bold</b> text &amp; an <a href=x>link</a>, then more words.</p>`, 40) + `</body></html>"}`

// TestSnapshotSameOutput: html_text answers the same from instances
// restored from its snapshot as from the instance that ran _initialize
// (the first, which took the snapshot).
func TestSnapshotSameOutput(t *testing.T) {
	ctx := context.Background()
	c := call("html_text", benchPage)
	r := newRuntime(t, Config{PoolSize: -1, Now: forever()}, htmlTextTool(t))
	var want string
	for i := range 3 {
		res, err := r.Call(ctx, c)
		if err != nil || res.IsError {
			t.Fatalf("call %d: %+v %v", i, res, err)
		}
		if i == 0 {
			want = res.Content
			snap := r.tools["html_text"].snap.Load()
			if snap == nil {
				t.Fatal("no snapshot taken")
			}
			t.Logf("snapshot: %d bytes of memory, %d kept in %d runs, %d random states", snap.size, len(snap.data), len(snap.runs), len(snap.spots))
		} else if res.Content != want {
			t.Fatalf("call %d, restored: %q, want %q", i, res.Content, want)
		}
	}
	if !strings.Contains(want, "then more words") {
		t.Fatalf("output %q lacks the page's text", want)
	}
}

var gorand struct {
	once sync.Once
	wasm []byte
	err  error
}

// gorandTool is testdata/gorand, built with the go command on first use.
func gorandTool(t *testing.T) Tool {
	t.Helper()
	gorand.once.Do(func() {
		out := filepath.Join(os.TempDir(), "talon-gorand-"+rand.Text()+".wasm")
		defer os.Remove(out)
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s", "-buildvcs=false", "-o", out, "./testdata/gorand")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			gorand.err = fmt.Errorf("go build testdata/gorand: %v\n%s", err, b)
			return
		}
		gorand.wasm, gorand.err = os.ReadFile(out)
	})
	if gorand.err != nil {
		t.Fatal(gorand.err)
	}
	m, err := ParseManifest("gorand.yaml", []byte("name: gorand\ndescription: test tool gorand\nlimits:\n  memory_mib: 64\n"))
	if err != nil {
		t.Fatal(err)
	}
	return Tool{Manifest: m, Wasm: gorand.wasm, Source: "testdata"}
}

type gorandResult struct {
	AtInit uint64   `json:"at_init"`
	Rand   []uint64 `json:"rand"`
	Order  []int    `json:"order"`
}

func gorandCalls(t *testing.T, r *Runtime, n int) []gorandResult {
	t.Helper()
	var out []gorandResult
	for i := range n {
		res, err := r.Call(context.Background(), call("gorand", "{}"))
		if err != nil || res.IsError {
			t.Fatalf("call %d: %+v %v", i, res, err)
		}
		var g gorandResult
		if err := json.Unmarshal([]byte(res.Content), &g); err != nil || len(g.Rand) != 4 || len(g.Order) != 16 {
			t.Fatalf("call %d: %q (%v)", i, res.Content, err)
		}
		out = append(out, g)
	}
	return out
}

// TestSnapshotReseeds: instances restored from one snapshot of a Go-built
// guest share what its _initialize drew (they are restored, not
// initialised), but draw different math/rand numbers and iterate maps in
// different orders afterwards, because each gets fresh seeds; without
// them, they would draw the same.
func TestSnapshotReseeds(t *testing.T) {
	tool := gorandTool(t)

	// Without snapshots, each instance draws its own numbers in
	// _initialize.
	r := newRuntime(t, Config{PoolSize: -1, Now: forever()}, tool)
	r.noSnapshots = true
	if g := gorandCalls(t, r, 2); g[0].AtInit == g[1].AtInit {
		t.Fatalf("two initialised instances drew the same number in _initialize: %+v", g)
	}

	r = newRuntime(t, Config{PoolSize: -1, Now: forever()}, tool)
	g := gorandCalls(t, r, 5)[1:] // the first instance took the snapshot
	snap := r.tools["gorand"].snap.Load()
	if snap == nil {
		t.Fatal("no snapshot taken")
	}
	if len(snap.spots) == 0 || !snap.spots[0].cheap {
		t.Fatalf("the runtime's random state was not found: %+v", snap.spots)
	}
	sameOrder := true
	for i := 1; i < len(g); i++ {
		if g[i].AtInit != g[0].AtInit {
			t.Fatalf("restored instances differ in what _initialize drew: %+v", g)
		}
		for j := range i {
			if reflect.DeepEqual(g[i].Rand, g[j].Rand) {
				t.Fatalf("restored instances %d and %d drew the same numbers: %v", j, i, g[i].Rand)
			}
		}
		sameOrder = sameOrder && reflect.DeepEqual(g[i].Order, g[0].Order)
	}
	if sameOrder {
		t.Fatalf("4 restored instances iterated a map in the same order: %v", g[0].Order)
	}

	// The same snapshot without the fresh seeds: the numbers repeat.
	snap.spots = nil
	g = gorandCalls(t, r, 2)
	if !reflect.DeepEqual(g[0].Rand, g[1].Rand) {
		t.Fatalf("without fresh seeds, restored instances drew %v and %v: the test does not test the seeding", g[0].Rand, g[1].Rand)
	}
}

// TestSnapshotRandomUnaccounted: a module whose _initialize read random
// bytes that are not a Go runtime's seed is not snapshotted.
func TestSnapshotRandomUnaccounted(t *testing.T) {
	fresh := make([]byte, 65536)
	after := make([]byte, 2*65536)
	after[70000] = 1
	if s := takeSnapshot(fresh, after, nil, nil); s == nil || len(s.runs) != 1 || s.size != uint64(len(after)) {
		t.Fatalf("no random bytes read: snapshot %+v, want one run", s)
	}
	for _, reads := range [][][]byte{{make([]byte, 16)}, {make([]byte, 32)}, {make([]byte, 32), make([]byte, 8)}} {
		for _, b := range reads {
			rand.Read(b)
		}
		if s := takeSnapshot(fresh, after, nil, reads); s != nil {
			t.Errorf("reads of %d bytes: snapshot taken", len(reads[0]))
		}
	}
}

// TestSnapshotNotPoisoned: calls that scribble over all their memory, or
// are stopped at their deadline inside a loop, leave the tool's snapshot
// as it was, and the next restored instances behave as the first.
func TestSnapshotNotPoisoned(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, Config{PoolSize: -1, Now: forever()},
		testTool(t, "scribble", ""), testTool(t, "loop", "limits: {deadline: 50ms}\n"))
	for _, name := range []string{"scribble", "loop"} {
		var before *snapshot
		var data []byte
		for i := range 4 {
			res, err := r.Call(ctx, call(name, `{"i":1}`))
			switch name {
			case "scribble":
				if err != nil || res.Content != `"clean"` {
					t.Fatalf("%s, call %d: %+v %v", name, i, res, err)
				}
			case "loop":
				if !errors.Is(err, ErrDeadline) {
					t.Fatalf("%s, call %d: %+v %v, want the deadline", name, i, res, err)
				}
			}
			if i == 0 {
				if before = r.tools[name].snap.Load(); before == nil {
					t.Fatalf("%s: no snapshot taken", name)
				}
				data = bytes.Clone(before.data)
			}
		}
		if s := r.tools[name].snap.Load(); s != before || !bytes.Equal(s.data, data) {
			t.Errorf("%s: the snapshot changed", name)
		}
	}
}
