package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
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
	var sums strings.Builder
	for _, name := range names {
		wasm, err := Build(*src, name)
		if err != nil {
			return err
		}
		gz, err := Compress(wasm)
		if err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(outAbs, name+".wasm.gz"), gz, 0o644); err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
		fmt.Fprintf(&sums, "%x  %s.wasm\n", sha256.Sum256(wasm), name)
	}
	if err := os.WriteFile(filepath.Join(outAbs, SumsFile), []byte(sums.String()), 0o644); err != nil {
		return err
	}
	if *out == *src {
		return os.WriteFile(filepath.Join(*src, "GOVERSION"), []byte(runtime.Version()+"\n"), 0o644)
	}
	return nil
}

// SumsFile lists the SHA-256 of every module as it was built, before
// compression, in the format of sha256sum.
const SumsFile = "modules.sha256"

// Compress gzips a module at the best compression, with the module's
// SHA-256 in the header's comment ("sha256:" and 64 hex digits), which
// names it in the decompressed-module cache (tools.CachedFS). The output
// depends only on wasm and the Go toolchain: the header carries no name and
// no time.
func Compress(wasm []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	zw.Comment = fmt.Sprintf("sha256:%x", sha256.Sum256(wasm))
	if _, err := zw.Write(wasm); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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

// Build compiles the tool in src/name and returns the module with its data
// segments merged (see MergeDataSegments).
func Build(src, name string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "talon-tool-")
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	linked := filepath.Join(tmp, name+".wasm")
	cmd := exec.Command("go", "build",
		"-buildmode=c-shared", "-trimpath", "-ldflags=-s", "-buildvcs=false",
		"-o", linked, "./"+name)
	cmd.Dir = src
	cmd.Env = append(filteredEnv(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0", "GOFLAGS=")
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build %s: %w", name, err)
	}
	wasm, err := os.ReadFile(linked)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", name, err)
	}
	merged, err := MergeDataSegments(wasm, mergeGap)
	switch {
	case errors.Is(err, errUnsupported):
		fmt.Fprintf(os.Stderr, "build: %s: data segments left unmerged: %v\n", name, err)
		merged = wasm
	case err != nil:
		return nil, fmt.Errorf("build %s: %w", name, err)
	}
	return merged, nil
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
