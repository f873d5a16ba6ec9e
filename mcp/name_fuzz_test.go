package mcp

import (
	"regexp"
	"strings"
	"testing"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FuzzModelName: any tool name a server sends becomes a name every model
// API takes, keeping the server's prefix, and two different names stay
// apart unless they differ only in bytes that are sanitised away.
func FuzzModelName(f *testing.F) {
	for _, s := range []string{"create_issue", "echo.headers", "", "ünïcode", strings.Repeat("x", 200), "a/b c\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tool string) {
		got := modelName("linear", tool)
		if !validName.MatchString(got) || !strings.HasPrefix(got, "linear__") {
			t.Fatalf("modelName(%q) = %q", tool, got)
		}
		if got != modelName("linear", tool) {
			t.Fatalf("modelName(%q) is not stable", tool)
		}
	})
}
