package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// PostgreSQL serves the memory and routines too: they stay enabled (their
// default).
func TestLoadStorePostgres(t *testing.T) {
	const file = `store:
  driver: postgres
  url: ${DATABASE_URL}
`
	const url = "postgres://talon:pw-in-env@db:5432/talon?sslmode=verify-full"
	got, err := loadFile(t, file, map[string]string{"DATABASE_URL": url})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !got.Memory.Enabled || !got.Routines.Enabled {
		t.Errorf("memory.enabled %v, routines.enabled %v on postgres; want both on by default", got.Memory.Enabled, got.Routines.Enabled)
	}
	if got.Store.Driver != StorePostgres || got.Store.URL.Reveal() != url {
		t.Errorf("store = %s %q, want postgres and the URL from the environment", got.Store.Driver, got.Store.URL.Reveal())
	}
	if s := fmt.Sprintf("%v %+v", got.Store, got); strings.Contains(s, "pw-in-env") {
		t.Errorf("the configuration prints the URL's password: %s", s)
	}
}

// The console and MCP servers with auth: oauth keep their state on
// PostgreSQL as on SQLite: the configuration accepts them with it.
func TestLoadStorePostgresWithConsoleAndOAuth(t *testing.T) {
	const file = `http:
  listen: 127.0.0.1:9000
  public_url: https://talon.example.com
console:
  enabled: true
mcp:
  servers:
    - name: linear
      url: https://mcp.linear.app/mcp
      auth: oauth
store:
  driver: postgres
  url: postgres://db/x
memory:
  enabled: false
routines:
  enabled: false
`
	got, err := loadFile(t, file, map[string]string{"TALON_CONSOLE_TOKEN": "0123456789abcdef0123"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !got.Console.Enabled || !got.MCP.UsesOAuth() || got.Store.Driver != StorePostgres {
		t.Errorf("console %v, oauth %v, driver %s; want the console and OAuth on postgres", got.Console.Enabled, got.MCP.UsesOAuth(), got.Store.Driver)
	}
}

func TestLoadStoreInvalid(t *testing.T) {
	for _, tt := range []struct {
		name, file string
		vars       map[string]string
		want       []string
	}{
		{"unknown driver", "store:\n  driver: mysql\n", nil,
			[]string{`store.driver: must be one of sqlite, postgres, got "mysql" (line 2)`}},
		{"postgres without a URL", "store:\n  driver: postgres", nil,
			[]string{"store.url: is required with driver postgres: the connection URL, e.g. ${DATABASE_URL} with DATABASE_URL=postgres://talon@db.example.com:5432/talon?sslmode=verify-full"}},
		{"the variable unset", "store:\n  driver: postgres\n  url: ${DATABASE_URL}\n", nil,
			nil}, // Load names the missing variable
		{"not a postgres URL, never quoted", "store:\n  driver: postgres\n  url: mysql://root:hunter2@db/x", nil,
			[]string{"store.url: must be a postgres:// or postgresql:// URL, e.g. postgres://talon@db.example.com:5432/talon?sslmode=verify-full (line 3)"}},
		{"a URL with sqlite", "store:\n  url: postgres://db/x\n", nil,
			[]string{"store.url: is for driver postgres; the sqlite database is the file <data_dir>/talon.db (remove store.url, or set store.driver: postgres) (line 2)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadFile(t, tt.file, tt.vars)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error quotes the URL's password: %v", err)
			}
			if tt.want == nil {
				return
			}
			if diff := cmp.Diff(tt.want, problems(err)); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}
