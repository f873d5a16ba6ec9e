package vault

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
)

// Renamed says what RenameUsers did.
type Renamed struct {
	// Moved is how many entries now have their new user.
	Moved int
	// Dropped are the entries removed because another entry of the same
	// name and (new) user was newer; each is in the audit log as
	// ReasonMergedDuplicate.
	Dropped []AuditEvent
	// Unopened is how many entries to rename did not open (tampered, or
	// sealed under another key): they cannot be re-sealed and keep their
	// old user, unusable as before.
	Unopened int
}

// RenameUsers gives entries a new user: every entry whose user rename
// maps to another one (rename returns it and true) is opened and sealed
// again under the new user (the user is bound into the sealed entry, so it
// cannot be changed in storage). Its creation and last-use times are kept.
//
// It is atomic, one storage transaction: after a crash either every entry
// has its new user or none has. It is idempotent: once done, rename maps
// no entry to another user and nothing is written. If another process
// changes an entry meanwhile, nothing is written and the error wraps
// ErrConflict; calling again starts over.
//
// When entries end up with the same user and name (one person's entry of
// one name under two old users, or under an old and the new user), the
// most recently created one is kept (on a tie, the one already under the
// new user, then the first old user in order) and the others are removed,
// each recorded in the audit log with ReasonMergedDuplicate under its old
// user. A newer entry is never the one removed.
func (v *Vault) RenameUsers(ctx context.Context, rename func(user string) (string, bool)) (Renamed, error) {
	all, err := v.st.ListEntries(ctx, "")
	if err != nil {
		return Renamed{}, fmt.Errorf("vault: rename users: %w", err)
	}
	type cand struct {
		s       SealedEntry
		newUser string
		moved   bool // the entry's user changes
	}
	byTarget := map[[2]string][]cand{}
	var out Renamed
	for _, s := range all {
		nu, ok := rename(s.User)
		if !ok || nu == s.User {
			continue
		}
		if err := checkUser(nu); err != nil {
			return Renamed{}, fmt.Errorf("vault: rename users: new user of %q: %w", s.User, err)
		}
		if _, err := Open(v.key, s); err != nil {
			out.Unopened++
			continue
		}
		byTarget[[2]string{nu, s.Name}] = append(byTarget[[2]string{nu, s.Name}], cand{s: s, newUser: nu, moved: true})
	}
	if len(byTarget) == 0 {
		return out, nil
	}
	for _, s := range all {
		if nu, ok := rename(s.User); ok && nu != s.User {
			continue // moved itself (rename is meant to be idempotent)
		}
		if k := [2]string{s.User, s.Name}; byTarget[k] != nil {
			byTarget[k] = append(byTarget[k], cand{s: s, newUser: s.User})
		}
	}
	keys := make([][2]string, 0, len(byTarget))
	for k := range byTarget {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })

	now := v.now()
	var remove, add []SealedEntry
	for _, k := range keys {
		cs := byTarget[k]
		slices.SortFunc(cs, func(a, b cand) int {
			if c := b.s.CreatedAt.Compare(a.s.CreatedAt); c != 0 {
				return c // newest first
			}
			if a.moved != b.moved {
				if !a.moved {
					return -1
				}
				return 1
			}
			return cmp.Compare(a.s.User, b.s.User)
		})
		for i, c := range cs {
			if i == 0 {
				if !c.moved {
					continue // the entry already under the new user stays
				}
				ns, err := v.reseal(c.s, c.newUser)
				if err != nil {
					return Renamed{}, err
				}
				remove = append(remove, c.s)
				add = append(add, ns)
				out.Moved++
				continue
			}
			remove = append(remove, c.s)
			out.Dropped = append(out.Dropped, AuditEvent{Time: now, User: c.s.User, Name: c.s.Name, Reason: ReasonMergedDuplicate})
		}
	}
	if err := v.st.Rewrite(ctx, remove, add, out.Dropped); err != nil {
		if errors.Is(err, ErrConflict) {
			return Renamed{}, fmt.Errorf("vault: rename users: %w", err)
		}
		return Renamed{}, fmt.Errorf("vault: rename users: store: %w", err)
	}
	v.mu.Lock()
	v.secrets = map[string][][]byte{}
	v.mu.Unlock()
	return out, nil
}

// reseal opens s and seals it again for user, keeping its times.
func (v *Vault) reseal(s SealedEntry, user string) (SealedEntry, error) {
	e, err := Open(v.key, s)
	if err != nil {
		return SealedEntry{}, err
	}
	defer e.Value.Wipe()
	e.User = user
	ns, err := seal(v.key, e, s.CreatedAt)
	if err != nil {
		return SealedEntry{}, fmt.Errorf("vault: re-seal %q for %s: %w", s.Name, user, err)
	}
	ns.LastUsed = s.LastUsed
	return ns, nil
}
