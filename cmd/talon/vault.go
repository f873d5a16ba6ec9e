package main

import (
	"context"

	"github.com/talonhq/talon/sandbox"
	"github.com/talonhq/talon/sandbox/egress"
)

// openVault opens the credential vault and sets a.redactor and a.secrets.
func (a *app) openVault(ctx context.Context) error {
	return nil
}

// egressCredentials is what the egress broker injects credentials from;
// nil when no vault is open.
func (a *app) egressCredentials() egress.CredentialSource { return nil }

// egressChecker scans tools' outbound requests and redacts responses; nil
// when no vault is open.
func (a *app) egressChecker() egress.LeakChecker { return nil }

// toolSecrets answers the sandbox's has_secret; nil when no vault is open.
func (a *app) toolSecrets() sandbox.Secrets { return nil }

// cmdVault runs the vault subcommands.
func cmdVault(ctx context.Context, e env, args []string) error {
	return &usageError{"vault: not implemented yet"}
}
