package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

const userUsage = `usage:
  talon user deny PRINCIPAL [--config FILE]    refuse PRINCIPAL's messages (no model call), at once, also in a running gateway
  talon user allow PRINCIPAL [--config FILE]   serve PRINCIPAL again
  talon user list [--config FILE]              the denied principals

PRINCIPAL is platform:workspace:user, e.g. slack:T012:U034, discord::123 or
terminal::local. Who may talk to Talon at all stays in the configuration
(slack.allowed_users, discord.allowed_users, ...); this list turns away
people the configuration lets in. Each change is in the console's audit log.
`

// cmdUser denies, allows and lists principals through the store's
// SetDenied, the service the console's Users page uses too.
func cmdUser(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return &usageError{"user: deny, allow or list?\n" + userUsage}
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "deny", "allow", "list":
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, userUsage)
		return nil
	default:
		return &usageError{fmt.Sprintf("user: unknown subcommand %q\n%s", sub, userUsage)}
	}
	fs := flag.NewFlagSet("user "+sub, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	configPath := fs.String("config", "", "configuration file (default $TALON_CONFIG, or built-in defaults)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), userUsage); fs.PrintDefaults() }
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		return err
	}
	want := 1
	if sub == "list" {
		want = 0
	}
	if len(pos) != want {
		return &usageError{fmt.Sprintf("user %s: want %d argument(s), got %d\n%s", sub, want, len(pos), userUsage)}
	}
	var p agent.Principal
	if want == 1 {
		if p, err = agent.ParsePrincipal(pos[0]); err != nil {
			return &usageError{"user " + sub + ": " + err.Error()}
		}
		if g, ok := store.GlobalPrincipal(p); ok {
			fmt.Fprintf(e.stderr, "user: %s is %s: Discord and Slack Enterprise Grid user ids are the same in every workspace\n", p, g)
			p = g
		}
	}
	cfg, err := loadConfig(e, *configPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory %s: %w", cfg.DataDir, err)
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if sub == "list" {
		ds, err := db.DeniedPrincipals(ctx)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			fmt.Fprintln(e.stdout, "No one is denied.")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PRINCIPAL\tDENIED\tBY")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Principal, d.At.UTC().Format(time.DateTime), d.By)
		}
		return tw.Flush()
	}
	changed, err := db.SetDenied(ctx, p, sub == "deny", store.ConsoleAction{Actor: "cli"})
	if err != nil {
		return err
	}
	switch {
	case sub == "deny" && changed:
		fmt.Fprintf(e.stdout, "Denied %s: their messages are refused from now on (talon user allow %s undoes it).\n", p, p)
	case sub == "deny":
		fmt.Fprintf(e.stdout, "%s was already denied.\n", p)
	case changed:
		fmt.Fprintf(e.stdout, "Allowed %s again.\n", p)
	default:
		fmt.Fprintf(e.stdout, "%s was not denied.\n", p)
	}
	return nil
}
