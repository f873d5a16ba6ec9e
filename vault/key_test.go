package vault

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFromEnv(t *testing.T) {
	good := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	tests := []struct {
		name    string
		value   string
		wantOK  bool
		wantErr error
	}{
		{"unset", "", false, nil},
		{"valid", good, true, nil},
		{"valid with newline", good + "\n", true, nil},
		{"bad base64", "not base64!!", false, ErrInvalidKey},
		{"url alphabet refused", strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(make([]byte, 31)) + "-_"), false, ErrInvalidKey},
		{"too short", base64.StdEncoding.EncodeToString([]byte("short key")), false, ErrInvalidKey},
		{"too long", base64.StdEncoding.EncodeToString(make([]byte, 33)), false, ErrInvalidKey},
		{"all zero", base64.StdEncoding.EncodeToString(make([]byte, 32)), false, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == EnvKey {
					return tt.value
				}
				return ""
			}
			k, ok, err := KeyFromEnv(getenv)
			if !errors.Is(err, tt.wantErr) || ok != tt.wantOK {
				t.Fatalf("KeyFromEnv = ok %v, err %v; want ok %v, err %v", ok, err, tt.wantOK, tt.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), strings.TrimSpace(tt.value)) {
					t.Error("error message contains the variable's value")
				}
				if !strings.Contains(err.Error(), EnvKey) {
					t.Errorf("error %q does not name %s", err, EnvKey)
				}
			}
			if ok == k.IsZero() {
				t.Errorf("IsZero = %v with ok = %v", k.IsZero(), ok)
			}
		})
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := LoadOrCreateKeyFile(dir)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateKeyFile = created %v, %v; want true, nil", created, err)
	}
	path := filepath.Join(dir, KeyFileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", got)
	}
	k2, created, err := LoadOrCreateKeyFile(dir)
	if err != nil || created {
		t.Fatalf("second LoadOrCreateKeyFile = created %v, %v; want false, nil", created, err)
	}
	if !k1.Equal(k2) {
		t.Error("second load returned a different key")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data directory holds %d files, want only the key file", len(entries))
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadOrCreateKeyFile(dir)
	if !errors.Is(err, ErrKeyFilePermissions) || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Errorf("mode 0644: error = %v, want ErrKeyFilePermissions with the chmod command", err)
	}

	tests := []struct {
		name    string
		content string
	}{
		{"not base64", "this is not a key\n"},
		{"short", base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, KeyFileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, created, err := LoadOrCreateKeyFile(dir)
			if !errors.Is(err, ErrInvalidKey) || created {
				t.Errorf("malformed key file = created %v, %v; want false, ErrInvalidKey", created, err)
			}
		})
	}
	if _, err := LoadKeyFile(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadKeyFile(empty dir) error = %v, want fs.ErrNotExist", err)
	}
}

func TestKeyCheck(t *testing.T) {
	k, other := mustKey(t), mustKey(t)
	check := KeyCheck(k)
	if len(check) != 32 {
		t.Fatalf("KeyCheck length = %d, want 32", len(check))
	}
	if err := VerifyKeyCheck(k, check); err != nil {
		t.Errorf("VerifyKeyCheck(right key): %v", err)
	}
	err := VerifyKeyCheck(other, check)
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), EnvKey) {
		t.Errorf("VerifyKeyCheck(wrong key) = %v, want ErrWrongKey naming %s", err, EnvKey)
	}
	if KeyCheck(Key{}) != nil {
		t.Error("KeyCheck(zero key) is not nil")
	}
}
