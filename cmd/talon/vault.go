package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
	"github.com/talonhq/talon/vault/leak"
)

// Environment variables and files of the vault's master key.
const (
	// envNewKey holds the new key for `talon vault rotate-key` when the
	// current one comes from TALON_VAULT_KEY.
	envNewKey = "TALON_VAULT_NEW_KEY"
	// newKeyFileName is where rotate-key writes the new key before the
	// re-sealing transaction; openVaultKey finishes an interrupted rotation.
	newKeyFileName = vault.KeyFileName + ".new"
)

// detectorTTL is how long a user's leak detector is reused. Entries added
// or removed through this process (/secret) invalidate it at once; entries
// changed by `talon vault set|rm` in another process are seen after at
// most this long.
const detectorTTL = 30 * time.Second

// maxCachedDetectors bounds the per-user and per-injection detector caches.
const maxCachedDetectors = 4096

// openVault opens the credential vault and sets a.redactor and a.secrets.
// It fails when the vault cannot be opened safely (wrong or missing key,
// key file readable by others): Talon does not run without its vault.
func (a *app) openVault(ctx context.Context) error {
	svc, err := openVaultService(ctx, a.env, a.cfg.DataDir, a.db, a.log)
	if err != nil {
		return err
	}
	a.redactor = svc
	a.secrets = svc
	return nil
}

// vaultSvc returns the open vault service, or nil.
func (a *app) vaultSvc() *vaultService {
	s, _ := a.secrets.(*vaultService)
	return s
}

// egressCredentials is what the egress broker injects credentials from;
// nil when no vault is open.
func (a *app) egressCredentials() egress.CredentialSource {
	if s := a.vaultSvc(); s != nil {
		return vaultCredentials{s}
	}
	return nil
}

// egressChecker scans tools' outbound requests and redacts responses; nil
// when no vault is open.
func (a *app) egressChecker() egress.LeakChecker {
	if s := a.vaultSvc(); s != nil {
		return vaultChecker{s}
	}
	return nil
}

// toolSecrets answers the sandbox's has_secret; nil when no vault is open.
func (a *app) toolSecrets() sandbox.Secrets {
	if s := a.vaultSvc(); s != nil {
		return s
	}
	return nil
}

// openVaultKey returns the master key: TALON_VAULT_KEY when set, else the
// key file in dataDir. The key file is created (mode 0600) only for a vault
// that has never held anything; a missing file for a used vault is an
// error saying what to do. A rotation interrupted between its transaction
// and the rename of vault.key.new is finished here.
func openVaultKey(ctx context.Context, getenv func(string) string, dataDir string, st vault.Storage) (vault.Key, error) {
	k, ok, err := vault.KeyFromEnv(getenv)
	if err != nil {
		return vault.Key{}, err
	}
	if ok {
		return k, nil
	}
	check, err := st.KeyCheck(ctx)
	if err != nil {
		return vault.Key{}, fmt.Errorf("vault: read key check: %w", err)
	}
	if err := finishRotation(dataDir, check); err != nil {
		return vault.Key{}, err
	}
	keyPath := filepath.Join(dataDir, vault.KeyFileName)
	k, err = vault.LoadKeyFile(dataDir)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return vault.Key{}, err
	}
	entries, err := st.ListEntries(ctx, "")
	if err != nil {
		return vault.Key{}, fmt.Errorf("vault: list entries: %w", err)
	}
	if len(entries) > 0 || check != nil {
		return vault.Key{}, fmt.Errorf("vault: the key file %s is missing but the vault was sealed with a key "+
			"(%d entries): restore the file (mode 0600) from your backup, or set %s to the key; "+
			"do not create a new key, the stored credentials cannot be read without the old one",
			keyPath, len(entries), vault.EnvKey)
	}
	k, _, err = vault.LoadOrCreateKeyFile(dataDir)
	return k, err
}

// finishRotation completes or discards a key rotation that stopped before
// its last step. vault.key.new is written before the re-sealing transaction
// and renamed over vault.key after it, so: if vault.key still matches the
// stored key check, the transaction never committed and the new file is
// discarded; if only vault.key.new matches, the transaction committed and
// the rename is finished.
func finishRotation(dataDir string, check []byte) error {
	newPath := filepath.Join(dataDir, newKeyFileName)
	if _, err := os.Lstat(newPath); errors.Is(err, fs.ErrNotExist) || check == nil {
		return nil
	}
	if k, err := vault.LoadKeyFile(dataDir); err == nil && vault.VerifyKeyCheck(k, check) == nil {
		if err := os.Remove(newPath); err != nil {
			return fmt.Errorf("vault: remove the unused %s of an interrupted rotation: %w", newPath, err)
		}
		return nil
	}
	nk, err := loadKeyFileNamed(dataDir, newKeyFileName)
	if err != nil {
		return err
	}
	if vault.VerifyKeyCheck(nk, check) != nil {
		return nil // neither matches: reported as a wrong key by the caller
	}
	if err := os.Rename(newPath, filepath.Join(dataDir, vault.KeyFileName)); err != nil {
		return fmt.Errorf("vault: finish an interrupted key rotation: %w", err)
	}
	syncDir(dataDir)
	return nil
}

// loadKeyFileNamed loads a key file of another name than vault.key, with
// the same permission checks, through a temporary directory entry.
func loadKeyFileNamed(dir, name string) (vault.Key, error) {
	path := filepath.Join(dir, name)
	fi, err := os.Lstat(path)
	if err != nil {
		return vault.Key{}, fmt.Errorf("vault: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return vault.Key{}, fmt.Errorf("vault: key file %s is not a regular file: %w", path, vault.ErrInvalidKey)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return vault.Key{}, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", vault.ErrKeyFilePermissions, path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return vault.Key{}, fmt.Errorf("vault: key file: %w", err)
	}
	k, err := vault.ParseKey(string(data))
	clear(data)
	if err != nil {
		return vault.Key{}, fmt.Errorf("vault: key file %s: %w", path, err)
	}
	return k, nil
}

// writeKeyFile writes k to a new file at path with mode 0600, synced. It
// refuses to replace an existing file.
func writeKeyFile(path string, k vault.Key) error {
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

// openVaultAt opens the vault of the data directory over db.
func openVaultAt(ctx context.Context, getenv func(string) string, dataDir string, db *store.DB) (*vault.Vault, error) {
	st := vaultStorage{db}
	k, err := openVaultKey(ctx, getenv, dataDir, st)
	if err != nil {
		return nil, err
	}
	v, err := vault.New(ctx, k, st)
	if errors.Is(err, vault.ErrWrongKey) {
		return nil, fmt.Errorf("wrong vault key: the database in %s was sealed with another master key. "+
			"Set %s to the key it was created with, or restore %s from your backup (mode 0600). "+
			"Never create a new key for a vault that holds entries: they cannot be read without the old one (%w)",
			dataDir, vault.EnvKey, filepath.Join(dataDir, vault.KeyFileName), err)
	}
	return v, err
}

// openVaultService opens the vault and builds the services the gateway
// uses on it.
func openVaultService(ctx context.Context, e env, dataDir string, db *store.DB, log zerolog.Logger) (*vaultService, error) {
	v, err := openVaultAt(ctx, e.getenv, dataDir, db)
	if err != nil {
		return nil, err
	}
	return newVaultService(v, db, log), nil
}

// vaultStorage is the store glue: vault.Storage on a store.DB.
type vaultStorage struct{ db *store.DB }

var _ vault.Storage = vaultStorage{}

func toStoreEntry(s vault.SealedEntry) (store.VaultEntry, error) {
	inj, err := json.Marshal(s.Injection)
	if err != nil {
		return store.VaultEntry{}, err
	}
	return store.VaultEntry{
		User: s.User, Name: s.Name, Version: s.Version, Hosts: s.Hosts, Injection: string(inj),
		KeyID: s.KeyID, Salt: s.Salt, Nonce: s.Nonce, Ciphertext: s.Ciphertext, CreatedAt: s.CreatedAt,
	}, nil
}

func parseStoredInjection(s string) (vault.Injection, error) {
	var in vault.Injection
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return vault.Injection{}, err
	}
	return in, nil
}

func fromStoreEntry(e store.VaultEntry) (vault.SealedEntry, error) {
	in, err := parseStoredInjection(e.Injection)
	if err != nil {
		// An unreadable rule cannot authenticate: fail closed as tampered.
		return vault.SealedEntry{}, fmt.Errorf("entry %q of %s: injection rule: %w", e.Name, e.User, vault.ErrTampered)
	}
	return vault.SealedEntry{
		Version: e.Version, User: e.User, Name: e.Name, Hosts: e.Hosts, Injection: in,
		KeyID: e.KeyID, Salt: e.Salt, Nonce: e.Nonce, Ciphertext: e.Ciphertext, CreatedAt: e.CreatedAt,
	}, nil
}

func (s vaultStorage) PutEntry(ctx context.Context, e vault.SealedEntry) error {
	se, err := toStoreEntry(e)
	if err != nil {
		return err
	}
	return s.db.PutVaultEntry(ctx, se)
}

func (s vaultStorage) GetEntry(ctx context.Context, user, name string) (vault.SealedEntry, error) {
	e, err := s.db.GetVaultEntry(ctx, user, name)
	if errors.Is(err, store.ErrNotFound) {
		return vault.SealedEntry{}, fmt.Errorf("%q: %w", name, vault.ErrNotFound)
	}
	if err != nil {
		return vault.SealedEntry{}, err
	}
	return fromStoreEntry(e)
}

func (s vaultStorage) ListEntries(ctx context.Context, user string) ([]vault.SealedEntry, error) {
	es, err := s.db.ListVaultEntries(ctx, user)
	if err != nil {
		return nil, err
	}
	out := make([]vault.SealedEntry, 0, len(es))
	for _, e := range es {
		se, err := fromStoreEntry(e)
		if err != nil {
			// Keep it in the list with an empty rule: Open fails on it (the
			// rule is bound), so it is reported, never used.
			se = vault.SealedEntry{Version: e.Version, User: e.User, Name: e.Name, Hosts: e.Hosts,
				KeyID: e.KeyID, Salt: e.Salt, Nonce: e.Nonce, Ciphertext: e.Ciphertext, CreatedAt: e.CreatedAt}
		}
		out = append(out, se)
	}
	return out, nil
}

func (s vaultStorage) DeleteEntry(ctx context.Context, user, name string) (bool, error) {
	return s.db.DeleteVaultEntry(ctx, user, name)
}

func (s vaultStorage) ReplaceAll(ctx context.Context, entries []vault.SealedEntry, keyCheck []byte) error {
	out := make([]store.VaultEntry, 0, len(entries))
	for _, e := range entries {
		se, err := toStoreEntry(e)
		if err != nil {
			return err
		}
		out = append(out, se)
	}
	return s.db.ReplaceVaultEntries(ctx, out, keyCheck)
}

func (s vaultStorage) KeyCheck(ctx context.Context) ([]byte, error) { return s.db.VaultKeyCheck(ctx) }

func (s vaultStorage) SetKeyCheck(ctx context.Context, check []byte) error {
	return s.db.SetVaultKeyCheck(ctx, check)
}

func (s vaultStorage) AppendAudit(ctx context.Context, ev vault.AuditEvent) error {
	return s.db.AppendVaultAudit(ctx, store.VaultAudit{
		At: ev.Time, User: ev.User, Name: ev.Name, Host: ev.Host, Tool: ev.Tool, Allowed: ev.Allowed, Reason: string(ev.Reason),
	})
}

func (s vaultStorage) Touch(ctx context.Context, user, name string, at time.Time) error {
	return s.db.TouchVaultEntry(ctx, user, name, at)
}

// vaultService is the vault as the gateway uses it: the runtime's Redactor
// and Secrets, the sandbox's Secrets, and (through vaultCredentials and
// vaultChecker) the egress broker's credential source and leak checker.
type vaultService struct {
	v        *vault.Vault
	db       *store.DB
	log      zerolog.Logger
	now      func() time.Time
	patterns *leak.Detector

	mu      sync.Mutex
	users   map[string]cachedDetector   // guarded by mu; user → detector of their values
	inbound map[[32]byte]*leak.Detector // guarded by mu; injected values → detector
}

type cachedDetector struct {
	d  *leak.Detector
	at time.Time
}

func newVaultService(v *vault.Vault, db *store.DB, log zerolog.Logger) *vaultService {
	return &vaultService{
		v: v, db: db, log: log, now: time.Now, patterns: leak.NewPatterns(),
		users: map[string]cachedDetector{}, inbound: map[[32]byte]*leak.Detector{},
	}
}

var (
	_ agent.Redactor  = (*vaultService)(nil)
	_ agent.Secrets   = (*vaultService)(nil)
	_ sandbox.Secrets = (*vaultService)(nil)
)

// detector returns user's leak detector: their vault values and every
// encoding of them, plus the well-known token formats.
func (s *vaultService) detector(ctx context.Context, user string) *leak.Detector {
	now := s.now()
	s.mu.Lock()
	c, ok := s.users[user]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < detectorTTL {
		return c.d
	}
	s.v.Forget(user)
	vals, err := s.v.Values(ctx, user)
	if err != nil {
		// Redact what does open; the rest cannot be injected either.
		s.log.Error().Err(err).Str("principal", user).Msg("vault: some entries do not open; they are not used")
	}
	d := s.patterns
	if len(vals) > 0 {
		d = leak.New(vals)
	}
	s.mu.Lock()
	if len(s.users) >= maxCachedDetectors {
		clear(s.users)
	}
	s.users[user] = cachedDetector{d: d, at: now}
	s.mu.Unlock()
	return d
}

// invalidate drops user's cached detector after their entries changed.
func (s *vaultService) invalidate(user string) {
	s.mu.Lock()
	delete(s.users, user)
	s.mu.Unlock()
	s.v.Forget(user)
}

// Redact implements agent.Redactor.
func (s *vaultService) Redact(ctx context.Context, p agent.Principal, text string) (string, int) {
	out, fs := s.detector(ctx, p.String()).Redact(text)
	return out, len(fs)
}

// ListSecrets implements agent.Secrets: names, hosts and rules, never values.
func (s *vaultService) ListSecrets(ctx context.Context, p agent.Principal) ([]agent.SecretInfo, error) {
	es, err := s.db.ListVaultEntries(ctx, p.String())
	if err != nil {
		return nil, fmt.Errorf("vault: list: %w", err)
	}
	out := make([]agent.SecretInfo, 0, len(es))
	for _, e := range es {
		out = append(out, agent.SecretInfo{Name: e.Name, Hosts: e.Hosts, Injection: describeStoredInjection(e.Injection), CreatedAt: e.CreatedAt, LastUsed: e.LastUsed})
	}
	return out, nil
}

// AddSecret implements agent.Secrets. Its errors name fields, never the value.
func (s *vaultService) AddSecret(ctx context.Context, p agent.Principal, ns agent.NewSecret) error {
	in, err := parseInjection(ns.Injection)
	if err != nil {
		return err
	}
	e := vault.Entry{User: p.String(), Name: ns.Name, Value: vault.NewSecret(ns.Value), Hosts: ns.Hosts, Injection: in}
	defer e.Value.Wipe()
	if err := s.v.Set(ctx, e); err != nil {
		return err
	}
	s.invalidate(p.String())
	return nil
}

// RemoveSecret implements agent.Secrets.
func (s *vaultService) RemoveSecret(ctx context.Context, p agent.Principal, name string) error {
	ok, err := s.v.Remove(ctx, p.String(), name)
	s.invalidate(p.String())
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no secret named %q", name)
	}
	return nil
}

// Has implements sandbox.Secrets.
func (s *vaultService) Has(ctx context.Context, p agent.Principal, name string) bool {
	return s.v.Has(ctx, p.String(), name)
}

// inboundDetector returns a detector for the values injected into one
// request, cached by a digest of the values.
func (s *vaultService) inboundDetector(secrets [][]byte) *leak.Detector {
	h := sha256.New()
	var n [8]byte
	for _, b := range secrets {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var key [32]byte
	h.Sum(key[:0])
	s.mu.Lock()
	d, ok := s.inbound[key]
	s.mu.Unlock()
	if ok {
		return d
	}
	d = leak.New(secrets)
	s.mu.Lock()
	if len(s.inbound) >= maxCachedDetectors {
		clear(s.inbound)
	}
	s.inbound[key] = d
	s.mu.Unlock()
	return d
}

// vaultCredentials is the egress broker's CredentialSource.
type vaultCredentials struct{ s *vaultService }

// Credential returns user's entry name when it is bound to host. The broker
// asks only over https, after checking the tool's grant. Every call is
// audited by the vault.
func (c vaultCredentials) Credential(ctx context.Context, caller egress.Caller, name, host string) (egress.Credential, error) {
	e, err := c.s.v.Credential(ctx, caller.Principal.String(), name, host, "https", caller.Tool)
	switch {
	case err == nil:
		return e, nil
	case errors.Is(err, vault.ErrNotFound), errors.Is(err, vault.ErrHostNotBound), errors.Is(err, vault.ErrInvalidHost):
		return nil, fmt.Errorf("%w: %w", egress.ErrNoCredential, err)
	default:
		return nil, err
	}
}

// vaultChecker is the egress broker's LeakChecker.
type vaultChecker struct{ s *vaultService }

// CheckOutbound refuses a request whose URL (raw and decoded), headers or
// body carry one of the user's secret values (in any encoding the detector
// knows) or a well-known token format: tools name credentials, they never
// send them. The refusal names the kind of finding, never the value, and is
// audited.
func (c vaultChecker) CheckOutbound(caller egress.Caller, r egress.Request) error {
	ctx := context.Background()
	user := caller.Principal
	d := c.s.detector(ctx, user.String())
	parts := []string{r.URL}
	if u, err := url.PathUnescape(r.URL); err == nil && u != r.URL {
		parts = append(parts, u)
	}
	if u, err := url.QueryUnescape(r.URL); err == nil && u != r.URL {
		parts = append(parts, u)
	}
	for k, v := range r.Headers {
		parts = append(parts, k+": "+v)
	}
	parts = append(parts, r.Body)
	for _, p := range parts {
		fs := d.Scan([]byte(p))
		if len(fs) == 0 {
			continue
		}
		host := ""
		if u, err := url.Parse(r.URL); err == nil {
			host = u.Hostname()
		}
		c.s.v.Audit(ctx, vault.AuditEvent{User: user.String(), Name: r.Credential, Host: host, Tool: caller.Tool, Reason: vault.ReasonLeakDetected})
		c.s.log.Warn().Str("principal", user.String()).Str("tool", caller.Tool).Str("host", host).Str("kind", string(fs[0].Kind)).Msg("outbound request carried a secret; refused")
		return &egress.DeniedError{Host: host, Reason: fmt.Sprintf(
			"the request carries a secret (%s); tools may not send secrets themselves, only name a stored credential for the broker to inject", fs[0].Kind)}
	}
	return nil
}

// RedactInbound removes the injected values and all their encodings (and
// well-known token formats) from a response before the guest sees it.
func (c vaultChecker) RedactInbound(_ agent.Principal, secrets [][]byte, s string) string {
	if len(secrets) == 0 {
		return s
	}
	out, _ := c.s.inboundDetector(secrets).Redact(s)
	return out
}

// parseInjection reads the Injection forms of agent.NewSecret: "" or
// "bearer", "header:NAME", "header:NAME:PREFIX", "query:NAME",
// "basic:USERNAME". The result is validated.
func parseInjection(s string) (vault.Injection, error) {
	kind, rest, _ := strings.Cut(s, ":")
	var in vault.Injection
	switch kind {
	case "", "bearer":
		if rest != "" {
			return in, fmt.Errorf("injection %q: bearer takes nothing after it", s)
		}
		in.Kind = vault.InjectBearer
	case "header":
		name, prefix, _ := strings.Cut(rest, ":")
		in = vault.Injection{Kind: vault.InjectHeader, Name: name, Prefix: prefix}
	case "query":
		in = vault.Injection{Kind: vault.InjectQuery, Name: rest}
	case "basic":
		in = vault.Injection{Kind: vault.InjectBasic, Username: rest}
	default:
		return in, fmt.Errorf("injection %q: want bearer, header:NAME[:PREFIX], query:NAME or basic:USERNAME", s)
	}
	return in.Normalize()
}

// describeInjection says how a value is sent, for listings.
func describeInjection(in vault.Injection) string {
	switch in.Kind {
	case vault.InjectHeader:
		if in.Prefix != "" {
			return fmt.Sprintf("header %s (prefix %q)", in.Name, in.Prefix)
		}
		return "header " + in.Name
	case vault.InjectQuery:
		return "query " + in.Name
	case vault.InjectBasic:
		return "basic " + in.Username
	default:
		return string(in.Kind)
	}
}

func describeStoredInjection(s string) string {
	in, err := parseStoredInjection(s)
	if err != nil {
		return "(unreadable)"
	}
	return describeInjection(in)
}

// hostsFlag collects repeated --host flags.
type hostsFlag []string

func (h *hostsFlag) String() string     { return strings.Join(*h, ",") }
func (h *hostsFlag) Set(v string) error { *h = append(*h, v); return nil }

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
every command takes --config FILE; user IDs are platform:workspace:user (slack:T123:U456, discord::1234, terminal::local);
a credential is sent only over https to a host and port it is bound to: --host api.example.com means port 443,
--host api.example.com:8443 port 8443`

// vaultSetHelp is what `talon vault set --help` says before the flags.
const vaultSetHelp = `Stores a credential for one user, sealed in the vault. The value is read without echo from the
terminal, or from stdin (one trailing newline removed); never from the command line.
It is sent only over https, only to the hosts and ports it is bound to: --host api.example.com
means port 443, --host api.example.com:8443 port 8443 (and not 443); *.example.com means
any subdomain of example.com on port 443.

`

// cmdVault runs the vault subcommands. set, list, rm and audit may run
// beside a running gateway (SQLite WAL); rotate-key takes the data
// directory lock, so the gateway must be stopped.
func cmdVault(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"vault: missing subcommand\n" + vaultUsage}
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("vault "+sub, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	configPath := fs.String("config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	var (
		user                         = fs.String("user", "", "the owner, platform:workspace:user")
		hosts                        hostsFlag
		bearer                       bool
		header, prefix, query, basic string
		limit                        int
	)
	switch sub {
	case "set":
		fs.Var(&hosts, "host", "a host the credential may be sent to, over https: HOST means port 443 only, HOST:PORT that port only\n"+
			"(repeatable; *.example.com for its subdomains, on port 443)")
		fs.BoolVar(&bearer, "bearer", false, "send as Authorization: Bearer VALUE (the default)")
		fs.StringVar(&header, "header", "", "send in this header")
		fs.StringVar(&prefix, "prefix", "", "with --header: text before the value")
		fs.StringVar(&query, "query", "", "send as this query parameter")
		fs.StringVar(&basic, "basic", "", "send as HTTP basic authentication with this user name")
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
	db, err := store.Open(ctx, cfg.DBPath())
	if err != nil {
		return err
	}
	defer db.Close()

	switch sub {
	case "set":
		in, err := injectionFromFlags(bearer, header, prefix, query, basic)
		if err != nil {
			return err
		}
		return vaultSet(ctx, e, cfg.DataDir, db, *user, pos[0], hosts, in)
	case "list":
		return vaultList(ctx, e, db, *user)
	case "rm":
		ok, err := db.DeleteVaultEntry(ctx, *user, pos[0])
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("vault: %s has no entry %q", *user, pos[0])
		}
		fmt.Fprintf(e.stdout, "removed %q of %s\n", pos[0], *user)
		return nil
	case "audit":
		return vaultAudit(ctx, e, db, limit)
	default:
		return vaultRotate(ctx, e, cfg.DataDir, db)
	}
}

func injectionFromFlags(bearer bool, header, prefix, query, basic string) (vault.Injection, error) {
	n := 0
	for _, set := range []bool{bearer, header != "", query != "", basic != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return vault.Injection{}, &usageError{"vault set: give at most one of --bearer, --header, --query, --basic"}
	}
	if prefix != "" && header == "" {
		return vault.Injection{}, &usageError{"vault set: --prefix goes with --header"}
	}
	var in vault.Injection
	switch {
	case header != "":
		in = vault.Injection{Kind: vault.InjectHeader, Name: header, Prefix: prefix}
	case query != "":
		in = vault.Injection{Kind: vault.InjectQuery, Name: query}
	case basic != "":
		in = vault.Injection{Kind: vault.InjectBasic, Username: basic}
	default:
		in = vault.Injection{Kind: vault.InjectBearer}
	}
	return in.Normalize()
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

func vaultSet(ctx context.Context, e env, dataDir string, db *store.DB, user, name string, hosts []string, in vault.Injection) error {
	v, err := openVaultAt(ctx, e.getenv, dataDir, db)
	if err != nil {
		return err
	}
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

func vaultList(ctx context.Context, e env, db *store.DB, user string) error {
	es, err := db.ListVaultEntries(ctx, user)
	if err != nil {
		return err
	}
	if len(es) == 0 {
		fmt.Fprintln(e.stdout, "no entries")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tNAME\tHOSTS\tINJECTION\tCREATED\tLAST USED")
	for _, x := range es {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.User, x.Name, strings.Join(x.Hosts, ","), describeStoredInjection(x.Injection), fmtTime(x.CreatedAt), fmtTime(x.LastUsed))
	}
	return tw.Flush()
}

func vaultAudit(ctx context.Context, e env, db *store.DB, limit int) error {
	if limit < 1 || limit > 10000 {
		return &usageError{"vault audit: --limit must be 1 to 10000"}
	}
	evs, err := db.RecentVaultAudit(ctx, limit)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.At.Local().Format(time.DateTime), a.User, a.Name, a.Host, tool, res, a.Reason)
	}
	return tw.Flush()
}

// vaultRotate re-seals every entry under a new master key in one
// transaction. With a key file, the new key is written to vault.key.new
// first and renamed over vault.key after the commit; a crash at any point
// loses nothing (openVaultKey finishes or discards the rotation). With
// TALON_VAULT_KEY, the new key comes from TALON_VAULT_NEW_KEY.
func vaultRotate(ctx context.Context, e env, dataDir string, db *store.DB) error {
	v, err := openVaultAt(ctx, e.getenv, dataDir, db)
	if err != nil {
		return err
	}
	if _, fromEnv, _ := vault.KeyFromEnv(e.getenv); fromEnv {
		raw := e.getenv(envNewKey)
		if raw == "" {
			return fmt.Errorf("vault rotate-key: the key comes from %s, so set %s to the new key "+
				"(generate one with: head -c 32 /dev/urandom | base64)", vault.EnvKey, envNewKey)
		}
		nk, err := vault.ParseKey(raw)
		if err != nil {
			return fmt.Errorf("vault rotate-key: %s: %w", envNewKey, err)
		}
		n, err := v.Rotate(ctx, nk)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "re-sealed %d entries under the new key. Now set %s to the value of %s and unset %s before starting talon.\n",
			n, vault.EnvKey, envNewKey, envNewKey)
		return nil
	}
	nk, err := vault.GenerateKey()
	if err != nil {
		return err
	}
	newPath := filepath.Join(dataDir, newKeyFileName)
	_ = os.Remove(newPath) // a leftover of a rotation that never committed (the vault opened with vault.key)
	if err := writeKeyFile(newPath, nk); err != nil {
		return err
	}
	syncDir(dataDir)
	n, err := v.Rotate(ctx, nk)
	if err != nil {
		_ = os.Remove(newPath)
		return err
	}
	keyPath := filepath.Join(dataDir, vault.KeyFileName)
	if err := os.Rename(newPath, keyPath); err != nil {
		return fmt.Errorf("vault rotate-key: the entries are sealed under %s but it could not replace %s (%w); "+
			"talon finishes this at the next start, do not delete either file", newPath, keyPath, err)
	}
	syncDir(dataDir)
	fmt.Fprintf(e.stdout, "re-sealed %d entries under a new key in %s; back it up, the old key opens nothing now\n", n, keyPath)
	return nil
}
