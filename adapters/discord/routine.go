package discord

import (
	"context"
	"errors"
	"fmt"

	"github.com/bwmarrin/discordgo"
)

// ChannelReplyTo is the ReplyTo of a post at the top level of channel.
func ChannelReplyTo(channel string) (string, error) {
	if !isSnowflake(channel) {
		return "", fmt.Errorf("discord: %q is not a channel id", channel)
	}
	return replyTo{channel: channel}.String(), nil
}

// RoutineTarget returns where a routine of user posts: channel (at its top
// level), or, when dm, user's direct messages with the bot. It returns the
// channel id and the ReplyTo of a post there. It fails, saying why, when
// the configuration does not let user talk to the bot there.
func (a *Adapter) RoutineTarget(ctx context.Context, user, channel string, dm bool) (string, string, error) {
	s, err := a.ready(ctx)
	if err != nil {
		return "", "", err
	}
	p := place{channel: channel, user: user}
	if dm {
		ch, err := s.UserChannelCreate(user, discordgo.WithContext(ctx))
		if err != nil {
			return "", "", fmt.Errorf("discord: open a direct message with %s: %w", user, err)
		}
		p.channel = ch.ID
	} else {
		ch, err := s.State.Channel(channel)
		if err != nil {
			ch, err = s.Channel(channel, discordgo.WithContext(ctx))
		}
		if err != nil {
			return "", "", fmt.Errorf("discord: channel %s: %w", channel, err)
		}
		p.guild = ch.GuildID
		if ch.IsThread() {
			p.parent = ch.ParentID
		}
		if p.guild != "" && len(a.cfg.AllowedRoles) > 0 {
			m, err := s.GuildMember(p.guild, user, discordgo.WithContext(ctx))
			if err != nil {
				return "", "", fmt.Errorf("discord: member %s: %w", user, err)
			}
			p.roles = m.Roles
		}
	}
	if reason := a.cfg.refusal(p); reason != "" {
		return "", "", errors.New(reason)
	}
	rt, err := ChannelReplyTo(p.channel)
	return p.channel, rt, err
}
