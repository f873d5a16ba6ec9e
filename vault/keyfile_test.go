package vault_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/talonhq/talon/vault"
)

func TestKeyFileCreatedPrivateAndReused(t *testing.T) {
	f := newFixture(t, nil)
	fi, err := os.Stat(filepath.Join(f.dir, vault.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	f.set(t, "terminal::local", "github", testSecret, "api.github.com")
	if _, err := f.reopen(t, nil); err != nil {
		t.Fatalf("reopen with the key file: %v", err)
	}
}

func TestOpenRefusals(t *testing.T) {
	otherKey, _ := vault.GenerateKey()
	cases := []struct {
		name   string
		prep   func(t *testing.T, f *fixture)
		getenv func(string) string
		want   []string
	}{
		{"key file missing for a used vault", func(t *testing.T, f *fixture) {
			os.Remove(filepath.Join(f.dir, vault.KeyFileName))
		}, nil, []string{"missing", "restore", vault.EnvKey, "do not create a new key"}},
		{"key file readable by others", func(t *testing.T, f *fixture) {
			os.Chmod(filepath.Join(f.dir, vault.KeyFileName), 0o644)
		}, nil, []string{"chmod 600"}},
		{"wrong key from the environment", nil, envWith(map[string]string{vault.EnvKey: otherKey.Encode()}),
			[]string{"wrong vault key", vault.EnvKey, "restore", "Never create a new key"}},
		{"wrong key file", func(t *testing.T, f *fixture) {
			p := filepath.Join(f.dir, vault.KeyFileName)
			os.Remove(p)
			if err := vault.WriteKeyFile(p, otherKey); err != nil {
				t.Fatal(err)
			}
		}, nil, []string{"wrong vault key"}},
		{"malformed environment key", nil, envWith(map[string]string{vault.EnvKey: "not base64!"}), []string{vault.EnvKey}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.set(t, "terminal::local", "github", testSecret, "api.github.com")
			if tc.prep != nil {
				tc.prep(t, f)
			}
			_, err := f.reopen(t, tc.getenv)
			if err == nil {
				t.Fatal("opened, want a refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), otherKey.Encode()) {
				t.Error("the error holds a secret")
			}
			if _, err := os.Stat(filepath.Join(f.dir, vault.KeyFileName)); tc.name == "key file missing for a used vault" && err == nil {
				t.Error("a new key file was created for a used vault")
			}
		})
	}
}

// TestTamperingFailsClosed edits sealed rows in the SQLite file and checks
// that the entry no longer opens, with a clear error, and that the service
// gives no credential for it.
func TestTamperingFailsClosed(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, q string
		user    string
	}{
		{"ciphertext", `UPDATE vault_entries SET ciphertext = CAST(zeroblob(length(ciphertext)) AS BLOB) WHERE name = 'github'`, "terminal::local"},
		{"hosts", `UPDATE vault_entries SET hosts = '["evil.example"]' WHERE name = 'github'`, "terminal::local"},
		{"injection rule", `UPDATE vault_entries SET injection = '{"kind":"query","name":"leak"}' WHERE name = 'github'`, "terminal::local"},
		{"unreadable injection rule", `UPDATE vault_entries SET injection = '{"kind":"bearer","extra":1}' WHERE name = 'github'`, "terminal::local"},
		{"moved to another user", `UPDATE vault_entries SET user = 'slack:T1:U2' WHERE name = 'github'`, "slack:T1:U2"},
		{"salt", `UPDATE vault_entries SET salt = CAST(zeroblob(32) AS BLOB) WHERE name = 'github'`, "terminal::local"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.set(t, "terminal::local", "github", testSecret, "api.github.com")
			rawExec(t, f.dir, tc.q)
			v, err := f.reopen(t, nil)
			if err != nil {
				t.Fatal(err)
			}
			host := "api.github.com"
			if tc.name == "hosts" {
				host = "evil.example" // the tampered binding: asked for, it must not open
			}
			_, err = v.Credential(ctx, tc.user, "github", host, "https", "github")
			if !errors.Is(err, vault.ErrTampered) {
				t.Errorf("got %v, want ErrTampered", err)
			}
			if err != nil && strings.Contains(err.Error(), testSecret) {
				t.Error("the error holds the value")
			}
			if c, err := vault.NewService(v).Credential(ctx, tc.user, "github", "github", host); err == nil || c != nil {
				t.Errorf("the service gave a tampered entry: %v", err)
			}
		})
	}
}

// TestRotationCrash simulates a crash at each point of a key-file
// rotation and checks the next open loses nothing.
func TestRotationCrash(t *testing.T) {
	ctx := context.Background()
	for _, committed := range []bool{false, true} {
		t.Run(map[bool]string{false: "before commit", true: "after commit"}[committed], func(t *testing.T) {
			f := newFixture(t, nil)
			f.set(t, "terminal::local", "github", testSecret, "api.github.com")
			nk, _ := vault.GenerateKey()
			if err := vault.WriteKeyFile(filepath.Join(f.dir, vault.NewKeyFileName), nk); err != nil {
				t.Fatal(err)
			}
			if committed {
				if _, err := f.v.Rotate(ctx, nk); err != nil {
					t.Fatal(err)
				}
			}
			v, err := f.reopen(t, nil)
			if err != nil {
				t.Fatalf("open after crash: %v", err)
			}
			if _, err := v.Credential(ctx, "terminal::local", "github", "api.github.com", "https", ""); err != nil {
				t.Errorf("entry after crash: %v", err)
			}
			if _, err := os.Stat(filepath.Join(f.dir, vault.NewKeyFileName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left behind", vault.NewKeyFileName)
			}
			k, err := vault.LoadKeyFile(f.dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Equal(nk); got != committed {
				t.Errorf("vault.key is the new key: %v, want %v", got, committed)
			}
		})
	}
}

func TestRotateInDir(t *testing.T) {
	ctx := context.Background()
	t.Run("key file", func(t *testing.T) {
		f := newFixture(t, nil)
		f.set(t, "terminal::local", "github", testSecret, "api.github.com")
		f.set(t, "slack:T1:U1", "jira", "jira-token-0123456789", "example.atlassian.net")
		oldKey, err := vault.LoadKeyFile(f.dir)
		if err != nil {
			t.Fatal(err)
		}
		r, err := vault.RotateInDir(ctx, f.v, f.dir, noEnv)
		if err != nil || r.Entries != 2 || r.FromEnv || r.KeyPath != filepath.Join(f.dir, vault.KeyFileName) {
			t.Fatalf("RotateInDir = %+v, %v", r, err)
		}
		v, err := f.reopen(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ user, name, host string }{{"terminal::local", "github", "api.github.com"}, {"slack:T1:U1", "jira", "example.atlassian.net"}} {
			if _, err := v.Credential(ctx, c.user, c.name, c.host, "https", ""); err != nil {
				t.Errorf("%s after rotation: %v", c.name, err)
			}
		}
		if _, err := vault.New(ctx, oldKey, f.db.VaultStorage()); !errors.Is(err, vault.ErrWrongKey) {
			t.Errorf("old key after rotation: %v, want ErrWrongKey", err)
		}
		if _, err := os.Stat(filepath.Join(f.dir, vault.NewKeyFileName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", vault.NewKeyFileName, err)
		}
	})
	t.Run("environment", func(t *testing.T) {
		k1, _ := vault.GenerateKey()
		k2, _ := vault.GenerateKey()
		f := newFixture(t, envWith(map[string]string{vault.EnvKey: k1.Encode()}))
		f.set(t, "terminal::local", "github", testSecret, "api.github.com")
		if _, err := vault.RotateInDir(ctx, f.v, f.dir, envWith(map[string]string{vault.EnvKey: k1.Encode()})); err == nil || !strings.Contains(err.Error(), vault.EnvNewKey) {
			t.Fatalf("rotate without the new key: %v", err)
		}
		r, err := vault.RotateInDir(ctx, f.v, f.dir, envWith(map[string]string{vault.EnvKey: k1.Encode(), vault.EnvNewKey: k2.Encode()}))
		if err != nil || !r.FromEnv || r.Entries != 1 {
			t.Fatalf("RotateInDir = %+v, %v", r, err)
		}
		if _, err := f.reopen(t, envWith(map[string]string{vault.EnvKey: k1.Encode()})); err == nil {
			t.Error("the old key still opens the vault")
		}
		v, err := f.reopen(t, envWith(map[string]string{vault.EnvKey: k2.Encode()}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Credential(ctx, "terminal::local", "github", "api.github.com", "https", ""); err != nil {
			t.Error(err)
		}
	})
}
