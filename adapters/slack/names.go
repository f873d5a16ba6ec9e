package slack

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
)

// Looking up names happens while an event waits for its acknowledgement
// (the decoded text is what is persisted, and Slack wants the ack within
// 3 s), so it is bounded every way: a whole message's lookups run at once
// within namesBudget, a message names at most maxLookups unknown users and
// channels, results are cached (nameTTL, nameMissTTL for ids Slack does not
// know), and after a failure or a 429 no lookup is made for a while
// (namesPause, or Slack's Retry-After). Whatever is not named in time is
// shown by its id.
const (
	namesBudget  = time.Second
	maxLookups   = 8
	nameTTL      = time.Hour
	nameMissTTL  = 10 * time.Minute
	namesPause   = 30 * time.Second
	nameCacheMax = 10000
)

// person is what users.info says about a user (or conversations.info about
// a channel: only name).
type person struct {
	name       string // display name, else real name, else user name
	team       string // the user's own workspace (T…)
	enterprise string // the user's Enterprise Grid org (E…), if any
	found      bool   // false: Slack does not know the id (or it may not be read)
}

// names looks up and caches the names of users and channels. It is safe
// for concurrent use.
type names struct {
	user    func(ctx context.Context, id string) (person, error)
	channel func(ctx context.Context, id string) (person, error)
	now     func() time.Time
	log     zerolog.Logger

	mu     sync.Mutex
	index  map[ref]*list.Element // guarded by mu
	order  *list.List            // of *nameEntry, least recently added first; guarded by mu
	paused time.Time             // no lookups before this; guarded by mu
}

type nameEntry struct {
	ref     ref
	p       person
	expires time.Time
}

func newNames(api *slack.Client, now func() time.Time, log zerolog.Logger) *names {
	return &names{
		now: now, log: log, index: map[ref]*list.Element{}, order: list.New(),
		user: func(ctx context.Context, id string) (person, error) {
			u, err := api.GetUserInfoContext(ctx, id, slack.GetUserInfoOptionIncludeLocale(false))
			if err != nil {
				return person{}, err
			}
			n := u.Profile.DisplayName
			for _, alt := range []string{u.Profile.RealName, u.RealName, u.Name} {
				if n == "" {
					n = alt
				}
			}
			return person{name: n, team: u.TeamID, enterprise: u.Enterprise.EnterpriseID, found: true}, nil
		},
		channel: func(ctx context.Context, id string) (person, error) {
			c, err := api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: id})
			if err != nil {
				return person{}, err
			}
			return person{name: c.Name, found: true}, nil
		},
	}
}

// resolve returns what is known of refs: from the cache, else looked up
// (all at once, within namesBudget and ctx, at most maxLookups of them).
// A ref absent from the result could not be looked up now; one present
// with found false is unknown to Slack.
func (n *names) resolve(ctx context.Context, refs []ref) map[ref]person {
	out := make(map[ref]person, len(refs))
	now := n.now()
	var missing []ref
	n.mu.Lock()
	for _, r := range refs {
		if e, ok := n.index[r]; ok && now.Before(e.Value.(*nameEntry).expires) {
			out[r] = e.Value.(*nameEntry).p
			continue
		}
		if reSlackID().MatchString(r.id) && len(missing) < maxLookups {
			missing = append(missing, r)
		}
	}
	paused := now.Before(n.paused)
	n.mu.Unlock()
	if len(missing) == 0 || paused {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, namesBudget)
	defer cancel()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, r := range missing {
		wg.Go(func() {
			look := n.user
			if r.kind == 'C' {
				look = n.channel
			}
			p, err := look(ctx, r.id)
			if !n.learn(r, p, err) {
				return
			}
			mu.Lock()
			out[r] = p
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// learn caches the outcome of one lookup and reports whether it is an
// answer (a name, or Slack saying it has none to give).
func (n *names) learn(r ref, p person, err error) bool {
	now := n.now()
	ttl := nameTTL
	var (
		rl *slack.RateLimitedError
		se slack.SlackErrorResponse
	)
	switch {
	case err == nil:
	case errors.As(err, &rl):
		n.pause(now.Add(retryAfter(rl)))
		n.log.Warn().Dur("retry_after", rl.RetryAfter).Msg("slack: name lookups rate limited; showing ids meanwhile")
		return false
	case errors.As(err, &se):
		// user_not_found, channel_not_found, missing_scope, …: asking
		// again soon gives the same answer.
		n.log.Debug().Str("error", se.Err).Str("kind", string(r.kind)).Msg("slack: name not looked up")
		p, ttl = person{}, nameMissTTL
	default:
		// A timeout, a network failure or a 5xx: stop asking for a while
		// rather than hold every message's acknowledgement up.
		n.pause(now.Add(namesPause))
		n.log.Debug().Err(err).Msg("slack: name lookup failed; showing ids meanwhile")
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.index[r]; ok {
		n.order.Remove(e)
	}
	n.index[r] = n.order.PushBack(&nameEntry{ref: r, p: p, expires: now.Add(ttl)})
	for n.order.Len() > nameCacheMax {
		old := n.order.Front()
		n.order.Remove(old)
		delete(n.index, old.Value.(*nameEntry).ref)
	}
	return true
}

func (n *names) pause(until time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if until.After(n.paused) {
		n.paused = until
	}
}
