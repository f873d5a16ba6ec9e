package vault

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps vault and vault/leak free of other Talon packages and
// of third-party code: their non-test files import the standard library
// only, and vault also vault/leak (its detector of secret values).
func TestImports(t *testing.T) {
	allowed := map[string][]string{".": {"github.com/talonhq/talon/vault/leak"}}
	for _, dir := range []string{".", "leak"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if slices.Contains(allowed[dir], p) {
					continue
				}
				if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
					t.Errorf("%s imports %q; vault packages may import the standard library only", f, p)
				}
			}
		}
	}
}
