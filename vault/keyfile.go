package vault

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The key of a rotation in progress.
const (
	// EnvNewKey holds the new key for RotateInDir when the current one
	// comes from EnvKey.
	EnvNewKey = "TALON_VAULT_NEW_KEY"
	// NewKeyFileName is where RotateInDir writes the new key before the
	// re-sealing transaction; OpenInDir finishes an interrupted rotation.
	NewKeyFileName = KeyFileName + ".new"
)

// OpenInDir opens the vault of a data directory over st: the master key
// comes from EnvKey (read with getenv) when it is set, else from the key
// file in dir. The key file is created (mode 0600) only for a vault that
// has never held anything; a missing file for a used vault is an error
// saying what to do. A rotation interrupted between its transaction and
// the rename of the new key file is finished here. A key that is not the
// one the vault was sealed with is refused with an error wrapping
// ErrWrongKey that says what to do: Talon never runs, or changes anything,
// with a wrong key.
func OpenInDir(ctx context.Context, dir string, getenv func(string) string, st Storage) (*Vault, error) {
	k, err := openKey(ctx, dir, getenv, st)
	if err != nil {
		return nil, err
	}
	v, err := New(ctx, k, st)
	if errors.Is(err, ErrWrongKey) {
		return nil, wrongKeyError(dir, err)
	}
	return v, err
}

// wrongKeyError is OpenInDir's error for a key that does not open the
// vault of dir; err wraps ErrWrongKey.
func wrongKeyError(dir string, err error) error {
	return fmt.Errorf("wrong vault key: the store's vault was sealed with another master key. "+
		"Set %s to the key it was created with, or restore %s from your backup (mode 0600). "+
		"Never create a new key for a vault that holds entries: they cannot be read without the old one (%w)",
		EnvKey, filepath.Join(dir, KeyFileName), err)
}

// ErrKeyFileMissing is matched (errors.Is) by the error of OpenInDir and
// CheckKeyInDir for a vault sealed with a key when EnvKey is not set and
// the data directory has no key file: a restore, or another data
// directory on the same database (a replica).
var ErrKeyFileMissing = errors.New("vault: the key file is missing")

type missingKeyFile struct{ msg string }

func (e *missingKeyFile) Error() string        { return e.msg }
func (e *missingKeyFile) Is(target error) bool { return target == ErrKeyFileMissing }

// missingKeyFileError is OpenInDir's error for a vault sealed with a key
// whose key file is gone.
func missingKeyFileError(keyPath string, entries int) error {
	return &missingKeyFile{fmt.Sprintf("vault: the key file %s is missing but the vault was sealed with a key "+
		"(%d entries): restore the file (mode 0600) from your backup, or set %s to the key; "+
		"do not create a new key, the stored credentials cannot be read without the old one",
		keyPath, entries, EnvKey)}
}

// CheckKeyInDir reports, without changing anything, whether OpenInDir
// would open the vault of data directory dir, given the vault's stored key
// check (nil when none) and how many entries it holds: it returns
// OpenInDir's error for a malformed TALON_VAULT_KEY, an unreadable or
// missing key file of a used vault, or a wrong key. A rotation interrupted
// before its key file was renamed counts as opened (OpenInDir finishes
// it); a vault never used needs no key yet (OpenInDir creates one).
func CheckKeyInDir(dir string, getenv func(string) string, check []byte, entries int) error {
	k, ok, err := KeyFromEnv(getenv)
	if err != nil {
		return err
	}
	if !ok {
		keyPath := filepath.Join(dir, KeyFileName)
		if check != nil {
			if nk, err := loadKeyFile(filepath.Join(dir, NewKeyFileName)); err == nil && VerifyKeyCheck(nk, check) == nil {
				return nil
			}
		}
		k, err = LoadKeyFile(dir)
		if errors.Is(err, fs.ErrNotExist) {
			if entries > 0 || check != nil {
				return missingKeyFileError(keyPath, entries)
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	if check == nil {
		if entries > 0 {
			return errors.New("vault: entries exist but no key check is stored; refusing to guess the key")
		}
		return nil
	}
	if err := VerifyKeyCheck(k, check); err != nil {
		return wrongKeyError(dir, err)
	}
	return nil
}

// openKey returns the master key of OpenInDir.
func openKey(ctx context.Context, dir string, getenv func(string) string, st Storage) (Key, error) {
	k, ok, err := KeyFromEnv(getenv)
	if err != nil {
		return Key{}, err
	}
	if ok {
		return k, nil
	}
	check, err := st.KeyCheck(ctx)
	if err != nil {
		return Key{}, fmt.Errorf("vault: read key check: %w", err)
	}
	if err := finishRotation(dir, check); err != nil {
		return Key{}, err
	}
	keyPath := filepath.Join(dir, KeyFileName)
	k, err = LoadKeyFile(dir)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Key{}, err
	}
	entries, err := st.ListEntries(ctx, "")
	if err != nil {
		return Key{}, fmt.Errorf("vault: list entries: %w", err)
	}
	if len(entries) > 0 || check != nil {
		return Key{}, missingKeyFileError(keyPath, len(entries))
	}
	k, _, err = LoadOrCreateKeyFile(dir)
	return k, err
}

// finishRotation completes or discards a key rotation that stopped before
// its last step. The new key file is written before the re-sealing
// transaction and renamed over the key file after it, so: if the key file
// still matches the stored key check, the transaction never committed and
// the new file is discarded; if only the new file matches, the transaction
// committed and the rename is finished.
func finishRotation(dir string, check []byte) error {
	newPath := filepath.Join(dir, NewKeyFileName)
	if _, err := os.Lstat(newPath); errors.Is(err, fs.ErrNotExist) || check == nil {
		return nil
	}
	if k, err := LoadKeyFile(dir); err == nil && VerifyKeyCheck(k, check) == nil {
		if err := os.Remove(newPath); err != nil {
			return fmt.Errorf("vault: remove the unused %s of an interrupted rotation: %w", newPath, err)
		}
		return nil
	}
	nk, err := loadKeyFile(newPath)
	if err != nil {
		return err
	}
	if VerifyKeyCheck(nk, check) != nil {
		return nil // neither matches: reported as a wrong key by the caller
	}
	if err := os.Rename(newPath, filepath.Join(dir, KeyFileName)); err != nil {
		return fmt.Errorf("vault: finish an interrupted key rotation: %w", err)
	}
	syncDir(dir)
	return nil
}

// WriteKeyFile writes k to a new file at path with mode 0600, synced. It
// refuses to replace an existing file.
func WriteKeyFile(path string, k Key) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("vault: write %s: %w", path, err)
	}
	_, werr := f.WriteString(k.Encode() + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return fmt.Errorf("vault: write %s: %w", path, werr)
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// Rotation says what RotateInDir did.
type Rotation struct {
	// Entries is how many entries were re-sealed.
	Entries int
	// FromEnv is set when the keys came from the environment: the operator
	// must now set EnvKey to the value of EnvNewKey.
	FromEnv bool
	// KeyPath is the key file that holds the new key (key file only).
	KeyPath string
}

// RotateInDir re-seals every entry of v, the vault of data directory dir,
// under a new master key in one transaction. With a key file, a new random
// key is written to NewKeyFileName first and renamed over the key file
// after the commit; a crash at any point loses nothing (OpenInDir finishes
// or discards the rotation). With EnvKey, the new key comes from EnvNewKey
// (read with getenv), and the operator swaps the variables afterwards.
// Run it with the gateway stopped.
func RotateInDir(ctx context.Context, v *Vault, dir string, getenv func(string) string) (Rotation, error) {
	if _, fromEnv, _ := KeyFromEnv(getenv); fromEnv {
		raw := getenv(EnvNewKey)
		if raw == "" {
			return Rotation{}, fmt.Errorf("vault rotate-key: the key comes from %s, so set %s to the new key "+
				"(generate one with: head -c 32 /dev/urandom | base64)", EnvKey, EnvNewKey)
		}
		nk, err := ParseKey(raw)
		if err != nil {
			return Rotation{}, fmt.Errorf("vault rotate-key: %s: %w", EnvNewKey, err)
		}
		n, err := v.Rotate(ctx, nk)
		if err != nil {
			return Rotation{}, err
		}
		return Rotation{Entries: n, FromEnv: true}, nil
	}
	nk, err := GenerateKey()
	if err != nil {
		return Rotation{}, err
	}
	newPath := filepath.Join(dir, NewKeyFileName)
	_ = os.Remove(newPath) // a leftover of a rotation that never committed (the vault opened with the key file)
	if err := WriteKeyFile(newPath, nk); err != nil {
		return Rotation{}, err
	}
	syncDir(dir)
	n, err := v.Rotate(ctx, nk)
	if err != nil {
		_ = os.Remove(newPath)
		return Rotation{}, err
	}
	keyPath := filepath.Join(dir, KeyFileName)
	if err := os.Rename(newPath, keyPath); err != nil {
		return Rotation{}, fmt.Errorf("vault rotate-key: the entries are sealed under %s but it could not replace %s (%w); "+
			"talon finishes this at the next start, do not delete either file", newPath, keyPath, err)
	}
	syncDir(dir)
	return Rotation{Entries: n, KeyPath: keyPath}, nil
}
