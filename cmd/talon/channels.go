package main

import (
	"context"
	"net/http"
)

// channel is a configured platform channel, started by cmdRun.
type channel struct {
	name string
	// run serves until ctx ends.
	run func(ctx context.Context) error
	// mount, when set, adds the channel's HTTP endpoints to the gateway's
	// listener (Slack's Events API).
	mount func(mux *http.ServeMux)
}

// channels builds the configured Slack and Discord channels and registers
// them with the runtime. None configured means the terminal channel runs.
func (a *app) channels() ([]channel, error) {
	return nil, nil
}

// cmdDiscord runs the discord subcommands (invite-url).
func cmdDiscord(ctx context.Context, e env, args []string) error {
	return &usageError{"discord: not implemented yet"}
}
