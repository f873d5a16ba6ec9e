package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// module builds a wasm module with one memory page and the given raw data
// section payload (nil for none).
func module(data []byte, dataCount bool) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, 1, 1, 0)       // type section, no types: kept as is
	m = append(m, 5, 3, 1, 0, 1) // memory section: one memory, min 1 page
	if dataCount {
		m = append(m, sectionDataCount, 1, 0) // count patched by the caller
	}
	if data != nil {
		m = append(m, sectionData)
		m = appendUleb(m, uint64(len(data)))
		m = append(m, data...)
	}
	return m
}

func TestMerge(t *testing.T) {
	segs := []segment{
		{offset: 100, data: []byte("cd")},
		{offset: 10, data: []byte("ab")},
		{offset: 14, data: []byte("e")},
		{offset: 60000, data: []byte("far")},
	}
	tests := []struct {
		name   string
		maxGap uint32
		want   []segment
	}{
		{"no gap merged", 0, []segment{{10, []byte("ab")}, {14, []byte("e")}, {100, []byte("cd")}, {60000, []byte("far")}}},
		{"small gaps", 2, []segment{{10, []byte("ab\x00\x00e")}, {100, []byte("cd")}, {60000, []byte("far")}}},
		{"all", 1 << 20, []segment{{10, append(append(append([]byte("ab\x00\x00e"), make([]byte, 85)...), "cd"...), append(make([]byte, 60000-102), "far"...)...)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := module(encodeData(segs), false)
			out, err := MergeDataSegments(in, tt.maxGap)
			if err != nil {
				t.Fatalf("MergeDataSegments: %v", err)
			}
			want := module(encodeData(tt.want), false)
			if !bytes.Equal(out, want) {
				t.Errorf("merged module differs:\n got %x\nwant %x", out, want)
			}
			if diff := cmp.Diff(memoryOf(t, in, false), memoryOf(t, out, false)); diff != "" {
				t.Errorf("initial memory differs (-before +after):\n%s", diff)
			}
		})
	}
}

func TestMergeUpdatesDataCount(t *testing.T) {
	in := module(encodeData([]segment{{1, []byte("a")}, {2, []byte("b")}}), true)
	in[8+3+5+2] = 2 // DataCount = 2
	out, err := MergeDataSegments(in, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := module(encodeData([]segment{{1, []byte("ab")}}), true)
	want[8+3+5+2] = 1
	if !bytes.Equal(out, want) {
		t.Errorf("merged module differs:\n got %x\nwant %x", out, want)
	}
}

func TestMergeRefuses(t *testing.T) {
	tests := []struct {
		name        string
		in          []byte
		unsupported bool
	}{
		{"not wasm", []byte("hello world"), false},
		{"passive segment", module([]byte{1, 1, 1, 'x'}, false), true},
		{"global offset", module([]byte{1, 0, 0x23, 0, 0x0b, 1, 'x'}, false), true},
		{"overlap", module(encodeData([]segment{{0, []byte("abc")}, {1, []byte("x")}}), false), true},
		{"truncated section", module(encodeData([]segment{{0, []byte("abc")}}), false)[:15], false},
		{"trailing bytes", module(append(encodeData([]segment{{0, []byte("a")}}), 7), false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := MergeDataSegments(tt.in, 0)
			if err == nil {
				t.Fatal("MergeDataSegments succeeded, want error")
			}
			if got := errors.Is(err, errUnsupported); got != tt.unsupported {
				t.Errorf("errors.Is(%v, errUnsupported) = %v, want %v", err, got, tt.unsupported)
			}
		})
	}
}

func TestLEB128(t *testing.T) {
	for _, v := range []int32{0, 1, 63, 64, -1, -64, -65, 1 << 20, -1 << 31, 1<<31 - 1} {
		b := appendSleb(nil, int64(v))
		got, n, err := sleb32(b)
		if err != nil || got != v || n != len(b) {
			t.Errorf("sleb32(appendSleb(%d)) = %d, %d, %v; want %d, %d", v, got, n, err, v, len(b))
		}
	}
	for _, v := range []uint64{0, 127, 128, 1 << 32, 1<<64 - 1} {
		b := appendUleb(nil, v)
		got, n, err := uleb(b)
		if err != nil || got != v || n != len(b) {
			t.Errorf("uleb(appendUleb(%d)) = %d, %d, %v", v, got, n, err)
		}
	}
}

// asLinked returns the committed (merged) http_fetch module with its data
// split again the way the Go linker splits it: a segment per run of bytes
// between runs of 8 or more zeros.
func asLinked(tb testing.TB) []byte {
	tb.Helper()
	wasm, err := os.ReadFile("../../http_fetch.wasm")
	if err != nil {
		tb.Skipf("no built module: %v", err)
	}
	var out []byte
	rest := wasm[8:]
	out = append(out, wasm[:8]...)
	for len(rest) > 0 {
		id := rest[0]
		size, n, err := uleb(rest[1:])
		if err != nil {
			tb.Fatal(err)
		}
		payload := rest[1+n : 1+n+int(size)]
		rest = rest[1+n+int(size):]
		if id == sectionData {
			segs, err := parseData(payload)
			if err != nil {
				tb.Fatal(err)
			}
			var split []segment
			for _, s := range segs {
				data, off := s.data, s.offset
				for len(data) > 0 {
					end := bytes.Repeat([]byte{0}, 8)
					i := bytes.Index(data, end)
					if i < 0 {
						split = append(split, segment{off, data})
						break
					}
					if i > 0 {
						split = append(split, segment{off, data[:i]})
					}
					j := i
					for j < len(data) && data[j] == 0 {
						j++
					}
					data, off = data[j:], off+uint32(j)
				}
			}
			payload = encodeData(split)
			tb.Logf("split data into %d segments", len(split))
		}
		out = append(out, id)
		out = appendUleb(out, uint64(len(payload)))
		out = append(out, payload...)
	}
	return out
}

// TestMergeGoModule merges a Go-built tool and checks that the memory an
// instance starts with is unchanged.
func TestMergeGoModule(t *testing.T) {
	in := asLinked(t)
	out, err := MergeDataSegments(in, mergeGap)
	if err != nil {
		t.Fatalf("MergeDataSegments: %v", err)
	}
	if !bytes.Equal(memoryOf(t, in, true), memoryOf(t, out, true)) {
		t.Error("initial memory differs after merging")
	}
}

// memoryOf instantiates a module without running any of its code and
// returns its initial memory.
func memoryOf(t *testing.T, wasm []byte, wasi bool) []byte {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	if wasi {
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		// The talon imports are never called: stub them.
		b := rt.NewHostModuleBuilder("talon")
		b.NewFunctionBuilder().WithFunc(func(int32, int32) int32 { return 0 }).Export("http_request")
		b.NewFunctionBuilder().WithFunc(func(int32, int32) int32 { return 0 }).Export("result_read")
		b.NewFunctionBuilder().WithFunc(func(int32, int32) int32 { return 0 }).Export("has_secret")
		b.NewFunctionBuilder().WithFunc(func(int32, int32, int32) {}).Export("log")
		if _, err := b.Instantiate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	m, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions())
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	mem, ok := m.Memory().Read(0, m.Memory().Size())
	if !ok {
		t.Fatal("read memory")
	}
	return append([]byte(nil), mem...)
}

func BenchmarkInstantiate(b *testing.B) {
	in := asLinked(b)
	merged, err := MergeDataSegments(in, mergeGap)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		wasm []byte
	}{{"as_linked", in}, {"merged", merged}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			rt := wazero.NewRuntime(ctx)
			defer rt.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, rt)
			h := rt.NewHostModuleBuilder("talon")
			h.NewFunctionBuilder().WithFunc(func(int32, int32) int32 { return 0 }).Export("http_request")
			h.NewFunctionBuilder().WithFunc(func(int32, int32) int32 { return 0 }).Export("result_read")
			h.NewFunctionBuilder().WithFunc(func(int32, int32) int32 { return 0 }).Export("has_secret")
			h.NewFunctionBuilder().WithFunc(func(int32, int32, int32) {}).Export("log")
			if _, err := h.Instantiate(ctx); err != nil {
				b.Fatal(err)
			}
			c, err := rt.CompileModule(ctx, tc.wasm)
			if err != nil {
				b.Fatal(err)
			}
			cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize")
			for b.Loop() {
				m, err := rt.InstantiateModule(ctx, c, cfg)
				if err != nil {
					b.Fatal(err)
				}
				m.Close(ctx)
			}
		})
	}
}
