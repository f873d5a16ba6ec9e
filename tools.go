//go:build tools

// This file pins dependencies that are not imported yet by any package, so
// that `go mod tidy` keeps them while the packages that use them are built.
package talon

import (
	_ "github.com/anthropics/anthropic-sdk-go"
	_ "github.com/bwmarrin/discordgo"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/rs/zerolog"
	_ "github.com/slack-go/slack"
	_ "github.com/tetratelabs/wazero"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/term"
	_ "modernc.org/sqlite"
)
