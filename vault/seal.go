package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// FormatVersion is the sealing format this package writes. It is bound
// into the HKDF info string and the additional data.
const FormatVersion = 1

const (
	saltSize  = 32
	nonceSize = 12
	tagSize   = 16
	aadMagic  = "talon-vault-entry"
	hkdfInfo1 = "talon vault entry v1"
)

// Errors returned by Open and Rotate, besides ErrWrongKey and
// ErrInvalidKey.
var (
	// ErrTampered means a sealed entry does not authenticate under the right
	// master key: its ciphertext or any bound field (user, name, hosts,
	// injection rule, salt, nonce) was changed, or the row was moved.
	ErrTampered = errors.New("vault: sealed entry failed authentication (modified, moved to another user, or corrupt)")
	// ErrUnsupportedVersion means the entry was written by an unknown
	// format version.
	ErrUnsupportedVersion = errors.New("vault: unsupported sealed entry version")
)

// SealedEntry is exactly what is stored for one credential, one row of
// vault_entries. Every field except CreatedAt and LastUsed is bound by the
// AEAD; the value exists only inside Ciphertext.
type SealedEntry struct {
	Version   int
	User      string
	Name      string
	Hosts     []string // normalised, sorted, de-duplicated
	Injection Injection
	// KeyID identifies the master key that sealed the entry (8 bytes of
	// its key check value), so a wrong key is told apart from tampering.
	KeyID      []byte
	Salt       []byte // 32 random bytes, HKDF salt of the entry key
	Nonce      []byte // 12 random bytes
	Ciphertext []byte // AES-256-GCM ciphertext and tag
	CreatedAt  time.Time
	// LastUsed is when the entry was last injected (zero: never). Like
	// CreatedAt it is not bound: storage keeps it up to date.
	LastUsed time.Time
}

// ValueLen returns the length in bytes of the sealed value, which the
// ciphertext's length gives away (AES-GCM adds a fixed-size tag).
func (s SealedEntry) ValueLen() int { return max(0, len(s.Ciphertext)-tagSize) }

// String describes the entry without its ciphertext.
func (s SealedEntry) String() string {
	return fmt.Sprintf("vault.SealedEntry{v%d %s %q hosts=%v injection=%s}", s.Version, s.User, s.Name, s.Hosts, s.Injection.Kind)
}

// Seal validates and normalises e (see Entry.Normalize) and encrypts its
// value under a fresh key derived from master and a random salt, binding
// the version, user, name, hosts and injection rule as additional data.
func Seal(master Key, e Entry) (SealedEntry, error) {
	return seal(master, e, time.Now().UTC())
}

func seal(master Key, e Entry, created time.Time) (SealedEntry, error) {
	if !master.ok {
		return SealedEntry{}, fmt.Errorf("vault: seal: %w", ErrInvalidKey)
	}
	e, err := e.Normalize()
	if err != nil {
		return SealedEntry{}, fmt.Errorf("vault: seal: %w", err)
	}
	s := SealedEntry{
		Version:   FormatVersion,
		User:      e.User,
		Name:      e.Name,
		Hosts:     e.Hosts,
		Injection: e.Injection,
		KeyID:     append([]byte(nil), master.id[:]...),
		Salt:      make([]byte, saltSize),
		Nonce:     make([]byte, nonceSize),
		CreatedAt: created,
	}
	_, _ = rand.Read(s.Salt)
	_, _ = rand.Read(s.Nonce)
	aead, err := entryAEAD(master, s.Salt)
	if err != nil {
		return SealedEntry{}, fmt.Errorf("vault: seal %q: %w", e.Name, err)
	}
	s.Ciphertext = aead.Seal(nil, s.Nonce, e.Value.Reveal(), additionalData(&s))
	return s, nil
}

// Open checks and decrypts s. It fails closed: ErrWrongKey when s was
// sealed under another master key, ErrTampered when any bound field or the
// ciphertext was changed, ErrUnsupportedVersion for an unknown version.
// Errors name the entry and user, never the value.
func Open(master Key, s SealedEntry) (Entry, error) {
	if !master.ok {
		return Entry{}, fmt.Errorf("vault: open: %w", ErrInvalidKey)
	}
	if s.Version != FormatVersion {
		return Entry{}, fmt.Errorf("vault: open %q of %s: %w %d", s.Name, s.User, ErrUnsupportedVersion, s.Version)
	}
	if len(s.KeyID) != keyIDSize || !hmacEqual(s.KeyID, master.id[:]) {
		return Entry{}, fmt.Errorf("vault: open %q of %s: %w", s.Name, s.User, ErrWrongKey)
	}
	if len(s.Salt) != saltSize || len(s.Nonce) != nonceSize || len(s.Ciphertext) < tagSize {
		return Entry{}, fmt.Errorf("vault: open %q of %s: %w", s.Name, s.User, ErrTampered)
	}
	aead, err := entryAEAD(master, s.Salt)
	if err != nil {
		return Entry{}, fmt.Errorf("vault: open %q of %s: %w", s.Name, s.User, err)
	}
	pt, err := aead.Open(nil, s.Nonce, s.Ciphertext, additionalData(&s))
	if err != nil {
		return Entry{}, fmt.Errorf("vault: open %q of %s: %w", s.Name, s.User, ErrTampered)
	}
	return Entry{
		User:      s.User,
		Name:      s.Name,
		Value:     Secret{b: pt},
		Hosts:     append([]string(nil), s.Hosts...),
		Injection: s.Injection,
	}, nil
}

// Rotate opens every entry with old and seals it again under new, with
// fresh salts and nonces and the original CreatedAt and LastUsed. It returns nothing
// unless every entry opens, so the caller can replace all rows in one
// transaction. Afterwards old opens none of the returned entries.
func Rotate(old, new Key, entries []SealedEntry) ([]SealedEntry, error) {
	if !old.ok || !new.ok {
		return nil, fmt.Errorf("vault: rotate: %w", ErrInvalidKey)
	}
	if old.Equal(new) {
		return nil, fmt.Errorf("vault: rotate: %w: new key equals old key", ErrInvalidKey)
	}
	out := make([]SealedEntry, 0, len(entries))
	for i, s := range entries {
		e, err := Open(old, s)
		if err != nil {
			return nil, fmt.Errorf("vault: rotate entry %d: %w", i, err)
		}
		ns, err := seal(new, e, s.CreatedAt)
		e.Value.Wipe()
		if err != nil {
			return nil, fmt.Errorf("vault: rotate entry %d: %w", i, err)
		}
		ns.LastUsed = s.LastUsed
		out = append(out, ns)
	}
	return out, nil
}

// entryAEAD derives the per-entry key and returns its AES-256-GCM AEAD.
func entryAEAD(master Key, salt []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, master.b[:], salt, hkdfInfo1, 32)
	if err != nil {
		return nil, fmt.Errorf("derive entry key: %w", err)
	}
	block, err := aes.NewCipher(k)
	clear(k)
	if err != nil {
		return nil, fmt.Errorf("entry cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// additionalData is the unambiguous encoding of everything bound to the
// ciphertext: a magic string, the version, the key id, user, name, the
// host count and each host, and the injection rule, every variable-length
// field prefixed by its 32-bit big-endian length.
func additionalData(s *SealedEntry) []byte {
	b := make([]byte, 0, 128)
	b = appendField(b, aadMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(s.Version))
	b = appendField(b, string(s.KeyID))
	b = appendField(b, s.User)
	b = appendField(b, s.Name)
	b = binary.BigEndian.AppendUint32(b, uint32(len(s.Hosts)))
	for _, h := range s.Hosts {
		b = appendField(b, h)
	}
	return s.Injection.AppendCanonical(b)
}
