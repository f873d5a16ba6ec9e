package discord

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Messages sent while the bot was not connected (a network outage, a
// session Discord invalidated, a stop of the gateway) are read back when
// the next session starts: the channels active shortly before the gap
// began are read from their newest message seen on, and what was missed
// is handled like a gateway event, except that messages older than
// Config.BackfillWindow are not answered. Dedupe (the inbound's unique
// key) drops what the gateway delivers too.
//
// The channels and the newest message seen in each (the cursors) live in
// memory and, with Adapter.Cursors, in the database: a cursor is saved at
// once for a channel new to the adapter and at most once per flushEvery
// after that, so the cost per message is a map update. A cursor that lags
// after a crash only makes the read back start earlier, and dedupe drops
// what was handled already.

// noteActivity records m as seen in its channel: the cursor moves forward
// and the channel counts as active now.
func (a *Adapter) noteActivity(m *discordgo.Message) {
	if a.cfg.BackfillWindow <= 0 {
		return
	}
	now := a.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	act := a.active[m.ChannelID]
	isNew := act == nil
	if isNew {
		if len(a.active) >= maxActive {
			a.evictActiveLocked()
		}
		act = &activity{guild: m.GuildID}
		a.active[m.ChannelID] = act
	}
	if snowflakeLess(act.lastID, m.ID) {
		act.lastID = m.ID
	}
	act.at = now
	if a.Cursors == nil {
		return
	}
	a.dirty[m.ChannelID] = *act
	if isNew {
		select {
		case a.flushReq <- struct{}{}:
		default:
		}
	}
}

// noteMissed records that m was not accepted: its channel counts as
// active now, so that the next read back (after a restart too) reads it,
// and its cursor stays before m (a channel new to the adapter starts just
// before m). The database keeps a cursor that moved past m already (a
// later message of the channel accepted before m was refused), since its
// cursors only move forward.
func (a *Adapter) noteMissed(m *discordgo.Message) {
	before := snowflakeBefore(m.ID)
	if a.cfg.BackfillWindow <= 0 || before == "" {
		return
	}
	now := a.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	act := a.active[m.ChannelID]
	isNew := act == nil
	if isNew {
		if len(a.active) >= maxActive {
			a.evictActiveLocked()
		}
		act = &activity{guild: m.GuildID, lastID: before}
		a.active[m.ChannelID] = act
	} else if !snowflakeLess(act.lastID, m.ID) {
		act.lastID = before
	}
	act.at = now
	if a.gapSince.IsZero() || now.Before(a.gapSince) {
		// A read back after the next reconnect reads it too.
		a.gapSince = now
	}
	if a.Cursors == nil {
		return
	}
	a.dirty[m.ChannelID] = *act
	if isNew {
		select {
		case a.flushReq <- struct{}{}:
		default:
		}
	}
}

// evictActiveLocked forgets the channel active longest ago. Its caller
// holds a.mu.
func (a *Adapter) evictActiveLocked() {
	oldest, at := "", time.Time{}
	for ch, x := range a.active {
		if oldest == "" || x.at.Before(at) {
			oldest, at = ch, x.at
		}
	}
	delete(a.active, oldest)
}

// loadCursors reads the channels remembered by a previous process. The
// gap began, at the latest, when the newest of them was active: it is read
// back at the first READY.
func (a *Adapter) loadCursors(ctx context.Context) {
	if a.Cursors == nil || a.cfg.BackfillWindow <= 0 {
		return
	}
	var newest time.Time
	n := 0
	err := a.Cursors.ChannelCursors(ctx, Platform, maxActive, func(workspace, channel, lastID string, at time.Time) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if _, ok := a.active[channel]; ok || !isSnowflake(channel) || !isSnowflake(lastID) {
			return
		}
		a.active[channel] = &activity{guild: workspace, lastID: lastID, at: at}
		n++
		if at.After(newest) {
			newest = at
		}
	})
	if err != nil {
		a.Log.Warn().Err(err).Msg("discord: could not read the channels to read back; messages sent while Talon was stopped are not answered")
		return
	}
	if n > 0 {
		a.mu.Lock()
		a.gapSince = newest
		a.mu.Unlock()
	}
	a.Log.Info().Int("channels", n).Msg("discord: channels to read back loaded")
}

// flushLoop saves the cursors that moved, until ctx ends, and once more
// then.
func (a *Adapter) flushLoop(ctx context.Context) {
	if a.Cursors == nil || a.cfg.BackfillWindow <= 0 {
		return
	}
	t := time.NewTicker(cmp.Or(a.flushEvery, flushEvery))
	defer t.Stop()
	var pruned time.Time
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			a.flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-a.flushReq:
		}
		a.flush(ctx)
		if now := a.Now(); now.Sub(pruned) >= time.Hour {
			pruned = now
			// A future gap begins now at the earliest: a channel quiet
			// for longer than the window will never be read back.
			if _, err := a.Cursors.ForgetChannelCursors(ctx, Platform, now.Add(-a.cfg.BackfillWindow), maxActive); err != nil {
				a.Log.Warn().Err(err).Msg("discord: could not prune the channels to read back")
			}
		}
	}
}

// flush saves the cursors that moved since the last flush.
func (a *Adapter) flush(ctx context.Context) {
	a.mu.Lock()
	batch := a.dirty
	if len(batch) == 0 {
		a.mu.Unlock()
		return
	}
	a.dirty = make(map[string]activity, len(batch))
	a.mu.Unlock()
	for ch, act := range batch {
		if err := a.Cursors.SaveChannelCursor(ctx, Platform, act.guild, ch, act.lastID, act.at); err != nil {
			a.Log.Warn().Err(err).Str("channel_id", ch).Msg("discord: could not save the channel to read back")
			a.mu.Lock()
			if _, newer := a.dirty[ch]; !newer {
				a.dirty[ch] = act // try again at the next flush
			}
			a.mu.Unlock()
		}
	}
}

// afterGap schedules a read back when a session starts after a gap.
func (a *Adapter) afterGap() {
	a.mu.Lock()
	gap := !a.gapSince.IsZero()
	a.mu.Unlock()
	if gap && a.cfg.BackfillWindow > 0 {
		select {
		case a.backfillReq <- struct{}{}:
		default:
		}
	}
}

// backfillLoop runs one read back at a time, each after the session's
// guilds have arrived (or guildWait).
func (a *Adapter) backfillLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.backfillReq:
		}
		a.mu.Lock()
		since, guilds := a.gapSince, a.guildsReady
		a.gapSince = time.Time{}
		a.mu.Unlock()
		if since.IsZero() {
			continue
		}
		t := time.NewTimer(guildWait)
		select {
		case <-guilds:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			return
		}
		a.backfill(ctx, since)
	}
}

// maxBackfillChannels bounds the channels read back after one gap.
const maxBackfillChannels = 200

// backfill reads back the channels active within the backfill window
// before gapStart for messages newer than the last one seen, and handles
// those younger than the window like gateway events.
func (a *Adapter) backfill(ctx context.Context, gapStart time.Time) {
	activeAfter := gapStart.Add(-a.cfg.BackfillWindow)
	type job struct {
		channel string
		act     activity
	}
	var jobs []job
	a.mu.Lock()
	for ch, act := range a.active {
		if !act.at.Before(activeAfter) && act.lastID != "" {
			jobs = append(jobs, job{ch, *act})
		}
	}
	a.mu.Unlock()
	// The most recently active first, as many as the bound allows.
	slices.SortFunc(jobs, func(x, y job) int { return y.act.at.Compare(x.act.at) })
	if len(jobs) > maxBackfillChannels {
		jobs = jobs[:maxBackfillChannels]
	}
	members := map[string]*discordgo.Member{} // author → member, asked once per read back
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		msgs, err := a.sess.ChannelMessages(j.channel, a.cfg.BackfillLimit, "", j.act.lastID, "", discordgo.WithContext(ctx))
		if err != nil {
			a.Log.Warn().Err(err).Str("channel_id", j.channel).Msg("discord: backfill failed")
			continue
		}
		tooOld := a.Now().Add(-a.cfg.BackfillWindow)
		handled, old := 0, 0
		// Newest first: handle them oldest first.
		for i := len(msgs) - 1; i >= 0; i-- {
			m := msgs[i]
			if m == nil || m.ID == "" {
				continue
			}
			m.ChannelID = j.channel
			if m.GuildID == "" {
				m.GuildID = j.act.guild
			}
			if messageTime(m).Before(tooOld) {
				old++
				a.noteActivity(m)
				continue
			}
			if m.Member == nil && m.GuildID != "" && len(a.cfg.AllowedRoles) > 0 && m.Author != nil {
				m.Member = a.memberOf(ctx, members, m.GuildID, m.Author.ID)
			}
			handled++
			a.handleMessage(ctx, m, true)
		}
		a.Log.Info().Str("channel_id", j.channel).Int("messages", handled).Int("too_old", old).Msg("discord: channel read back after a gap")
	}
}

// memberOf returns user's membership of guild, for the roles
// Config.AllowedRoles asks for: messages read back through REST carry no
// member, unlike the gateway's. seen keeps the answers of one read back
// (nil: not a member, or not known).
func (a *Adapter) memberOf(ctx context.Context, seen map[string]*discordgo.Member, guild, user string) *discordgo.Member {
	key := guild + "/" + user
	if m, ok := seen[key]; ok {
		return m
	}
	m, err := a.sess.GuildMember(guild, user, discordgo.WithContext(ctx))
	if err != nil {
		a.Log.Warn().Err(err).Str("user", user).Msg("discord: could not read a member's roles; their message read back is refused")
		m = nil
	}
	seen[key] = m
	return m
}

// messageTime is when m was sent: its timestamp, or the time in its id.
func messageTime(m *discordgo.Message) time.Time {
	if !m.Timestamp.IsZero() {
		return m.Timestamp
	}
	return snowflakeTime(m.ID)
}

// discordEpoch is the start of Discord's snowflake clock, in unix ms.
const discordEpoch = 1420070400000

// snowflakeTime is the creation time encoded in a Discord id.
func snowflakeTime(id string) time.Time {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(int64(n>>22) + discordEpoch)
}

// snowflakeBefore is the id just before id, or "" when id is not a
// snowflake.
func snowflakeBefore(id string) string {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || n == 0 {
		return ""
	}
	return strconv.FormatUint(n-1, 10)
}

// snowflakeLess compares two Discord ids numerically ("" is smallest).
func snowflakeLess(x, y string) bool {
	if len(x) != len(y) {
		return len(x) < len(y)
	}
	return x < y
}
