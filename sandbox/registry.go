package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Tool is a module and the manifest that grants it capabilities, as found
// by LoadTools. Disabled tools are listed too.
type Tool struct {
	Manifest *Manifest
	// Wasm is the module's binary, when the caller holds it in memory.
	// LoadTools leaves it nil and sets FS and Path instead, so that a
	// module is read only when it is first compiled and its bytes do not
	// stay on the heap of an idle process.
	Wasm []byte
	// FS and Path locate the module's binary when Wasm is nil.
	FS   fs.FS
	Path string
	// Source says where the module came from: "builtin" or a file path.
	Source string
}

// Binary returns the module's binary: Wasm, or the file at Path in FS.
func (t Tool) Binary() ([]byte, error) {
	if t.Wasm != nil {
		return t.Wasm, nil
	}
	if t.FS == nil {
		return nil, errors.New("no module binary")
	}
	b, err := fs.ReadFile(t.FS, t.Path)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	return b, nil
}

// LoadTools finds the tools: built-in modules in builtin (each <name>.wasm
// with its default manifest <name>.yaml at the root; builtin may be nil) and
// operator tools in dir (each <name>.wasm with <name>.yaml; dir may be "").
// An operator <name>.yaml overrides a built-in's default manifest wholly,
// and an operator <name>.wasm replaces the built-in module. Every problem is
// reported at once. The result is sorted by name. Modules are not read
// here: a Runtime reads each from its FS when it first compiles it.
func LoadTools(builtin fs.FS, dir string) ([]Tool, error) {
	var errs []error
	tools := map[string]*Tool{}

	if builtin != nil {
		wasms, err := fs.Glob(builtin, "*.wasm")
		if err != nil {
			return nil, fmt.Errorf("sandbox: built-in tools: %w", err)
		}
		for _, w := range wasms {
			name := strings.TrimSuffix(w, ".wasm")
			y, err := fs.ReadFile(builtin, name+".yaml")
			if err != nil {
				errs = append(errs, fmt.Errorf("built-in %s: no default manifest %s.yaml", w, name))
				continue
			}
			m, err := ParseManifest("builtin/"+name+".yaml", y)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			tools[name] = &Tool{Manifest: m, FS: builtin, Path: w, Source: "builtin"}
		}
	}

	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("sandbox: tools directory: %w", err)
		}
		dirFS := os.DirFS(dir)
		files := map[string]bool{}
		for _, e := range entries {
			if e.Type().IsRegular() {
				files[e.Name()] = true
			}
		}
		for f := range files {
			switch {
			case strings.HasSuffix(f, ".wasm"):
				if !files[strings.TrimSuffix(f, ".wasm")+".yaml"] {
					errs = append(errs, fmt.Errorf("%s: no manifest %s.yaml next to it (capabilities are granted by the operator)",
						filepath.Join(dir, f), strings.TrimSuffix(f, ".wasm")))
				}
			case strings.HasSuffix(f, ".yaml"):
				name := strings.TrimSuffix(f, ".yaml")
				path := filepath.Join(dir, f)
				y, err := os.ReadFile(path)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", path, err))
					continue
				}
				m, err := ParseManifest(path, y)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if files[name+".wasm"] {
					tools[name] = &Tool{Manifest: m, FS: dirFS, Path: name + ".wasm", Source: filepath.Join(dir, name+".wasm")}
					continue
				}
				b, ok := tools[name]
				if !ok || b.Source != "builtin" {
					errs = append(errs, fmt.Errorf("%s: no module %s.wasm here and no built-in tool %q", path, name, name))
					continue
				}
				b.Manifest = m
			}
		}
	}

	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("sandbox: load tools: %w", err)
	}
	out := make([]Tool, 0, len(tools))
	for _, t := range tools {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Manifest.Name < out[j].Manifest.Name })
	return out, nil
}
