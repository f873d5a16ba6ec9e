package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/memory"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault/leak"
)

// openMemory offers the memory tools beside a.rt.Tools and /memory, when
// memory.enabled. Before anything is saved, the text is checked with the
// vault's redactor (the user's values, known token formats) and with the
// configuration's own credentials.
func (a *app) openMemory() {
	mc := a.cfg.Memory
	if !mc.Enabled {
		return
	}
	dets := []agent.Redactor{configSecrets{leak.New(a.configSecretValues())}}
	if a.redactor != nil {
		dets = append(dets, a.redactor)
	}
	svc := &memory.Service{
		Store:      a.db,
		Detectors:  dets,
		Policy:     memory.Policy{Writers: mc.ChannelWriters, Admin: a.isAdmin},
		MaxEntries: mc.MaxEntries,
		Log:        a.log.With().Str("component", "memory").Logger(),
	}
	a.memory = svc
	a.rt.Memory = svc
	a.rt.Tools = memoryTools{mem: svc, next: a.rt.Tools}
}

// memoryParents lets memory find the channel of platform's threads with
// parent, before the runtime runs.
func (a *app) memoryParents(platform string, parent func(channel string) string) {
	if a.memory == nil {
		return
	}
	if a.memory.Parents == nil {
		a.memory.Parents = map[string]func(string) string{}
	}
	a.memory.Parents[platform] = parent
}

// isAdmin reports whether p is one of console.admins, or of slack.admins
// or discord.admins on its platform.
func (a *app) isAdmin(p agent.Principal) bool {
	if slices.Contains(a.cfg.Console.Admins, p.String()) {
		return true
	}
	switch p.Platform {
	case "slack":
		return slices.Contains(a.cfg.Slack.Admins, p.User)
	case "discord":
		return slices.Contains(a.cfg.Discord.Admins, p.User)
	}
	return false
}

// configSecretValues are the credentials of the configuration (every
// config.Secret field, the llm.headers) and of the environment variables
// Talon reads credentials from, so that memory never keeps one.
func (a *app) configSecretValues() [][]byte {
	var out [][]byte
	a.eachConfigSecret(func(_, v string) { out = append(out, []byte(v)) })
	return out
}

// eachConfigSecret calls f with every credential of the configuration
// that is set, named by its key (llm.api_key, llm.headers.X-Org) or
// environment variable.
func (a *app) eachConfigSecret(f func(name, value string)) {
	add := func(name, s string) {
		if strings.TrimSpace(s) != "" {
			f(name, s)
		}
	}
	secretType := reflect.TypeFor[config.Secret]()
	var walk func(name string, v reflect.Value)
	walk = func(name string, v reflect.Value) {
		switch {
		case v.Type() == secretType:
			add(name, v.Interface().(config.Secret).Reveal())
		case v.Kind() == reflect.Struct:
			for i := range v.NumField() {
				if fd := v.Type().Field(i); fd.IsExported() {
					key, _, _ := strings.Cut(fd.Tag.Get("yaml"), ",")
					if key == "" {
						key = strings.ToLower(fd.Name)
					}
					walk(strings.TrimPrefix(name+"."+key, "."), v.Field(i))
				}
			}
		case v.Kind() == reflect.Slice || v.Kind() == reflect.Array:
			for i := range v.Len() {
				walk(fmt.Sprintf("%s[%d]", name, i), v.Index(i))
			}
		case v.Kind() == reflect.Map:
			for it := v.MapRange(); it.Next(); {
				walk(fmt.Sprintf("%s.%v", name, it.Key()), it.Value())
			}
		case v.Kind() == reflect.Pointer && !v.IsNil():
			walk(name, v.Elem())
		}
	}
	walk("", reflect.ValueOf(*a.cfg))
	for _, k := range []string{"TALON_CONSOLE_TOKEN", "TALON_VAULT_KEY", "TALON_VAULT_NEW_KEY"} {
		add(k, a.env.getenv(k))
	}
}

// warnShortConfigSecrets logs, by name, each configuration credential
// too short to be told from ordinary text: it is redacted from errors only
// where it stands alone, and the leak checks do not look for it (see
// SECURITY.md). A local model server's "x" is fine; a real credential is
// not that short.
func (a *app) warnShortConfigSecrets() {
	a.eachConfigSecret(func(name, v string) {
		if len(v) < leak.MinSecretLen {
			a.log.Warn().Str("key", name).Int("min_bytes", leak.MinSecretLen).
				Msg("configuration: this credential has fewer than min_bytes bytes, too few to be told from ordinary text, so it is redacted from errors only where it stands alone and the leak checks do not look for it; fine for a local server that takes any key, use the full key anywhere else")
		}
	})
}

// configSecrets is a leak detector of the configuration's credentials as
// an agent.Redactor.
type configSecrets struct{ d *leak.Detector }

func (c configSecrets) Redact(_ context.Context, _ agent.Principal, text string) (string, int) {
	out, fs := c.d.Redact(text)
	return out, len(fs)
}

// memoryTools offers the memory tools beside the other tools (the sandbox
// and MCP's toolSet, or a test's runner), as toolSet combines the sandbox
// and MCP: a memory tool's name goes to the memory.
type memoryTools struct {
	mem  *memory.Service
	next agent.ToolRunner // nil: the memory tools only
}

var (
	_ agent.ToolRunner         = memoryTools{}
	_ agent.ToolMemoryReporter = memoryTools{}
)

func (t memoryTools) Tools(ctx context.Context, p agent.Principal) ([]llm.Tool, error) {
	var out []llm.Tool
	if t.next != nil {
		more, err := t.next.Tools(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, m := range more {
			if !t.mem.Owns(m.Name) {
				out = append(out, m)
			}
		}
	}
	own, err := t.mem.Tools(ctx, p)
	if err != nil {
		return nil, err
	}
	return append(out, own...), nil
}

func (t memoryTools) Run(ctx context.Context, call agent.ToolCall) (agent.ToolResult, error) {
	if t.mem.Owns(call.Name) || t.next == nil {
		return t.mem.Run(ctx, call)
	}
	return t.next.Run(ctx, call)
}

func (t memoryTools) ToolMemory() agent.ToolMemory {
	if mr, ok := t.next.(agent.ToolMemoryReporter); ok {
		return mr.ToolMemory()
	}
	return agent.ToolMemory{}
}

const memoryUsage = `Usage:
  talon memory list   [--user ID | --channel slack:C123] [--limit N] [--config FILE]
      without --user or --channel: every memory with its number of entries;
      with one: that memory's entries, newest first (--user also lists the
      entries the user saved in channels' memories)
  talon memory rm     ID [ID...] [--config FILE]
      delete entries by number, in any memory
  talon memory export --user ID [--config FILE]
      everything memory holds of a user (their own memory and what they
      saved in channels' memories), as JSON on stdout
User IDs are platform:workspace:user (slack:T123:U456, discord::1234, terminal::local).
These commands may run beside a running gateway.
`

// cmdMemory runs the memory subcommands.
func cmdMemory(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"memory: list, rm or export?\n" + memoryUsage}
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "list", "rm", "export":
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, memoryUsage)
		return nil
	default:
		return &usageError{fmt.Sprintf("memory: unknown subcommand %q\n%s", sub, memoryUsage)}
	}
	fs := flag.NewFlagSet("memory "+sub, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), memoryUsage) }
	configPath := fs.String("config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	var (
		user, channel string
		limit         int
	)
	if sub != "rm" {
		fs.StringVar(&user, "user", "", "the user, platform:workspace:user")
	}
	if sub == "list" {
		fs.StringVar(&channel, "channel", "", "the channel, slack:CHANNEL_ID or discord:CHANNEL_ID")
		fs.IntVar(&limit, "limit", 100, "how many entries to show")
	}
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		return err
	}
	var ids []int64
	switch {
	case sub == "rm":
		if len(pos) == 0 {
			return &usageError{"memory rm: which entries? talon memory rm ID [ID...]\n" + memoryUsage}
		}
		for _, p := range pos {
			id, err := strconv.ParseInt(strings.TrimPrefix(p, "#"), 10, 64)
			if err != nil || id <= 0 {
				return &usageError{fmt.Sprintf("memory rm: %q is not an entry number", p)}
			}
			ids = append(ids, id)
		}
	case len(pos) > 0:
		return &usageError{fmt.Sprintf("memory %s: unexpected argument %q", sub, pos[0])}
	case sub == "export" && user == "":
		return &usageError{"memory export: --user is required\n" + memoryUsage}
	case user != "" && channel != "":
		return &usageError{"memory list: --user or --channel, not both"}
	}
	if user != "" {
		if user, err = memoryUser(e, user); err != nil {
			return err
		}
	}
	if channel != "" {
		platform, id, ok := strings.Cut(channel, ":")
		if !ok || platform == "" || id == "" {
			return &usageError{fmt.Sprintf("memory list: --channel %q: want platform:CHANNEL_ID, e.g. slack:C123", channel)}
		}
	}
	cfg, err := loadConfig(e, *configPath)
	if err != nil {
		return err
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	switch sub {
	case "rm":
		return memoryRemove(ctx, e, db, ids)
	case "export":
		return memoryExport(ctx, e, db, user)
	}
	switch {
	case user != "":
		return memoryListEntries(ctx, e, db, store.MemoryFilter{Space: memory.UserSpace(memoryPrincipal(user))}, store.MemoryFilter{Author: user}, limit)
	case channel != "":
		return memoryListEntries(ctx, e, db, store.MemoryFilter{Space: memory.ChannelSpace(channel)}, store.MemoryFilter{}, limit)
	}
	spaces, err := db.MemorySpaces(ctx)
	if err != nil {
		return err
	}
	if len(spaces) == 0 {
		fmt.Fprintln(e.stdout, "Memory is empty.")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMORY\tENTRIES\tNEWEST")
	for _, s := range spaces {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", s.Space, s.Entries, s.Newest.UTC().Format(time.DateTime))
	}
	return tw.Flush()
}

// memoryUser checks a --user value and gives a Discord or Slack Enterprise
// Grid user the principal without workspace that their entries have.
func memoryUser(e env, user string) (string, error) {
	if _, err := agent.ParsePrincipal(user); err != nil {
		return "", &usageError{err.Error()}
	}
	if g, ok := store.GlobalUser(user); ok {
		fmt.Fprintf(e.stderr, "memory: %s is %s: Discord and Slack Enterprise Grid user ids are the same in every workspace\n", user, g)
		return g, nil
	}
	return user, nil
}

func memoryPrincipal(s string) agent.Principal {
	p, _ := agent.ParsePrincipal(s) // checked by memoryUser
	return p
}

// memoryListEntries prints the entries of f (and of also, when it names
// something: the user's entries in channels), newest first.
func memoryListEntries(ctx context.Context, e env, db memoryStore, f, also store.MemoryFilter, limit int) error {
	ms, err := db.ListMemories(ctx, f, limit)
	if err != nil {
		return err
	}
	if also.Author != "" {
		more, err := db.ListMemories(ctx, also, limit)
		if err != nil {
			return err
		}
		for _, m := range more {
			if m.Space != f.Space {
				ms = append(ms, m)
			}
		}
	}
	if len(ms) == 0 {
		fmt.Fprintln(e.stdout, "No entries.")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSAVED\tMEMORY\tAUTHOR\tTAINTED\tTEXT")
	for _, m := range ms {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.CreatedAt.UTC().Format(time.DateTime), m.Space, m.Author,
			yesNo(m.Taint != ""), oneLineClip(m.Text, 100))
	}
	return tw.Flush()
}

func memoryRemove(ctx context.Context, e env, db memoryStore, ids []int64) error {
	var missing []string
	for _, id := range ids {
		m, err := db.GetMemory(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			missing = append(missing, "#"+strconv.FormatInt(id, 10))
			continue
		}
		if err != nil {
			return err
		}
		ok, err := db.ForgetMemory(ctx, id, m.Space)
		if err != nil {
			return err
		}
		if !ok {
			missing = append(missing, "#"+strconv.FormatInt(id, 10))
			continue
		}
		fmt.Fprintf(e.stdout, "removed #%d of %s\n", id, m.Space)
	}
	if len(missing) > 0 {
		return fmt.Errorf("memory: no entry %s", strings.Join(missing, ", "))
	}
	return nil
}

// memoryExportEntry is one entry as `talon memory export` writes it.
type memoryExportEntry struct {
	ID      int64     `json:"id"`
	Memory  string    `json:"memory"`
	Author  string    `json:"author"`
	Text    string    `json:"text"`
	SavedAt time.Time `json:"saved_at"`
	// Tainted is the source of the saving turn's taint, if any.
	Tainted string `json:"tainted,omitempty"`
}

// memoryExport writes everything memory holds of user: their own memory
// and the entries they saved in channels' memories, oldest first.
func memoryExport(ctx context.Context, e env, db memoryStore, user string) error {
	own := memory.UserSpace(memoryPrincipal(user))
	entries := []memoryExportEntry{}
	seen := map[int64]bool{}
	for _, f := range []store.MemoryFilter{{Space: own}, {Author: user}} {
		for {
			ms, err := db.ListMemories(ctx, f, 500)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if !seen[m.ID] {
					seen[m.ID] = true
					entries = append(entries, memoryExportEntry{ID: m.ID, Memory: m.Space, Author: m.Author, Text: m.Text, SavedAt: m.CreatedAt, Tainted: m.Taint})
				}
			}
			if len(ms) < 500 {
				break
			}
			f.Before = ms[len(ms)-1].ID
		}
	}
	slices.SortFunc(entries, func(a, b memoryExportEntry) int { return cmp.Compare(a.ID, b.ID) })
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		User       string              `json:"user"`
		ExportedAt time.Time           `json:"exported_at"`
		Entries    []memoryExportEntry `json:"entries"`
	}{user, time.Now().UTC(), entries})
}
