package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
}

func run(argv []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	src := fs.String("src", ".", "directory holding one subdirectory per tool")
	out := fs.String("out", "", "output directory for <name>.wasm (default: -src)")
	if err := fs.Parse(argv); err != nil {
		return err
	}
	if *out == "" {
		*out = *src
	}
	names, err := Tools(*src)
	if err != nil {
		return err
	}
	outAbs, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := Build(*src, name, filepath.Join(outAbs, name+".wasm")); err != nil {
			return err
		}
	}
	if *out == *src {
		return os.WriteFile(filepath.Join(*src, "GOVERSION"), []byte(runtime.Version()+"\n"), 0o644)
	}
	return nil
}

// Tools lists the tool directories under src: those with a main.go.
func Tools(src string) ([]string, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, fmt.Errorf("list tools: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "internal" || e.Name() == "testdata" {
			continue
		}
		if _, err := os.Stat(filepath.Join(src, e.Name(), "main.go")); err == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Build compiles the tool in src/name to the file out, then merges the
// module's data segments (see MergeDataSegments).
func Build(src, name, out string) error {
	linked := out + ".linked"
	defer os.Remove(linked)
	cmd := exec.Command("go", "build",
		"-buildmode=c-shared", "-trimpath", "-ldflags=-s", "-buildvcs=false",
		"-o", linked, "./"+name)
	cmd.Dir = src
	cmd.Env = append(filteredEnv(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", name, err)
	}
	wasm, err := os.ReadFile(linked)
	if err != nil {
		return fmt.Errorf("build %s: %w", name, err)
	}
	merged, err := MergeDataSegments(wasm, mergeGap)
	switch {
	case errors.Is(err, errUnsupported):
		fmt.Fprintf(os.Stderr, "build: %s: data segments left unmerged: %v\n", name, err)
		merged = wasm
	case err != nil:
		return fmt.Errorf("build %s: %w", name, err)
	}
	if err := os.WriteFile(out, merged, 0o644); err != nil {
		return fmt.Errorf("build %s: %w", name, err)
	}
	return nil
}

// filteredEnv is the environment without settings that change the output.
func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOOS", "GOARCH", "CGO_ENABLED", "GOFLAGS", "GOWASM", "GOEXPERIMENT":
			continue
		}
		env = append(env, kv)
	}
	return env
}
