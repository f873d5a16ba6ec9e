package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// env returns a getenv function backed by m.
func env(m map[string]string) func(string) string {
	return func(name string) string { return m[name] }
}

// writeConfig writes content to a file in a temporary directory and returns
// its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "talon.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problems returns the message of every *KeyError in err's tree, in order.
func problems(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		var ke *KeyError
		if errors.As(err, &ke) && ke == err {
			out = append(out, ke.Error())
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// loadFile writes content and loads it with the given environment.
func loadFile(t *testing.T, content string, vars map[string]string) (*Config, error) {
	t.Helper()
	return Load(writeConfig(t, content), env(vars))
}
