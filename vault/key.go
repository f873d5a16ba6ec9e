package vault

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
)

// KeySize is the size of a master key in bytes.
const KeySize = 32

// EnvKey is the environment variable that may hold the master key, as the
// standard base64 encoding of 32 random bytes.
const EnvKey = "TALON_VAULT_KEY"

// KeyFileName is the name of the key file inside the data directory.
const KeyFileName = "vault.key"

// keyIDSize is the length of the key identifier stored with each entry.
const keyIDSize = 8

// Key is a 256-bit master key. Its String, GoString, Format, MarshalJSON,
// MarshalText and LogValue methods redact it. The zero Key is invalid and
// is refused by Seal, Open, KeyCheck and Rotate; obtain a Key from
// GenerateKey, NewKey, KeyFromEnv or a key file.
type Key struct {
	b  [KeySize]byte
	id [keyIDSize]byte // first bytes of the key check value, set when valid
	ok bool
}

// Errors returned by key management. Callers branch on them with errors.Is.
var (
	// ErrWrongKey means the master key is not the one the vault or an entry
	// was sealed with.
	ErrWrongKey = errors.New("vault: wrong master key")
	// ErrInvalidKey means key material is malformed (bad encoding or length)
	// or the zero Key was used.
	ErrInvalidKey = errors.New("vault: invalid master key")
	// ErrKeyFilePermissions means the key file is readable or writable by
	// group or others.
	ErrKeyFilePermissions = errors.New("vault: key file permissions too open")
)

// NewKey returns a Key holding a copy of b, which must be 32 bytes and not
// all zero.
func NewKey(b []byte) (Key, error) {
	if len(b) != KeySize {
		return Key{}, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidKey, len(b), KeySize)
	}
	var k Key
	copy(k.b[:], b)
	if k.b == ([KeySize]byte{}) {
		return Key{}, fmt.Errorf("%w: all zero", ErrInvalidKey)
	}
	k.ok = true
	copy(k.id[:], keyCheck(&k.b))
	return k, nil
}

// GenerateKey returns a new random Key.
func GenerateKey() (Key, error) {
	var b [KeySize]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return NewKey(b[:])
}

// ParseKey decodes a Key from the standard base64 encoding of 32 bytes
// (surrounding white space is ignored). Errors never contain the input.
func ParseKey(s string) (Key, error) {
	s = string(bytes.TrimSpace([]byte(s)))
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return Key{}, fmt.Errorf("%w: not valid standard base64", ErrInvalidKey)
	}
	k, err := NewKey(b)
	clear(b)
	return k, err
}

// Encode returns the standard base64 encoding of the key, the form accepted
// by ParseKey, TALON_VAULT_KEY and the key file. It is the only way to see
// the key material; print it only to a terminal the operator asked for.
func (k Key) Encode() string { return base64.StdEncoding.EncodeToString(k.b[:]) }

// IsZero reports whether k is the zero (invalid) Key.
func (k Key) IsZero() bool { return !k.ok }

// Equal reports whether k and o are the same key, in constant time.
func (k Key) Equal(o Key) bool {
	return k.ok == o.ok && subtle.ConstantTimeCompare(k.b[:], o.b[:]) == 1
}

// String returns a redacted form.
func (Key) String() string { return "vault.Key" + redacted }

// GoString returns a redacted form.
func (Key) GoString() string { return "vault.Key" + redacted }

// Format writes a redacted form for every verb and flag.
func (Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("vault.Key" + redacted)) }

// MarshalJSON returns the JSON string "[REDACTED]".
func (Key) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[REDACTED]".
func (Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue makes log/slog print "[REDACTED]".
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// KeyFromEnv reads the master key from TALON_VAULT_KEY through getenv
// (pass os.Getenv). It returns ok=false and no error when the variable is
// unset or empty, and an error naming the variable (never its value) when
// it is not the base64 encoding of 32 bytes.
func KeyFromEnv(getenv func(string) string) (k Key, ok bool, err error) {
	v := getenv(EnvKey)
	if v == "" {
		return Key{}, false, nil
	}
	k, err = ParseKey(v)
	if err != nil {
		return Key{}, false, fmt.Errorf("vault: %s: %w (generate one with: head -c 32 /dev/urandom | base64)", EnvKey, err)
	}
	return k, true, nil
}

// LoadKeyFile reads the key file in dir. It refuses a file that group or
// others may read or write (ErrKeyFilePermissions, with the chmod command
// in the message) and a malformed one (ErrInvalidKey). A missing file is
// reported with an error matching fs.ErrNotExist. Use it instead of
// LoadOrCreateKeyFile when the vault already holds entries, so a lost key
// file is reported rather than silently replaced.
func LoadKeyFile(dir string) (Key, error) {
	return loadKeyFile(filepath.Join(dir, KeyFileName))
}

// loadKeyFile reads the key file at path, with LoadKeyFile's checks.
func loadKeyFile(path string) (Key, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return Key{}, fmt.Errorf("vault: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Key{}, fmt.Errorf("vault: key file %s is not a regular file: %w", path, ErrInvalidKey)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return Key{}, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrKeyFilePermissions, path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("vault: key file: %w", err)
	}
	k, err := ParseKey(string(data))
	clear(data)
	if err != nil {
		return Key{}, fmt.Errorf("vault: key file %s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreateKeyFile loads the key file in dir, creating it with a new
// random key (mode 0600, written to a temporary file, synced and linked into
// place so a crash never leaves a partial key and a concurrent creator never
// gets overwritten) when it does not exist. created reports whether a new
// key was made. Callers must not use it for a vault that already has
// entries: a new key cannot open them (see LoadKeyFile and VerifyKeyCheck).
func LoadOrCreateKeyFile(dir string) (k Key, created bool, err error) {
	k, err = LoadKeyFile(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Key{}, false, fmt.Errorf("vault: create key file: %w", err)
	}
	nk, err := GenerateKey()
	if err != nil {
		return Key{}, false, err
	}
	tmp, err := os.CreateTemp(dir, ".vault.key-*")
	if err != nil {
		return Key{}, false, fmt.Errorf("vault: create key file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() { _ = os.Remove(tmpName) }()
	werr := tmp.Chmod(0o600)
	if werr == nil {
		_, werr = tmp.WriteString(nk.Encode() + "\n")
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return Key{}, false, fmt.Errorf("vault: create key file: %w", werr)
	}
	final := filepath.Join(dir, KeyFileName)
	if err := os.Link(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) { // lost a race: use the winner's key
			k, err := LoadKeyFile(dir)
			return k, false, err
		}
		return Key{}, false, fmt.Errorf("vault: create key file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nk, true, nil
}

// keyCheckInfo names the HKDF use for the key check value.
const keyCheckInfo = "talon vault key check v1"

func keyCheck(b *[KeySize]byte) []byte {
	ck, err := hkdf.Key(sha256.New, b[:], nil, keyCheckInfo, 32)
	if err != nil { // cannot happen for these sizes
		return nil
	}
	m := hmac.New(sha256.New, ck)
	m.Write([]byte("talon vault key check"))
	return m.Sum(nil)
}

// KeyCheck returns a 32-byte value that identifies k without revealing it
// (an HMAC of a fixed label under a key derived from k). Store it beside the
// vault at creation and compare it at start with VerifyKeyCheck to detect a
// wrong master key before any entry is used. It returns nil for the zero Key.
func KeyCheck(k Key) []byte {
	if !k.ok {
		return nil
	}
	return keyCheck(&k.b)
}

// VerifyKeyCheck reports whether check is KeyCheck(k). On mismatch it
// returns an error wrapping ErrWrongKey whose message tells the operator
// what to do; callers must refuse to start rather than create a new key.
func VerifyKeyCheck(k Key, check []byte) error {
	if !k.ok {
		return fmt.Errorf("vault: verify key: %w", ErrInvalidKey)
	}
	if !hmac.Equal(keyCheck(&k.b), check) {
		return fmt.Errorf("%w: this vault was created with another key; set %s to the key it was created with, "+
			"or restore its %s file; do not create a new key, the stored credentials cannot be read without the old one",
			ErrWrongKey, EnvKey, KeyFileName)
	}
	return nil
}

func hmacEqual(a, b []byte) bool { return hmac.Equal(a, b) }
