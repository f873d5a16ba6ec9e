package sandbox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/talonhq/talon/sandbox/internal/interrupt"
)

// ABIVersion is the version of the tool ABI (ABI.md) this package speaks.
const ABIVersion = 1

const (
	hostModule  = "talon"
	wasiModule  = wasi_snapshot_preview1.ModuleName
	abiExport   = "talon_abi_version_"
	allocExport = "talon_alloc"
	callExport  = "talon_call"
	initExport  = "_initialize"
	memExport   = "memory"
)

// abi is what the host provides: the signatures of every function a guest
// may import.
type abi struct {
	talon map[string]api.FunctionDefinition
	wasi  map[string]api.FunctionDefinition
}

func newABI(ctx context.Context, r wazero.Runtime) (*abi, error) {
	tc, err := hostBuilder(r, nil).Compile(ctx)
	if err != nil {
		return nil, fmt.Errorf("compile host module: %w", err)
	}
	defer tc.Close(ctx)
	wc, err := wasi_snapshot_preview1.NewBuilder(r).Compile(ctx)
	if err != nil {
		return nil, fmt.Errorf("compile wasi module: %w", err)
	}
	defer wc.Close(ctx)
	return &abi{talon: tc.ExportedFunctions(), wasi: wc.ExportedFunctions()}, nil
}

// Check loads wasm exactly as a Runtime loads a tool on its first use,
// without running it: it checks the module's shape against the sandbox's
// limits (a *LimitError, matching ErrLimit), instruments it, compiles it
// with the optimising compiler, checks that it speaks the tool ABI of this
// Talon (it imports only the host functions of module "talon" and WASI
// preview 1 functions, with the right signatures, and exports memory,
// talon_alloc, talon_call and talon_abi_version_1), and that its memory
// and tables at start fit m's memory limit (the default limit when m is
// nil). ABI problems are reported at once; each matches ErrABI, an unknown
// import is an *ImportError and a module built for another ABI version an
// *ABIVersionError.
func Check(ctx context.Context, wasm []byte, m *Manifest) error {
	memMiB := defaultLimits.MemoryMiB
	if m != nil {
		memMiB = m.Limits.MemoryMiB
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer r.Close(ctx)
	a, err := newABI(ctx, r)
	if err != nil {
		return fmt.Errorf("sandbox: check: %w", err)
	}
	im, err := instrument(wasm)
	if err == nil {
		var cm wazero.CompiledModule
		if cm, err = prepare(compileContext(ctx), r, a, im, memMiB); err == nil {
			return cm.Close(ctx)
		}
	}
	if err != nil {
		if errors.Is(err, ErrLimit) || errors.Is(err, ErrABI) && !errors.Is(err, interrupt.ErrUnsupported) {
			return err // the typed errors, as they are
		}
		return fmt.Errorf("sandbox: check: %w", err)
	}
	return nil
}

// instrument is the first half of what loading a tool does to its module:
// check its shape against the sandbox's limits and instrument it.
func instrument(wasm []byte) (*interrupt.Module, error) {
	im, err := interrupt.Instrument(wasm, interrupt.DefaultLimits())
	if le := (*interrupt.LimitError)(nil); errors.As(err, &le) {
		return nil, &LimitError{Function: le.Function, Limit: le.Limit, Got: le.Got, Max: le.Max}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrABI, err)
	}
	return im, nil
}

// prepare is the second half: compile the instrumented module im on rt,
// and check it against the ABI (a) and its memory limit. ctx may stop the
// compilation between two functions (see compileContext).
func prepare(ctx context.Context, rt wazero.Runtime, a *abi, im *interrupt.Module, memMiB int) (wazero.CompiledModule, error) {
	cm, err := compileModule(ctx, rt, im.Wasm)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	if err := a.check(cm); err != nil {
		cm.Close(ctx)
		return nil, err
	}
	// Linear memory and table references (8 bytes each in wazero) count
	// in one limit; at run time the instrumented table.grow and the
	// memory allocator keep the sum under it.
	limit := uint64(memMiB) * mib
	need := uint64(cm.ExportedMemories()[memExport].Min())*65536 + im.References*interrupt.ReferenceBytes
	if im.References > limit || need > limit {
		cm.Close(ctx)
		return nil, &LimitError{Function: -1, Limit: "memory and tables at start in MiB (limits.memory_mib)",
			Got: (max(need, im.References) + mib - 1) / mib, Max: uint64(memMiB)}
	}
	return cm, nil
}

// compileContext is ctx for a compilation: wazero's compiler then uses
// as many goroutines as Go has processors, and stops between two functions
// once ctx is done (with one goroutine it does not look at ctx).
func compileContext(ctx context.Context) context.Context {
	return experimental.WithCompilationWorkers(ctx, max(2, runtime.GOMAXPROCS(0)))
}

func (a *abi) check(cm wazero.CompiledModule) error {
	exports := cm.ExportedFunctions()
	// A module for another ABI version gets that one clear message.
	var versions []int
	for name := range exports {
		if v, ok := strings.CutPrefix(name, abiExport); ok {
			n, err := strconv.Atoi(v)
			if err == nil && n != ABIVersion {
				versions = append(versions, n)
			}
		}
	}
	if _, ok := exports[abiExport+strconv.Itoa(ABIVersion)]; !ok && len(versions) > 0 {
		sort.Ints(versions)
		return &ABIVersionError{Version: versions[0]}
	}

	var errs []error
	for _, def := range cm.ImportedFunctions() {
		mod, name, _ := def.Import()
		var host map[string]api.FunctionDefinition
		switch mod {
		case hostModule:
			host = a.talon
		case wasiModule:
			host = a.wasi
		}
		want, ok := host[name]
		if !ok {
			errs = append(errs, &ImportError{Module: mod, Name: name, Reason: "unknown import"})
			continue
		}
		if !sameSignature(def, want) {
			errs = append(errs, &ImportError{Module: mod, Name: name,
				Reason: "signature " + signature(def) + ", want " + signature(want)})
		}
	}
	for _, m := range cm.ImportedMemories() {
		mod, name, _ := m.Import()
		errs = append(errs, &ImportError{Module: mod, Name: name, Reason: "a tool must export its memory, not import it"})
	}

	if _, ok := cm.ExportedMemories()[memExport]; !ok {
		errs = append(errs, &ExportError{Name: memExport, Reason: "missing memory export"})
	}
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	for _, e := range []struct {
		name            string
		params, results []api.ValueType
	}{
		{abiExport + strconv.Itoa(ABIVersion), nil, nil},
		{allocExport, []api.ValueType{i32}, []api.ValueType{i32}},
		{callExport, []api.ValueType{i32, i32}, []api.ValueType{i64}},
	} {
		def, ok := exports[e.name]
		if !ok {
			errs = append(errs, &ExportError{Name: e.name, Reason: "missing function export"})
			continue
		}
		if !slices.Equal(def.ParamTypes(), e.params) || !slices.Equal(def.ResultTypes(), e.results) {
			errs = append(errs, &ExportError{Name: e.name, Reason: "signature " + signature(def)})
		}
	}
	return errors.Join(errs...)
}

func sameSignature(a, b api.FunctionDefinition) bool {
	return slices.Equal(a.ParamTypes(), b.ParamTypes()) && slices.Equal(a.ResultTypes(), b.ResultTypes())
}

func signature(d api.FunctionDefinition) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return names(d.ParamTypes()) + " -> " + names(d.ResultTypes())
}
