package discord

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
// channel id and the ReplyTo of a post there, whose approval prompts go to
// user's direct messages (in the channel, buttons for user alone, when
// the DM cannot be opened). It fails, saying why, when the configuration
// does not let user talk to the bot there.
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
	if !isSnowflake(p.channel) {
		return "", "", fmt.Errorf("discord: %q is not a channel id", p.channel)
	}
	to := replyTo{channel: p.channel}
	if !dm {
		if ch, err := s.UserChannelCreate(user, discordgo.WithContext(ctx)); err == nil && isSnowflake(ch.ID) {
			to.approvals = ch.ID
		} else {
			a.Log.Warn().Err(err).Msg("discord: no DM with a routine's owner; its approval prompts go to its channel")
		}
	}
	return p.channel, to.String(), nil
}

// RoutineCheck says why a routine of user may no longer post in channel,
// before a run: the channel is gone or the bot cannot see it any more (it
// was deleted, or the bot was removed from it or from its server), the
// owner is no longer a member of its server, or the configuration no
// longer lets user talk to the bot there. It returns nil when the routine
// may post, and also when Discord could not be asked (the connection is
// down, a server error): a run is not paused for a passing failure, and
// the platform's answer to its reply decides then.
func (a *Adapter) RoutineCheck(ctx context.Context, user, channel string) error {
	s, err := a.ready(ctx)
	if err != nil {
		return nil
	}
	return a.routineCheck(ctx, s, a.cfg, user, channel)
}

// RoutineCheckREST is RoutineCheck for a process that does not Run the
// adapter (talon routine resume): it asks Discord's REST API with
// Config.Token, and fails when the configuration is invalid.
func (a *Adapter) RoutineCheckREST(ctx context.Context, user, channel string) error {
	cfg, err := a.Config.withDefaults()
	if err != nil {
		return fmt.Errorf("discord: config: %w", err)
	}
	s, err := a.newSession(cfg)
	if err != nil {
		return err
	}
	return a.routineCheck(ctx, s, cfg, user, channel)
}

func (a *Adapter) routineCheck(ctx context.Context, s *discordgo.Session, cfg Config, user, channel string) error {
	ch, err := s.Channel(channel, discordgo.WithContext(ctx))
	switch status := restStatus(err); {
	case status == 403 || status == 404:
		return errors.New("its channel is gone, or the bot was removed from it")
	case err != nil:
		a.Log.Warn().Err(err).Str("channel", channel).Msg("discord: a routine's channel could not be checked; it runs")
		return nil
	}
	p := place{channel: channel, user: user, guild: ch.GuildID}
	if ch.IsThread() {
		p.parent = ch.ParentID
	}
	if p.guild != "" {
		m, err := s.GuildMember(p.guild, user, discordgo.WithContext(ctx))
		switch status := restStatus(err); {
		case status == 404:
			return errors.New("its owner is no longer a member of the server")
		case err != nil:
			a.Log.Warn().Err(err).Str("channel", channel).Msg("discord: a routine's owner could not be checked; it runs")
			return nil
		}
		p.roles = m.Roles
	}
	if reason := cfg.refusal(p); reason != "" {
		return errors.New("the configuration no longer lets its owner use it there (" + strings.TrimSuffix(reason, ".") + ")")
	}
	return nil
}

// restStatus is the HTTP status of a REST error, 0 for none or another
// error.
func restStatus(err error) int {
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return 0
}
