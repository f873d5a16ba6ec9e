package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// The vault's wiring: the service in package vault, its storage in store,
// and here the adapters that give it to the runtime, the sandbox and the
// egress broker, and the `talon vault` command.

// openVault opens the credential vault and sets a.redactor and a.secrets.
// It fails when the vault cannot be opened safely (wrong or missing key,
// key file readable by others): Talon does not run without its vault.
func (a *app) openVault(ctx context.Context) error {
	v, renamed, err := openVaultAt(ctx, a.env.getenv, a.cfg.DataDir, a.db.vault)
	if err != nil {
		return sharedKeyHint(a.cfg, err)
	}
	if renamed.Moved > 0 || renamed.Unopened > 0 {
		a.log.Info().Int("moved", renamed.Moved).Int("dropped", len(renamed.Dropped)).Int("unopened", renamed.Unopened).
			Msg("vault: entries of Discord and Slack Enterprise Grid users moved to principals without a workspace")
	}
	for _, d := range renamed.Dropped {
		a.log.Warn().Str("principal", d.User).Str("secret", d.Name).
			Msg("vault: removed an older entry of a name the same user also had elsewhere; the newest was kept (see talon vault audit)")
	}
	es, err := v.List(ctx, "")
	if err != nil {
		return err
	}
	for _, e := range es {
		if e.ValueLen() < vault.MinValueLen {
			a.log.Warn().Str("principal", e.User).Str("secret", e.Name).Int("min_bytes", vault.MinValueLen).
				Msg("vault: this entry's value is too short to be told from ordinary text, so it is never redacted; store a longer one or remove it")
		}
	}
	s := vaultSecrets{newVaultService(v, a.log), a.log}
	a.redactor = s
	a.secrets = s
	return nil
}

// sharedKeyHint adds to a vault's missing key file or wrong key, on
// PostgreSQL, where the key is: the replicas share the database but each
// has a data directory of its own, and only the one that first opened the
// vault (or the SQLite gateway migrated from) has the key file.
func sharedKeyHint(cfg *config.Config, err error) error {
	if cfg.Store.Driver != config.StorePostgres || !errors.Is(err, vault.ErrKeyFileMissing) && !errors.Is(err, vault.ErrWrongKey) {
		return err
	}
	return fmt.Errorf("%w. On PostgreSQL every replica needs the same key: set %s on each to the contents of %s "+
		"of the data directory that first opened the vault (or of the SQLite gateway migrated from)",
		err, vault.EnvKey, vault.KeyFileName)
}

// openVaultAt opens the vault of the data directory over db; the key is
// checked before anything else. Then the entries of principals that
// migration 0005 renamed (Discord users, Slack Enterprise Grid users, who
// no longer name a workspace) are re-sealed under their new principal, in
// one transaction; once done there is nothing left to rename, so later
// opens change nothing. It says what it renamed.
func openVaultAt(ctx context.Context, getenv func(string) string, dataDir string, st vault.Storage) (*vault.Vault, vault.Renamed, error) {
	v, err := vault.OpenInDir(ctx, dataDir, getenv, st)
	if err != nil {
		return nil, vault.Renamed{}, err
	}
	var r vault.Renamed
	for range 3 { // another process may change an entry meanwhile: read again
		if r, err = v.RenameUsers(ctx, store.GlobalUser); !errors.Is(err, vault.ErrConflict) {
			break
		}
	}
	if err != nil {
		return nil, vault.Renamed{}, err
	}
	return v, r, nil
}

// newVaultService returns the vault's service, logging what it cannot
// return.
func newVaultService(v *vault.Vault, log zerolog.Logger) *vault.Service {
	s := vault.NewService(v)
	s.OnError = func(user string, err error) {
		log.Error().Err(err).Str("principal", user).Msg("vault: some entries do not open; they are not used")
	}
	return s
}

// vaultSvc returns the open vault service, or nil.
func (a *app) vaultSvc() *vault.Service {
	s, _ := a.secrets.(vaultSecrets)
	return s.s
}

// egressCredentials is what the egress broker injects credentials from;
// nil when no vault is open.
func (a *app) egressCredentials() egress.CredentialSource {
	if s := a.vaultSvc(); s != nil {
		return vaultEgress{s, a.log}
	}
	return nil
}

// egressChecker scans tools' outbound requests and redacts responses; nil
// when no vault is open.
func (a *app) egressChecker() egress.LeakChecker {
	if s := a.vaultSvc(); s != nil {
		return vaultEgress{s, a.log}
	}
	return nil
}

// toolSecrets answers the sandbox's has_secret; nil when no vault is open.
func (a *app) toolSecrets() sandbox.Secrets {
	if s := a.vaultSvc(); s != nil {
		return vaultSecrets{s, a.log}
	}
	return nil
}

// vaultSecrets is the vault service as the runtime (agent.Redactor,
// agent.Secrets) and the sandbox (sandbox.Secrets) see it: a principal is
// the vault's user in its "platform:workspace:user" form.
type vaultSecrets struct {
	s   *vault.Service
	log zerolog.Logger
}

var (
	_ agent.Redactor  = vaultSecrets{}
	_ agent.Secrets   = vaultSecrets{}
	_ sandbox.Secrets = vaultSecrets{}
)

func (v vaultSecrets) Redact(ctx context.Context, p agent.Principal, text string) (string, int) {
	return v.s.Redact(ctx, p.String(), text)
}

func (v vaultSecrets) ListSecrets(ctx context.Context, p agent.Principal) ([]agent.SecretInfo, error) {
	es, err := v.s.List(ctx, p.String())
	if err != nil {
		return nil, err
	}
	out := make([]agent.SecretInfo, 0, len(es))
	for _, e := range es {
		out = append(out, agent.SecretInfo{Name: e.Name, Hosts: e.Hosts, Injection: describeInjection(e.Injection), CreatedAt: e.CreatedAt, LastUsed: e.LastUsed})
	}
	return out, nil
}

// AddSecret stores ns for p. A secret the vault refuses for what was
// entered comes back as an *agent.SecretError saying why.
func (v vaultSecrets) AddSecret(ctx context.Context, p agent.Principal, ns agent.NewSecret) error {
	in, err := agent.ParseInjection(ns.Injection)
	if err != nil {
		return err
	}
	e := vault.Entry{User: p.String(), Name: ns.Name, Value: vault.NewSecret(ns.Value), Hosts: ns.Hosts, Injection: vaultInjection(in)}
	defer e.Value.Wipe()
	err = v.s.Add(ctx, e)
	var ee *vault.EntryError
	if errors.As(err, &ee) {
		return &agent.SecretError{Field: ee.Field, Reason: ee.Reason}
	}
	return err
}

func (v vaultSecrets) RemoveSecret(ctx context.Context, p agent.Principal, name string) error {
	err := v.s.Remove(ctx, p.String(), name)
	if errors.Is(err, vault.ErrNotFound) {
		return fmt.Errorf("no secret named %q", name)
	}
	return err
}

func (v vaultSecrets) Has(ctx context.Context, p agent.Principal, name string) bool {
	return v.s.Has(ctx, p.String(), name)
}

// vaultEgress is the vault service as the egress broker's credential
// source and leak checker.
type vaultEgress struct {
	s   *vault.Service
	log zerolog.Logger
}

var (
	_ egress.CredentialSource = vaultEgress{}
	_ egress.LeakChecker      = vaultEgress{}
)

// Credential returns the caller's entry name when it is bound to hostPort.
// The broker asks only over https, after checking the tool's grant. Every
// call is audited by the vault.
func (v vaultEgress) Credential(ctx context.Context, c egress.Caller, name, hostPort string) (egress.Credential, error) {
	e, err := v.s.Credential(ctx, c.Principal.String(), c.Tool, name, hostPort)
	if errors.Is(err, vault.ErrUnavailable) {
		return nil, fmt.Errorf("%w: %w", egress.ErrNoCredential, err)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// CheckOutbound refuses a request that carries one of the caller's secret
// values or a well-known token format (see vault.Service.CheckOutbound).
func (v vaultEgress) CheckOutbound(ctx context.Context, c egress.Caller, r egress.Request) error {
	err := v.s.CheckOutbound(ctx, c.Principal.String(), c.Tool, vault.Request{URL: r.URL, Headers: r.Headers, Body: r.Body, Credential: r.Credential})
	var le *vault.LeakError
	if errors.As(err, &le) {
		v.log.Warn().Str("principal", c.Principal.String()).Str("tool", c.Tool).Str("host", le.Host).Str("kind", string(le.Kind)).
			Msg("outbound request carried a secret; refused")
		return &egress.DeniedError{Host: le.Host, Reason: le.Error()}
	}
	return err
}

// RedactInbound removes the injected values and their encodings from a
// response.
func (v vaultEgress) RedactInbound(_ agent.Principal, secrets [][]byte, s string) string {
	return v.s.RedactInbound(secrets, s)
}

func vaultInjection(in agent.Injection) vault.Injection {
	return vault.Injection{Kind: vault.InjectionKind(in.Kind), Name: in.Name, Prefix: in.Prefix, Username: in.Username}
}

// describeInjection says how a value is sent, for listings.
func describeInjection(in vault.Injection) string {
	return agent.Injection{Kind: string(in.Kind), Name: in.Name, Prefix: in.Prefix, Username: in.Username}.Describe()
}

// parseInterleaved parses flags that may come before or after positional
// arguments ("set --user U NAME --host H") and returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

const vaultUsage = `usage:
  talon vault set --user ID NAME --host HOST [--host HOST]... [--bearer | --header NAME [--prefix P] | --query NAME | --basic USER]
  talon vault list [--user ID]
  talon vault rm --user ID NAME
  talon vault audit [--limit N]
  talon vault rotate-key
every command takes --config FILE; user IDs are platform:workspace:user (slack:T123:U456, discord::1234, terminal::local;
Discord users and Slack Enterprise Grid users, W…, name no workspace);
a credential is sent only over https to a host and port it is bound to: --host api.example.com means port 443,
--host api.example.com:8443 port 8443`

// vaultSetHelp is what `talon vault set --help` says before the flags.
var vaultSetHelp = fmt.Sprintf(`Stores a credential for one user, sealed in the vault. The value is read without echo from the
terminal, or from stdin (one trailing newline removed); never from the command line. It must be
at least %d bytes, not counting spaces around it: a shorter value cannot be told apart from
ordinary text, so it could not be redacted from what the model and the chat see.
It is sent only over https, only to the hosts and ports it is bound to: --host api.example.com
means port 443, --host api.example.com:8443 port 8443 (and not 443); *.example.com means
any subdomain of example.com on port 443.

`, vault.MinValueLen)

// cmdVault runs the vault subcommands. Each opens the vault first, so a
// wrong or missing key stops it before it reads or changes anything. set,
// list, rm and audit may run beside a running gateway (SQLite WAL);
// rotate-key takes the data directory lock, so the gateway must be stopped.
func cmdVault(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"vault: missing subcommand\n" + vaultUsage}
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("vault "+sub, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	configPath := fs.String("config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	var (
		user  = fs.String("user", "", "the owner, platform:workspace:user")
		sf    agent.SecretFlags
		limit int
	)
	switch sub {
	case "set":
		sf.Register(fs)
	case "audit":
		fs.IntVar(&limit, "limit", 50, "how many events to show")
	case "list", "rm", "rotate-key":
	default:
		return &usageError{fmt.Sprintf("vault: unknown subcommand %q\n%s", sub, vaultUsage)}
	}
	fs.Usage = func() {
		for _, l := range strings.Split(vaultUsage, "\n") {
			if strings.HasPrefix(l, "  talon vault "+sub+" ") || l == "  talon vault "+sub {
				fmt.Fprintf(fs.Output(), "usage:\n%s\n\n", l)
			}
		}
		if sub == "set" {
			fmt.Fprint(fs.Output(), vaultSetHelp)
		}
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		return err
	}
	wantPos := map[string]int{"set": 1, "rm": 1}[sub]
	if len(pos) != wantPos {
		return &usageError{fmt.Sprintf("vault %s: want %d argument(s), got %d\n%s", sub, wantPos, len(pos), vaultUsage)}
	}
	if (sub == "set" || sub == "rm") && *user == "" {
		return &usageError{fmt.Sprintf("vault %s: --user is required\n%s", sub, vaultUsage)}
	}
	if *user != "" {
		if _, err := agent.ParsePrincipal(*user); err != nil {
			return &usageError{err.Error()}
		}
		if g, ok := store.GlobalUser(*user); ok {
			fmt.Fprintf(e.stderr, "vault: %s is %s: Discord and Slack Enterprise Grid user ids are the same in every workspace\n", *user, g)
			*user = g
		}
	}
	var in agent.Injection
	if sub == "set" {
		if in, err = sf.Injection(); err != nil {
			return &usageError{"vault set: " + err.Error()}
		}
	}
	cfg, err := loadConfig(e, *configPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory %s: %w", cfg.DataDir, err)
	}
	if sub == "rotate-key" {
		lock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer lock.Close()
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	v, renamed, err := openVaultAt(ctx, e.getenv, cfg.DataDir, db.vault)
	if err != nil {
		return sharedKeyHint(cfg, err)
	}
	if renamed.Moved > 0 {
		fmt.Fprintf(e.stderr, "vault: moved %d entries of Discord and Slack Enterprise Grid users to principals without a workspace\n", renamed.Moved)
	}
	for _, d := range renamed.Dropped {
		fmt.Fprintf(e.stderr, "vault: removed %q of %s: the same user had a newer entry of that name, which was kept (see talon vault audit)\n", d.Name, d.User)
	}

	switch sub {
	case "set":
		return vaultSet(ctx, e, v, *user, pos[0], sf.Hosts, vaultInjection(in))
	case "list":
		return vaultList(ctx, e, v, *user)
	case "rm":
		ok, err := v.Remove(ctx, *user, pos[0])
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("vault: %s has no entry %q", *user, pos[0])
		}
		fmt.Fprintf(e.stdout, "removed %q of %s\n", pos[0], *user)
		return nil
	case "audit":
		return vaultAudit(ctx, e, v, limit)
	default:
		r, err := vault.RotateInDir(ctx, v, cfg.DataDir, e.getenv)
		if err != nil {
			return err
		}
		if r.FromEnv {
			fmt.Fprintf(e.stdout, "re-sealed %d entries under the new key. Now set %s to the value of %s and unset %s before starting talon.\n",
				r.Entries, vault.EnvKey, vault.EnvNewKey, vault.EnvNewKey)
			return nil
		}
		fmt.Fprintf(e.stdout, "re-sealed %d entries under a new key in %s; back it up, the old key opens nothing now\n", r.Entries, r.KeyPath)
		return nil
	}
}

// readSecretValue reads the value without echo from a terminal, or from
// stdin otherwise (one trailing newline removed). Never from argv.
func readSecretValue(e env, prompt string) ([]byte, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, fmt.Errorf("read the value: %w", err)
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(e.stdin, vault.MaxValueLen+3))
	if err != nil {
		return nil, fmt.Errorf("read the value from stdin: %w", err)
	}
	if bytes.HasSuffix(b, []byte("\r\n")) {
		b = b[:len(b)-2]
	} else if bytes.HasSuffix(b, []byte("\n")) {
		b = b[:len(b)-1]
	}
	return b, nil
}

func vaultSet(ctx context.Context, e env, v *vault.Vault, user, name string, hosts []string, in vault.Injection) error {
	// Validate everything but the value before asking for it.
	probe := vault.Entry{User: user, Name: name, Value: vault.SecretString("x"), Hosts: hosts, Injection: in}
	if _, err := probe.Normalize(); err != nil {
		return err
	}
	val, err := readSecretValue(e, fmt.Sprintf("Value of %q for %s (not echoed): ", name, user))
	if err != nil {
		return err
	}
	entry := vault.Entry{User: user, Name: name, Value: vault.NewSecret(val), Hosts: hosts, Injection: in}
	clear(val)
	defer entry.Value.Wipe()
	if err := v.Set(ctx, entry); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "stored %q for %s (hosts %s, %s)\n", name, user, strings.Join(hosts, ", "), describeInjection(in))
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func vaultList(ctx context.Context, e env, v *vault.Vault, user string) error {
	es, err := v.List(ctx, user)
	if err != nil {
		return err
	}
	if len(es) == 0 {
		fmt.Fprintln(e.stdout, "no entries")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tNAME\tHOSTS\tINJECTION\tCREATED\tLAST USED")
	var short []string
	for _, x := range es {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.User, x.Name, strings.Join(x.Hosts, ","), describeInjection(x.Injection), fmtTime(x.CreatedAt), fmtTime(x.LastUsed))
		if x.ValueLen() < vault.MinValueLen {
			short = append(short, fmt.Sprintf("%q of %s", x.Name, x.User))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range short {
		fmt.Fprintf(e.stdout, "warning: the value of %s is shorter than %d bytes, so it is never redacted; store a longer one or remove it\n", s, vault.MinValueLen)
	}
	return nil
}

func vaultAudit(ctx context.Context, e env, v *vault.Vault, limit int) error {
	if limit < 1 || limit > 10000 {
		return &usageError{"vault audit: --limit must be 1 to 10000"}
	}
	evs, err := v.RecentAudit(ctx, limit)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		fmt.Fprintln(e.stdout, "no events")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tUSER\tNAME\tHOST\tTOOL\tRESULT\tREASON")
	for _, a := range evs {
		res := "refused"
		if a.Allowed {
			res = "used"
		}
		tool := a.Tool
		if tool == "" {
			tool = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Time.Local().Format(time.DateTime), a.User, a.Name, a.Host, tool, res, a.Reason)
	}
	return tw.Flush()
}
