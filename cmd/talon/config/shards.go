package config

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// ShardsAuto as DiscordShards asks Discord for the recommended count.
const ShardsAuto DiscordShards = -1

// MaxDiscordShards bounds discord.shards.
const MaxDiscordShards = 4096

// DiscordShards is discord.shards: how many shards the Discord gateway is
// split into, or ShardsAuto ("auto").
type DiscordShards int

// UnmarshalYAML reads "auto" or a number.
func (d *DiscordShards) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid shard count: expected auto or a number")
	}
	if n.Value == "auto" {
		*d = ShardsAuto
		return nil
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil {
		return fmt.Errorf("invalid shard count %q: expected auto or a number", n.Value)
	}
	*d = DiscordShards(v)
	return nil
}

// String is "auto" or the number.
func (d DiscordShards) String() string {
	if d == ShardsAuto {
		return "auto"
	}
	return strconv.Itoa(int(d))
}

// MarshalText formats d as String does.
func (d DiscordShards) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalYAML formats d as String does.
func (d DiscordShards) MarshalYAML() (any, error) { return d.String(), nil }
