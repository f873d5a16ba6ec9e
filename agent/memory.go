package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MemoryEntry is one entry of the memory the model keeps (the memory
// tools), as /memory lists it.
type MemoryEntry struct {
	ID int64
	// Channel marks an entry of the memory of the conversation's channel,
	// which its members share; otherwise the entry is the user's own.
	Channel bool
	// Author is the principal who saved it ("platform:workspace:user").
	Author  string
	Text    string
	SavedAt time.Time
}

// Memory is the memory the model keeps with its memory tools, as the
// /memory command sees it: a user lists the entries they may read and
// deletes those they may change.
type Memory interface {
	// MemoryEntries lists up to limit entries of key's principal's own
	// memory, newest first, then up to limit of the memory of key's
	// channel.
	MemoryEntries(ctx context.Context, key SessionKey, limit int) ([]MemoryEntry, error)
	// ForgetMemory deletes entry id if key's principal may: one of their
	// own, or of key's channel when they may change its memory. ok is
	// false otherwise, as for an id that does not exist, so that the
	// answer tells nothing about other people's entries.
	ForgetMemory(ctx context.Context, key SessionKey, id int64) (ok bool, err error)
}

// memoryListed bounds the entries /memory shows of each memory.
const memoryListed = 30

// memoryCommand lists the sender's memory entries, or deletes one
// ("rm ID").
func (r *Runtime) memoryCommand(ctx context.Context, q QueuedInbound, args string) (string, error) {
	if r.Memory == nil {
		return "Memory is not enabled on this gateway.", nil
	}
	p := q.Key.Principal
	fields := strings.Fields(args)
	if len(fields) > 0 && fields[0] != "list" {
		switch strings.ToLower(fields[0]) {
		case "rm", "remove", "delete", "forget":
		default:
			return "Usage: " + r.hint(p.Platform, CommandMemory) + " or " + r.hint(p.Platform, CommandMemoryRemove), nil
		}
		if len(fields) != 2 {
			return "Usage: " + r.hint(p.Platform, CommandMemoryRemove), nil
		}
		id, err := strconv.ParseInt(strings.TrimPrefix(fields[1], "#"), 10, 64)
		if err != nil || id <= 0 {
			return fmt.Sprintf("%q is not an entry number; %s lists them.", oneLine(fields[1], 40), r.hint(p.Platform, CommandMemory)), nil
		}
		ok, err := r.Memory.ForgetMemory(ctx, q.Key, id)
		if err != nil {
			return "", err
		}
		if !ok {
			return fmt.Sprintf("There is no entry #%d that you may delete; %s lists yours.", id, r.hint(p.Platform, CommandMemory)), nil
		}
		return fmt.Sprintf("Deleted entry #%d: I no longer remember it.", id), nil
	}
	es, err := r.Memory.MemoryEntries(ctx, q.Key, memoryListed)
	if err != nil {
		return "", err
	}
	var own, shared []MemoryEntry
	for _, e := range es {
		if e.Channel {
			shared = append(shared, e)
		} else {
			own = append(own, e)
		}
	}
	var b strings.Builder
	if len(own) == 0 {
		b.WriteString("Your memory is empty: I remember something for you when you ask me to.\n")
	} else {
		b.WriteString("What I remember for you (newest first):\n")
		for _, e := range own {
			fmt.Fprintf(&b, "  #%d %s: %s\n", e.ID, e.SavedAt.UTC().Format("2006-01-02"), oneLine(e.Text, 160))
		}
	}
	if len(shared) > 0 {
		b.WriteString("This channel's shared memory (newest first):\n")
		for _, e := range shared {
			fmt.Fprintf(&b, "  #%d %s by %s: %s\n", e.ID, e.SavedAt.UTC().Format("2006-01-02"), oneLine(e.Author, 60), oneLine(e.Text, 160))
		}
	}
	if len(es) > 0 {
		fmt.Fprintf(&b, "Delete an entry with %s.", r.hint(p.Platform, CommandMemoryRemove))
	}
	return strings.TrimRight(b.String(), "\n"), nil
}
