package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/talonhq/talon/cmd/talon/config"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/store/postgres"
	"github.com/talonhq/talon/vault"
)

const migrateStoreUsage = `Usage: talon migrate-store --from sqlite:PATH --to postgres[:URL] [--config FILE]

Copies a Talon SQLite database (stop the gateway first) into an empty
PostgreSQL database, in one transaction: every row with its id, vault
entries as the sealed bytes they are (the vault opens them there with the
same key: give it to every replica as TALON_VAULT_KEY). --to postgres
alone uses store.url of the configuration; --to postgres:URL or the
postgres:// URL alone names one, and a URL given here must not hold a
password (it would show in the process list): put it in PGPASSWORD or
~/.pgpass.
`

// cmdMigrateStore is talon migrate-store.
func cmdMigrateStore(ctx context.Context, e env, args []string) error {
	fs := flag.NewFlagSet("migrate-store", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	from := fs.String("from", "", "the SQLite database, sqlite:PATH")
	to := fs.String("to", "", "the PostgreSQL database: postgres:URL, the postgres:// URL alone, or postgres for store.url")
	configPath := fs.String("config", "", "configuration file (default $TALON_CONFIG), for --to postgres")
	fs.Usage = func() { fmt.Fprint(fs.Output(), migrateStoreUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{"migrate-store: unexpected argument " + fs.Arg(0) + "\n" + migrateStoreUsage}
	}
	path, ok := strings.CutPrefix(*from, "sqlite:")
	if !ok || path == "" {
		return &usageError{"migrate-store: --from must be sqlite:PATH, e.g. sqlite:./talon-data/talon.db\n" + migrateStoreUsage}
	}
	dbURL, err := migrateTarget(e, *to, *configPath)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("migrate-store: --from %s: %w", path, err)
	}

	// The gateway must not write while the copy reads: hold its lock.
	lock, err := lockDataDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("migrate-store: %w (stop talon run on this data directory first)", err)
	}
	defer lock.Close()
	// Opening the store brings an older file up to this version's schema.
	sdb, err := store.Open(ctx, path)
	if err != nil {
		return fmt.Errorf("migrate-store: %w", err)
	}
	if err := sdb.Close(); err != nil {
		return fmt.Errorf("migrate-store: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	raw, err := sql.Open("sqlite", "file:"+(&url.URL{Path: filepath.ToSlash(abs)}).EscapedPath()+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return fmt.Errorf("migrate-store: %w", err)
	}
	defer raw.Close()
	src, err := raw.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("migrate-store: %w", err)
	}
	defer src.Rollback() //nolint:errcheck // read-only

	pdb, err := postgres.Open(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("migrate-store: %w", err)
	}
	defer pdb.Close()
	got, err := pdb.Import(ctx, src)
	if err != nil {
		return fmt.Errorf("migrate-store: nothing was copied: %w", err)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TABLE\tROWS\t")
	var total int64
	for _, t := range got.Tables {
		fmt.Fprintf(tw, "%s\t%d\t\n", t, got.Rows[t])
		total += got.Rows[t]
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Copied %d rows from %s to PostgreSQL. Set store.driver: postgres and store.url to use it.\n", total, path)
	if got.Rows["vault_meta"] > 0 || got.Rows["vault_entries"] > 0 {
		// Each replica has a data directory of its own: none of them has
		// this one's key file.
		fmt.Fprintf(e.stdout, "The vault opens there with the key it was sealed with: set %s on every replica to it "+
			"(the contents of %s, unless %s was set for this gateway).\n",
			vault.EnvKey, filepath.Join(filepath.Dir(path), vault.KeyFileName), vault.EnvKey)
	}
	for t, n := range got.Skipped {
		fmt.Fprintf(e.stderr, "migrate-store: not copied: %s (%d rows): the PostgreSQL store does not keep it yet\n", t, n)
	}
	return nil
}

// migrateTarget returns the PostgreSQL URL of --to: postgres:URL, or
// store.url of the configuration for postgres alone.
func migrateTarget(e env, to, configPath string) (string, error) {
	if to == "postgres" {
		cfg, err := loadConfig(e, configPath)
		if err != nil {
			return "", err
		}
		if cfg.Store.Driver != config.StorePostgres || cfg.Store.URL == "" {
			return "", errors.New("migrate-store: --to postgres uses store.url of the configuration, and it has none (set store.driver: postgres and store.url, or give --to postgres:URL)")
		}
		return cfg.Store.URL.Reveal(), nil
	}
	u, ok := cutPostgres(to)
	if !ok || u == "" {
		return "", &usageError{"migrate-store: --to must be postgres:URL or the URL itself (postgres://user@host:5432/db), or postgres\n" + migrateStoreUsage}
	}
	u, err := postgresArg(u)
	if err != nil {
		return "", fmt.Errorf("migrate-store: --to: %w", err)
	}
	return u, nil
}

// cutPostgres returns the URL of a PostgreSQL store named on the command
// line: postgres:URL, or the URL itself (postgres://… or postgresql://…),
// as people type it.
func cutPostgres(arg string) (string, bool) {
	if strings.HasPrefix(arg, "postgres://") || strings.HasPrefix(arg, "postgresql://") {
		return arg, true
	}
	return strings.CutPrefix(arg, "postgres:")
}

// postgresArg checks a PostgreSQL URL given on the command line: a
// postgres:// URL without a password, which the process list would show
// to everyone on the machine.
func postgresArg(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "postgres" && pu.Scheme != "postgresql") {
		return "", &usageError{"want a postgres:// URL, e.g. postgres://talon@db:5432/talon (or postgres:postgres://…)"}
	}
	if _, has := pu.User.Password(); has || pu.Query().Has("password") {
		return "", errors.New("the URL holds a password, which the process list shows to everyone on this machine: put it in PGPASSWORD or ~/.pgpass (or, for migrate-store, use --to postgres with store.url from the environment)")
	}
	return u, nil
}
