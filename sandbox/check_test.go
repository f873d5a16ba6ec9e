package sandbox

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// toolNames lists the names Tools returns.
func toolNames(t *testing.T, r *Runtime) []string {
	t.Helper()
	tools, err := r.Tools(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools {
		names = append(names, tl.Name)
	}
	return names
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	for _, good := range []string{"echo", "http", "secret", "fault", "passwd", "wasi", "state"} {
		if err := Check(ctx, fixture.wasm[good], nil); err != nil {
			t.Errorf("Check(%s) = %v, want nil", good, err)
		}
	}

	var verr *ABIVersionError
	err := Check(ctx, fixture.wasm["abi2"], nil)
	if !errors.As(err, &verr) || verr.Version != 2 || !errors.Is(err, ErrABI) {
		t.Errorf("Check(abi2) = %v, want *ABIVersionError{2}", err)
	} else if got, want := err.Error(), "built for tool ABI version 2; this Talon speaks version 1"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}

	err = Check(ctx, fixture.wasm["badimport"], nil)
	var imps []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ie *ImportError
		if errors.As(e, &ie) {
			imps = append(imps, ie.Module+"."+ie.Name)
		}
	}
	if !errors.Is(err, ErrABI) || strings.Join(imps, " ") != "talon.exec env.abort" {
		t.Errorf("Check(badimport) = %v, want import errors for talon.exec and env.abort", err)
	}

	err = Check(ctx, fixture.wasm["reserved"], nil)
	if !errors.Is(err, ErrABI) || !strings.Contains(err.Error(), `exports "talon.interrupt", a name the host reserves`) {
		t.Errorf("Check(reserved) = %v, want ErrABI about the reserved export", err)
	}

	err = Check(ctx, fixture.wasm["startloop"], nil)
	if !errors.Is(err, ErrABI) || !strings.Contains(err.Error(), "start function") {
		t.Errorf("Check(startloop) = %v, want ErrABI about the start function", err)
	}

	err = Check(ctx, fixture.wasm["badsig"], nil)
	var ie *ImportError
	if !errors.As(err, &ie) || ie.Name != "log" || !strings.Contains(ie.Reason, "signature") {
		t.Errorf("Check(badsig) = %v, want a signature ImportError for talon.log", err)
	}

	err = Check(ctx, fixture.wasm["noexports"], nil)
	for _, w := range []string{"talon_abi_version_1", "talon_alloc", "export talon_call: signature (i32) -> (i32)"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Check(noexports) = %v, want mention of %q", err, w)
		}
	}

	if err := Check(ctx, []byte("not wasm"), nil); err == nil {
		t.Error("Check(garbage) = nil")
	}
}

// New with Eager refuses what Check refuses, naming the tool, and modules
// whose initial memory is above their limit. Without Eager the same
// problems fail the tool's first call with ErrLoad and drop it from Tools.
func TestNewRefuses(t *testing.T) {
	tests := []struct {
		tool, extra string
		want        []string
	}{
		{"badimport", "", []string{"tool badimport", "import talon.exec: unknown import", "import env.abort: unknown import"}},
		{"abi2", "", []string{"tool abi2", "built for tool ABI version 2"}},
		{"bigmin", "limits: {memory_mib: 8}\n", []string{"tool bigmin", "memory and tables at start in MiB (limits.memory_mib) is 13, above the limit of 8"}},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			tools := []Tool{echoTool(t), testTool(t, tt.tool, tt.extra)}
			_, err := New(context.Background(), Config{CacheDir: fixture.cacheDir, Tools: tools, Eager: true})
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}

			r := newRuntime(t, Config{}, tools...)
			want := []string{"echo", tt.tool}
			slices.Sort(want)
			if got := toolNames(t, r); !slices.Equal(got, want) {
				t.Errorf("lazy Tools before use = %v, want both", got)
			}
			_, err = r.Call(context.Background(), call(tt.tool, `{}`))
			if !errors.Is(err, ErrLoad) {
				t.Fatalf("first call: %v, want ErrLoad", err)
			}
			var ce *CallError
			if !errors.As(err, &ce) || strings.Contains(ce.Reason, tt.tool+".wasm") {
				t.Errorf("first call: %v, want a *CallError with a short reason", err)
			}
			lerr := r.Load(context.Background(), tt.tool)
			for _, w := range tt.want {
				if lerr == nil || !strings.Contains(lerr.Error(), w) {
					t.Errorf("Load error %v does not mention %q", lerr, w)
				}
			}
			if got := toolNames(t, r); !slices.Equal(got, []string{"echo"}) {
				t.Errorf("Tools after the failed load = %v, want [echo]", got)
			}
			if res, err := r.Run(context.Background(), call("echo", `{"x":1}`)); err != nil || res.Content != `{"x":1}` {
				t.Errorf("echo beside the broken tool = %+v, %v", res, err)
			}
		})
	}
}

// wazero v1.12's validator panics on a call to a function whose type does
// not exist (found by FuzzInstrument). The instrumenter refuses such a
// module first; compileModule also turns the panic into an error.
func TestCompileModuleRecoversWazeroPanic(t *testing.T) {
	wasm := []byte("\x00asm\x01\x00\x00\x00" +
		"\x01\x04\x01\x60\x00\x00" + // type section: [] -> []
		"\x03\x03\x02\x00\x01" + // function section: f0 of type 0, f1 of type 1 (missing)
		"\x0a\x09\x02\x04\x00\x10\x01\x0b\x02\x00\x0b") // code: f0 calls f1; f1 is empty
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	if _, err := compileModule(ctx, r, wasm); err == nil || !strings.Contains(err.Error(), "failed on the module") {
		t.Errorf("compileModule = %v, want the recovered panic as an error", err)
	}
	if err := Check(ctx, wasm, nil); !errors.Is(err, ErrABI) {
		t.Errorf("Check = %v, want ErrABI (refused by the instrumenter)", err)
	}
}
