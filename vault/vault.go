package vault

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// ErrNotFound is returned when a user has no entry of a name.
var ErrNotFound = errors.New("vault: no such entry")

// ErrConflict is wrapped by Storage.Rewrite when an entry it was to remove
// changed or went away since it was read.
var ErrConflict = errors.New("vault: an entry changed meanwhile")

// Storage keeps sealed entries, the key check and the audit log. The store
// package implements it on SQLite. It never sees a value in clear.
type Storage interface {
	// PutEntry inserts or replaces the entry (user, name).
	PutEntry(ctx context.Context, e SealedEntry) error
	// GetEntry returns the entry or an error wrapping ErrNotFound.
	GetEntry(ctx context.Context, user, name string) (SealedEntry, error)
	// ListEntries returns the entries of user, or of everyone when user is "".
	ListEntries(ctx context.Context, user string) ([]SealedEntry, error)
	// DeleteEntry removes an entry and reports whether it existed.
	DeleteEntry(ctx context.Context, user, name string) (bool, error)
	// ReplaceAll swaps every entry and the key check in one transaction
	// (key rotation).
	ReplaceAll(ctx context.Context, entries []SealedEntry, keyCheck []byte) error
	// Rewrite, in one transaction, removes each entry of remove (matched by
	// user, name and nonce: when one is gone or has changed, nothing is
	// written and the error wraps ErrConflict), then stores each of add
	// (replacing an entry of the same user and name; LastUsed as given)
	// and appends events.
	Rewrite(ctx context.Context, remove, add []SealedEntry, events []AuditEvent) error
	// KeyCheck returns the stored key check, or nil when none is stored.
	KeyCheck(ctx context.Context) ([]byte, error)
	// SetKeyCheck stores the key check.
	SetKeyCheck(ctx context.Context, check []byte) error
	// AppendAudit records an event; Touch records a use of an entry.
	AppendAudit(ctx context.Context, ev AuditEvent) error
	Touch(ctx context.Context, user, name string, at time.Time) error
	// RecentAudit returns up to limit events, newest first.
	RecentAudit(ctx context.Context, limit int) ([]AuditEvent, error)
}

// Vault opens and seals one deployment's entries under its master key, and
// audits every use. It is safe for concurrent use.
type Vault struct {
	key Key
	st  Storage
	now func() time.Time

	mu      sync.Mutex
	secrets map[string][][]byte // user → open values, for leak checks; guarded by mu
}

// New checks key against the key check the storage was sealed with (and
// stores it on first use) and returns the vault. A mismatch is ErrWrongKey
// with what to do.
func New(ctx context.Context, key Key, st Storage) (*Vault, error) {
	if key.IsZero() {
		return nil, fmt.Errorf("vault: %w", ErrInvalidKey)
	}
	check, err := st.KeyCheck(ctx)
	if err != nil {
		return nil, fmt.Errorf("vault: read key check: %w", err)
	}
	if check == nil {
		entries, err := st.ListEntries(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("vault: list entries: %w", err)
		}
		if len(entries) > 0 {
			return nil, fmt.Errorf("vault: entries exist but no key check is stored; refusing to guess the key")
		}
		if err := st.SetKeyCheck(ctx, KeyCheck(key)); err != nil {
			return nil, fmt.Errorf("vault: store key check: %w", err)
		}
	} else if err := VerifyKeyCheck(key, check); err != nil {
		return nil, err
	}
	return &Vault{key: key, st: st, now: time.Now, secrets: map[string][][]byte{}}, nil
}

// Set seals e and stores it, replacing an entry of the same user and name.
// It refuses a value shorter than MinValueLen, not counting the spaces and
// tabs around it (eight spaces would be found in every indented line),
// with an *EntryError saying why, besides everything Entry.Normalize
// refuses.
func (v *Vault) Set(ctx context.Context, e Entry) error {
	s, err := v.sealChecked(e)
	if err != nil {
		return err
	}
	if err := v.st.PutEntry(ctx, s); err != nil {
		return fmt.Errorf("vault: store entry: %w", err)
	}
	v.forget(s.User)
	return nil
}

// SetAll seals every entry as Set does and stores them all in one
// transaction, or none: an access token and the refresh token that came
// with it are replaced together.
func (v *Vault) SetAll(ctx context.Context, es ...Entry) error {
	sealed := make([]SealedEntry, 0, len(es))
	for _, e := range es {
		s, err := v.sealChecked(e)
		if err != nil {
			return err
		}
		sealed = append(sealed, s)
	}
	if err := v.st.Rewrite(ctx, nil, sealed, nil); err != nil {
		return fmt.Errorf("vault: store entries: %w", err)
	}
	for _, s := range sealed {
		v.forget(s.User)
	}
	return nil
}

func (v *Vault) sealChecked(e Entry) (SealedEntry, error) {
	if n := len(bytes.Trim(e.Value.Reveal(), " \t")); e.Value.Len() > 0 && n < MinValueLen {
		what := fmt.Sprintf("the value is %d bytes", n)
		if n != e.Value.Len() {
			what += " without the spaces around it"
		}
		return SealedEntry{}, &EntryError{Name: e.Name, Field: "value", Reason: fmt.Sprintf(
			"%s; a secret must be at least %d bytes, because a shorter one cannot be told apart "+
				"from ordinary text and so could not be kept out of what the model and the chat see", what, MinValueLen)}
	}
	return Seal(v.key, e)
}

// List returns the sealed entries of user ("" for everyone): names, hosts
// and injection rules, never values.
func (v *Vault) List(ctx context.Context, user string) ([]SealedEntry, error) {
	es, err := v.st.ListEntries(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("vault: list: %w", err)
	}
	return es, nil
}

// Remove deletes an entry and reports whether it existed.
func (v *Vault) Remove(ctx context.Context, user, name string) (bool, error) {
	ok, err := v.st.DeleteEntry(ctx, user, name)
	if err != nil {
		return false, fmt.Errorf("vault: remove: %w", err)
	}
	v.forget(user)
	return ok, nil
}

// Has reports whether user has an entry called name.
func (v *Vault) Has(ctx context.Context, user, name string) bool {
	_, err := v.st.GetEntry(ctx, user, name)
	return err == nil
}

// Values returns the open values of user's entries, for leak detection. The
// result is cached until the user's entries change through this Vault (or
// Forget is called); callers must not modify it. An entry that does not
// open (tampered, moved, sealed under another key) is skipped and reported
// in the error, which names no value; the values of the others are still
// returned, so a caller can keep redacting them. A result with an error is
// not cached.
func (v *Vault) Values(ctx context.Context, user string) ([][]byte, error) {
	v.mu.Lock()
	vals, ok := v.secrets[user]
	v.mu.Unlock()
	if ok {
		return vals, nil
	}
	es, err := v.st.ListEntries(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("vault: list: %w", err)
	}
	vals = make([][]byte, 0, len(es))
	var errs []error
	for _, s := range es {
		e, err := Open(v.key, s)
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %q: %w", s.Name, err))
			continue
		}
		vals = append(vals, e.Value.Reveal())
	}
	if len(errs) > 0 {
		return vals, errors.Join(errs...)
	}
	v.mu.Lock()
	v.secrets[user] = vals
	v.mu.Unlock()
	return vals, nil
}

// Forget drops the cached values of user, so the next Values call reads
// the storage again (entries may have been changed by another process).
func (v *Vault) Forget(user string) { v.forget(user) }

func (v *Vault) forget(user string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.secrets, user)
}

// Credential returns user's entry name for a request to hostPort over
// scheme, made by tool, if the entry exists and is bound to that host and
// port and the scheme is https. hostPort is "host" (meaning port 443) or
// "host:port"; an entry bound to "example.com" is not sent to
// "example.com:8443", and one bound to "example.com:8443" only there. Every
// call is audited, allowed or not. The error wraps ErrNotFound or
// ErrHostNotBound and names no value.
func (v *Vault) Credential(ctx context.Context, user, name, hostPort, scheme, tool string) (*Entry, error) {
	ev := AuditEvent{Time: v.now(), User: user, Name: name, Host: hostPort, Tool: tool}
	refuse := func(r Reason, err error) (*Entry, error) {
		ev.Reason = r
		_ = v.st.AppendAudit(context.WithoutCancel(ctx), ev)
		return nil, err
	}
	if scheme != "https" {
		return refuse(ReasonNotHTTPS, fmt.Errorf("vault: credential %q is only sent over https", name))
	}
	s, err := v.st.GetEntry(ctx, user, name)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return refuse(ReasonNoEntry, fmt.Errorf("vault: %q: %w", name, ErrNotFound))
		}
		return nil, fmt.Errorf("vault: get entry: %w", err)
	}
	e, err := Open(v.key, s)
	if err != nil {
		return refuse(ReasonOpenFailed, err)
	}
	nh, err := NormalizeHost(hostPort)
	if err != nil {
		return refuse(ReasonInvalidHost, fmt.Errorf("vault: credential %q: %w", name, err))
	}
	ev.Host = nh
	if !e.AllowsHost(nh) {
		return refuse(ReasonHostNotBound, fmt.Errorf("vault: credential %q is not bound to host %q: %w", name, nh, ErrHostNotBound))
	}
	ev.Allowed, ev.Reason = true, ReasonInjected
	bg := context.WithoutCancel(ctx)
	_ = v.st.AppendAudit(bg, ev)
	_ = v.st.Touch(bg, user, name, ev.Time)
	return &e, nil
}

// Audit records an event decided elsewhere (a tool asking for a name its
// manifest does not grant, a leak found in an outbound request).
func (v *Vault) Audit(ctx context.Context, ev AuditEvent) {
	if ev.Time.IsZero() {
		ev.Time = v.now()
	}
	_ = v.st.AppendAudit(context.WithoutCancel(ctx), ev)
}

// RecentAudit returns up to limit audit events, newest first.
func (v *Vault) RecentAudit(ctx context.Context, limit int) ([]AuditEvent, error) {
	evs, err := v.st.RecentAudit(ctx, limit)
	if err != nil {
		return nil, fmt.Errorf("vault: audit: %w", err)
	}
	return evs, nil
}

// Rotate re-seals every entry under newKey and stores them with the new key
// check in one transaction. Afterwards the old key opens nothing.
func (v *Vault) Rotate(ctx context.Context, newKey Key) (int, error) {
	all, err := v.st.ListEntries(ctx, "")
	if err != nil {
		return 0, fmt.Errorf("vault: list: %w", err)
	}
	resealed, err := Rotate(v.key, newKey, all)
	if err != nil {
		return 0, err
	}
	if err := v.st.ReplaceAll(ctx, resealed, KeyCheck(newKey)); err != nil {
		return 0, fmt.Errorf("vault: store rotated entries: %w", err)
	}
	v.mu.Lock()
	v.key = newKey
	v.secrets = map[string][][]byte{}
	v.mu.Unlock()
	return len(resealed), nil
}

// ErrHostNotBound is wrapped when an entry exists but not for the host.
var ErrHostNotBound = errors.New("vault: host not bound")

// Apply adds the entry's value to an outbound request as its injection rule
// says. It makes Entry usable as the egress broker's Credential.
func (e *Entry) Apply(h http.Header, u *url.URL) {
	val := string(e.Value.Reveal())
	switch e.Injection.Kind {
	case InjectHeader:
		h.Set(e.Injection.Name, e.Injection.Prefix+val)
	case InjectQuery:
		q := u.Query()
		q.Set(e.Injection.Name, val)
		u.RawQuery = q.Encode()
	case InjectBasic:
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(e.Injection.Username+":"+val)))
	default:
		h.Set("Authorization", "Bearer "+val)
	}
}

// Secrets returns the raw value and the forms Apply sends, for redaction
// of echoes.
func (e *Entry) Secrets() [][]byte {
	val := e.Value.Reveal()
	out := [][]byte{val}
	if e.Injection.Kind == InjectBasic {
		out = append(out, []byte(base64.StdEncoding.EncodeToString([]byte(e.Injection.Username+":"+string(val)))))
	}
	return out
}
