package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/talonhq/talon"

// allowedImports lists, for each package of ours (by path prefix, most
// specific first), which packages of ours it may import. This is the
// direction of DESIGN.md: cmd → everything; adapters, store, sandbox →
// agent's vocabulary; mcp → agent's vocabulary and sandbox/egress (its only
// way to the network); agent → agent/llm; store also → vault (it stores the
// vault's sealed entries, in the vault's types); vault → vault/leak (its
// service redacts with the detector); store/postgres and store/storetest
// → store (the sentinels both stores wrap); vault/leak → nothing; console → store
// (its queries' types), agent's vocabulary and vault (the service the CLI
// uses to change entries); memory → store (its entries' types), agent's
// vocabulary; cluster → agent's vocabulary (it hands the runtime the
// sessions of the partitions it owns).
var allowedImports = []struct {
	pkg   string
	allow []string
}{
	{"cmd/", []string{"*"}},
	{"agent/llm/llmtest", []string{"agent/llm"}},
	{"agent/llm", nil},
	{"agent/attach/attachtest", nil},
	{"agent/attach", nil},
	{"agent", []string{"agent/llm", "agent/attach"}},
	{"adapters/internal/follow", []string{"agent"}},
	{"adapters/internal/chat", []string{"agent"}},
	{"adapters/", []string{"agent", "agent/llm", "adapters/internal/follow", "adapters/internal/chat"}},
	{"store/storetest", []string{"agent", "agent/llm", "store", "vault"}},
	{"store/postgres", []string{"agent", "agent/llm", "store", "vault"}},
	{"store", []string{"agent", "agent/llm", "vault"}},
	{"sandbox/guest", nil},
	{"sandbox/tools", []string{"sandbox/guest"}},
	{"sandbox/egress", []string{"agent"}},
	{"sandbox/internal/interrupt", nil},
	{"sandbox", []string{"agent", "agent/llm", "sandbox/egress", "sandbox/internal/interrupt"}},
	{"mcp", []string{"agent", "agent/llm", "sandbox/egress"}},
	{"memory", []string{"agent", "agent/llm", "store"}},
	{"console", []string{"agent", "agent/llm", "store", "vault"}},
	{"cluster", []string{"agent"}},
	{"routines", []string{"agent", "agent/llm", "store"}},
	{"vault/leak", nil},
	{"vault", []string{"vault/leak"}},
}

// ourPackages maps each package directory (relative to the module root) to
// its non-test Go files.
func ourPackages(t *testing.T) (root string, pkgs map[string][]string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s", root)
	}
	pkgs = map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		if rel == "." {
			return nil // tools.go: build-tagged dependency pins
		}
		pkgs[filepath.ToSlash(rel)] = append(pkgs[filepath.ToSlash(rel)], path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return root, pkgs
}

func rulesFor(pkg string) ([]string, bool) {
	for _, r := range allowedImports {
		if pkg == r.pkg || strings.HasPrefix(pkg, strings.TrimSuffix(r.pkg, "/")+"/") || (strings.HasSuffix(r.pkg, "/") && strings.HasPrefix(pkg, r.pkg)) {
			return r.allow, true
		}
	}
	return nil, false
}

func TestImportsFollowDesignDirection(t *testing.T) {
	_, pkgs := ourPackages(t)
	if len(pkgs) < 5 {
		t.Fatalf("found only %d packages; is the walk broken?", len(pkgs))
	}
	fset := token.NewFileSet()
	for pkg, files := range pkgs {
		allow, ok := rulesFor(pkg)
		if !ok {
			t.Errorf("package %s has no rule in allowedImports; add one that matches DESIGN.md", pkg)
			continue
		}
		if slices.Contains(allow, "*") {
			continue
		}
		for _, file := range files {
			f, err := parser.ParseFile(fset, file, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if !strings.HasPrefix(path, module+"/") {
					continue
				}
				dep := strings.TrimPrefix(path, module+"/")
				toolLib := strings.HasPrefix(pkg, "sandbox/tools/") && (dep == "sandbox/guest" || strings.HasPrefix(dep, "sandbox/tools/internal/"))
				if dep == pkg || slices.Contains(allow, dep) || toolLib {
					continue
				}
				t.Errorf("%s imports %s, against DESIGN.md's direction (allowed: %v)", pkg, dep, allow)
			}
		}
	}
}

func TestEveryPackageHasDoc(t *testing.T) {
	_, pkgs := ourPackages(t)
	fset := token.NewFileSet()
	for pkg, files := range pkgs {
		documented := false
		for _, file := range files {
			f, err := parser.ParseFile(fset, file, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if f.Doc != nil && len(strings.TrimSpace(f.Doc.Text())) > 40 {
				documented = true
				break
			}
		}
		if !documented {
			t.Errorf("package %s has no package comment saying what it owns (add a doc.go)", pkg)
		}
	}
}

// TestMCPReachesTheNetworkOnlyThroughEgress: the mcp package builds no
// transport or dialer of its own and uses no default client; its only way
// out is the broker's RoundTripper (DESIGN.md, Phase 2).
func TestMCPReachesTheNetworkOnlyThroughEgress(t *testing.T) {
	_, pkgs := ourPackages(t)
	files := pkgs["mcp"]
	if len(files) == 0 {
		t.Fatal("no mcp package found")
	}
	forbidden := map[string]bool{
		"http.DefaultClient": true, "http.DefaultTransport": true, "http.Transport": true,
		"http.Get": true, "http.Post": true, "http.Head": true, "http.PostForm": true,
		"net.Dial": true, "net.DialTimeout": true, "net.Dialer": true, "tls.Dial": true, "tls.Dialer": true,
	}
	fset := token.NewFileSet()
	for _, file := range files {
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && forbidden[id.Name+"."+sel.Sel.Name] {
				t.Errorf("%s: mcp uses %s.%s; it must reach the network only through the egress broker's RoundTripper",
					fset.Position(sel.Pos()), id.Name, sel.Sel.Name)
			}
			return true
		})
	}
}
