package sandbox

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"testing"

	"github.com/talonhq/talon/agent"
)

// heapGrowth runs f and returns by how much the Go heap obtained from the
// system grew (HeapSys): what a guest made the host hold at its peak.
func heapGrowth(f func()) int64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return int64(after.HeapSys) - int64(before.HeapSys)
}

// Tables count in the memory limit: a table declared huge is refused at
// load, and table.grow stops where references (8 bytes each in wazero)
// and linear memory together reach limits.memory_mib, so a guest cannot
// make the gateway hold more than its limit, however it grows and fills
// its tables.
func TestHostileTables(t *testing.T) {
	const limit = 16 // MiB
	manifest := "limits: {memory_mib: 16}\n"
	// 16 MiB less the one page of linear memory, in references.
	const maxRefs = (limit<<20 - 65536) / 8

	t.Run("declared huge", func(t *testing.T) {
		tool := testTool(t, "tablehuge", manifest)
		var err error
		grew := heapGrowth(func() {
			r := newRuntime(t, Config{}, tool)
			err = r.Load(context.Background(), "tablehuge")
		})
		var le *LimitError
		if !errors.As(err, &le) || !errors.Is(err, ErrLimit) || le.Got != 1025 || le.Max != limit {
			t.Fatalf("Load = %v, want a *LimitError: 1025 MiB at start (1 GiB of references and a page) above 16", err)
		}
		if err := Check(context.Background(), fixture.wasm["tablehuge"], tool.Manifest); !errors.As(err, &le) {
			t.Errorf("Check = %v, want the same *LimitError", err)
		}
		if grew > 64<<20 {
			t.Errorf("loading the module grew the heap by %d MiB", grew>>20)
		}
	})

	r := newRuntime(t, Config{PoolSize: -1}, echoTool(t), testTool(t, "tablegrow", manifest))
	tests := []struct {
		name, arg string
		want      string
		wantErr   error
	}{
		// One growth of 2^20 references (8 MiB) fits; the 47 others are
		// refused.
		{"grow loop", "0", `[1,1048576]`, nil},
		// The guest traps once refused: reported as out of memory.
		{"grow until refused", "1", "", ErrMemory},
		// The table reaches the limit exactly and is filled whole; then
		// linear memory cannot grow either.
		{"fill the maximum", "2", "[" + strconv.Itoa(maxRefs) + ",1]", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			var err error
			grew := heapGrowth(func() {
				alongside(t, r, func() {
					var res agent.ToolResult
					res, err = r.Call(context.Background(), call("tablegrow", tt.arg))
					got = res.Content
				})
			})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("output = %s, want %s", got, tt.want)
			}
			// The references at the limit are 16 MiB; appending to them
			// briefly holds the old and new slices.
			if grew > 4*limit<<20 {
				t.Errorf("the host heap grew by %d MiB for a tool limited to %d MiB", grew>>20, limit)
			}
		})
	}
}
