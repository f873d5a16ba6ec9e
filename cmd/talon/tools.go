package main

import "context"

// openTools builds the sandbox and egress broker and sets a.rt.Tools.
func (a *app) openTools(ctx context.Context) error {
	return nil
}

// cmdTool runs the tool subcommands.
func cmdTool(ctx context.Context, e env, args []string) error {
	return &usageError{"tool: not implemented yet"}
}
