package main

import "context"

// openVault opens the credential vault and sets a.redactor and a.secrets.
func (a *app) openVault(ctx context.Context) error {
	return nil
}

// cmdVault runs the vault subcommands.
func cmdVault(ctx context.Context, e env, args []string) error {
	return &usageError{"vault: not implemented yet"}
}
